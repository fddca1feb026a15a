//! Maps derived from an albedo: height, normal, roughness, ambient occlusion and the packed
//! occlusion-roughness-metallic texture.
//!
//! Every neighbourhood lookup wraps around the edges, so the maps of a tileable albedo tile
//! exactly like the albedo does.

use image::RgbaImage;
use rayon::prelude::*;

/// The normal-map strength [`write_material`](super::write_material) uses.
pub const NORMAL_STRENGTH: f32 = 8.0;

/// A scalar field over an image, sampled with wrap-around.
struct Field {
    w: usize,
    h: usize,
    v: Vec<f32>,
}

impl Field {
    /// Builds a `w`×`h` field from `f(x, y)`, rows in parallel.
    fn from_fn(w: usize, h: usize, f: impl Fn(usize, usize) -> f32 + Sync) -> Self {
        let mut v = vec![0.0; w * h];
        v.par_chunks_mut(w.max(1)).enumerate().for_each(|(y, row)| {
            for (x, out) in row.iter_mut().enumerate() {
                *out = f(x, y);
            }
        });
        Self { w, h, v }
    }

    /// The value at `(x + dx, y + dy)`, wrapping around the edges.
    fn at(&self, x: usize, y: usize, dx: isize, dy: isize) -> f32 {
        let x = (x as isize + dx).rem_euclid(self.w as isize) as usize;
        let y = (y as isize + dy).rem_euclid(self.h as isize) as usize;
        self.v[y * self.w + x]
    }

    /// The mean over the `(2r+1)²` window around each value (a separable box filter).
    fn box_blur(&self, r: isize) -> Self {
        let n = (2 * r + 1) as f32;
        let rows = Self::from_fn(self.w, self.h, |x, y| {
            (-r..=r).map(|d| self.at(x, y, d, 0)).sum::<f32>() / n
        });
        Self::from_fn(self.w, self.h, |x, y| {
            (-r..=r).map(|d| rows.at(x, y, 0, d)).sum::<f32>() / n
        })
    }

    /// Maps every value through `f`.
    fn map(&self, f: impl Fn(f32) -> f32 + Sync) -> Self {
        Self::from_fn(self.w, self.h, |x, y| f(self.v[y * self.w + x]))
    }
}

/// Builds an image from `f(x, y)`, rows in parallel.
fn image_from_fn(w: u32, h: u32, f: impl Fn(usize, usize) -> [u8; 4] + Sync) -> RgbaImage {
    let mut image = RgbaImage::new(w, h);
    image
        .par_chunks_mut((w as usize * 4).max(1))
        .enumerate()
        .for_each(|(y, row)| {
            for (x, px) in row.chunks_exact_mut(4).enumerate() {
                px.copy_from_slice(&f(x, y));
            }
        });
    image
}

/// A greyscale image from values in 0..1.
fn grey(field: &Field) -> RgbaImage {
    image_from_fn(field.w as u32, field.h as u32, |x, y| {
        let v = unorm(field.v[y * field.w + x]);
        [v, v, v, 255]
    })
}

/// 0..1 → 0..255, rounded and clamped.
fn unorm(v: f32) -> u8 {
    (v * 255.0).round().clamp(0.0, 255.0) as u8
}

/// Rec. 709 luma of the (gamma-encoded) colour, 0..1; alpha is ignored.
fn luminance(albedo: &RgbaImage) -> Field {
    let (w, h) = albedo.dimensions();
    Field::from_fn(w as usize, h as usize, |x, y| {
        let [r, g, b, _] = albedo.get_pixel(x as u32, y as u32).0;
        (0.2126 * f32::from(r) + 0.7152 * f32::from(g) + 0.0722 * f32::from(b)) / 255.0
    })
}

/// Luminance lightly blurred (3×3 box), so single-pixel noise does not read as relief.
fn height_field(albedo: &RgbaImage) -> Field {
    luminance(albedo).box_blur(1)
}

/// A height map in 0..1, row-major: bright is high, dark is low (mortar, cracks, pores).
///
/// It is the albedo's luminance under a 3×3 box blur that wraps around the edges.
pub fn height(albedo: &RgbaImage) -> Vec<f32> {
    height_field(albedo).v
}

/// A tangent-space normal map in the glTF (OpenGL) convention: +X right, +Y up, +Z out of the
/// surface, each component stored as `n * 0.5 + 0.5`; alpha is opaque.
///
/// Slopes are Sobel gradients of [`height`], sampled with wrap-around so the map tiles.
/// `strength` scales them: at 1.0 a height step of 1 per pixel is a 45° slope; higher is
/// bumpier ([`NORMAL_STRENGTH`] suits 128-pixel materials), negative inverts the relief.
pub fn normal_map(albedo: &RgbaImage, strength: f32) -> RgbaImage {
    let height = height_field(albedo);
    image_from_fn(albedo.width(), albedo.height(), |x, y| {
        let s = |i, j| height.at(x, y, i, j);
        // Sobel: the height change per pixel to the right (dx) and downwards (dy), from
        // central differences across the 3×3 window, the middle one weighted twice.
        let horizontal = |d| s(1, d) - s(-1, d);
        let vertical = |d| s(d, 1) - s(d, -1);
        let dx = (horizontal(-1) + 2.0 * horizontal(0) + horizontal(1)) / 8.0;
        let dy = (vertical(-1) + 2.0 * vertical(0) + vertical(1)) / 8.0;
        // Image rows grow downwards while tangent-space +Y is up, hence the sign of y.
        let n = [-strength * dx, strength * dy, 1.0];
        let len = n.iter().map(|c| c * c).sum::<f32>().sqrt();
        let [r, g, b] = n.map(|c| unorm(c / len * 0.5 + 0.5));
        [r, g, b, 255]
    })
}

/// A greyscale roughness map (0 = mirror, 255 = fully rough).
///
/// Heuristic: dark and busy areas are rough, bright and even areas are smoother:
/// `0.4 + 0.4 · (1 − local mean luminance) + 2 · local contrast`, clamped to 0..1, where the
/// mean and the contrast (standard deviation) are taken over the 3×3 neighbourhood, wrapping.
pub fn roughness_map(albedo: &RgbaImage) -> RgbaImage {
    let lum = luminance(albedo);
    let mean = lum.box_blur(1);
    let mean_sq = lum.map(|l| l * l).box_blur(1);
    let roughness = Field::from_fn(lum.w, lum.h, |x, y| {
        let (m, m2) = (mean.v[y * lum.w + x], mean_sq.v[y * lum.w + x]);
        let contrast = (m2 - m * m).max(0.0).sqrt();
        (0.4 + 0.4 * (1.0 - m) + 2.0 * contrast).clamp(0.0, 1.0)
    });
    grey(&roughness)
}

/// A greyscale cavity-style ambient-occlusion map (255 = unoccluded).
///
/// A point lower than the mean [`height`] of its surroundings (a window of 1/16 of the image
/// side, wrapping) is darkened in proportion to the depth; points level with or above their
/// surroundings stay at 255.
pub fn ao_map(albedo: &RgbaImage) -> RgbaImage {
    let height = height_field(albedo);
    let radius = (height.w.min(height.h) / 32).max(1) as isize;
    let surroundings = height.box_blur(radius);
    let ao = Field::from_fn(height.w, height.h, |x, y| {
        let i = y * height.w + x;
        1.0 - 3.0 * (surroundings.v[i] - height.v[i]).max(0.0)
    });
    grey(&ao)
}

/// Packs occlusion (R, from `ao`'s red channel, or 255 without one), roughness (G, from
/// `roughness`'s red channel) and metalness (B, always 0: a dielectric) into one texture,
/// which glTF reads both as `occlusionTexture` and as `metallicRoughnessTexture`.
///
/// The result has `roughness`'s size; an `ao` of another size is sampled nearest-neighbour.
pub fn occlusion_roughness_metallic(ao: Option<&RgbaImage>, roughness: &RgbaImage) -> RgbaImage {
    let (w, h) = roughness.dimensions();
    image_from_fn(w, h, |x, y| {
        let (x, y) = (x as u32, y as u32);
        let occlusion = ao.map_or(255, |ao| {
            let (ax, ay) = (x * ao.width() / w, y * ao.height() / h);
            ao.get_pixel_checked(ax, ay).map_or(255, |p| p[0])
        });
        [occlusion, roughness.get_pixel(x, y)[0], 0, 255]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgba;

    const N: u32 = 64;

    /// A tileable pattern with detail at several scales.
    fn pattern() -> RgbaImage {
        let tau = std::f32::consts::TAU / N as f32;
        RgbaImage::from_fn(N, N, |x, y| {
            let (x, y) = (x as f32 * tau, y as f32 * tau);
            let v =
                0.5 + 0.25 * (2.0 * x).sin() * (3.0 * y).cos() + 0.2 * (7.0 * x + 5.0 * y).sin();
            let v = unorm(v);
            Rgba([v, v / 2, 255 - v, 255])
        })
    }

    /// Shifts an image by `(dx, dy)`, wrapping around.
    fn roll(image: &RgbaImage, dx: u32, dy: u32) -> RgbaImage {
        let (w, h) = image.dimensions();
        RgbaImage::from_fn(w, h, |x, y| {
            *image.get_pixel((x + w - dx) % w, (y + h - dy) % h)
        })
    }

    #[test]
    fn a_flat_albedo_has_a_flat_normal_map() {
        let flat = RgbaImage::from_pixel(N, N, Rgba([90, 140, 60, 255]));
        let normal = normal_map(&flat, NORMAL_STRENGTH);
        assert!(normal.pixels().all(|p| p.0 == [128, 128, 255, 255]));
        assert!(ao_map(&flat).pixels().all(|p| p.0 == [255, 255, 255, 255]));
    }

    #[test]
    fn normals_tilt_away_from_rising_ground() {
        // Luminance rising by 3/255 per pixel at strength 255/3 is a 45° slope.
        let ramp = |f: fn(u32, u32) -> u32| {
            let image = RgbaImage::from_fn(N, N, |x, y| {
                let v = (f(x, y) * 3) as u8;
                Rgba([v, v, v, 255])
            });
            normal_map(&image, 85.0).get_pixel(N / 2, N / 2).0
        };
        // Higher downwards: the slope faces up the image, +Y in tangent space.
        assert_eq!(ramp(|_, y| y), [128, 218, 218, 255]);
        // Higher to the right: the slope faces left, −X.
        assert_eq!(ramp(|x, _| x), [37, 128, 218, 255]);
    }

    #[test]
    fn maps_tile_like_the_albedo() {
        let albedo = pattern();
        let maps = |a: &RgbaImage| {
            let roughness = roughness_map(a);
            let ao = ao_map(a);
            let orm = occlusion_roughness_metallic(Some(&ao), &roughness);
            [normal_map(a, NORMAL_STRENGTH), roughness, ao, orm]
        };
        // Exact: the maps of a shifted albedo are the shifted maps, so no edge is special.
        let shifted = maps(&roll(&albedo, 17, 40));
        for (map, shifted) in maps(&albedo).iter().zip(&shifted) {
            assert_eq!(&roll(map, 17, 40), shifted);
        }
        // And the seam of the normal map is no rougher than its inside.
        let normal = normal_map(&albedo, NORMAL_STRENGTH);
        let step = |a: u32, b: u32| -> f32 {
            (0..N)
                .map(|y| {
                    let (p, q) = (normal.get_pixel(a, y), normal.get_pixel(b, y));
                    (0..3).map(|c| f32::from(p[c].abs_diff(q[c]))).sum::<f32>()
                })
                .sum()
        };
        let inside = (1..N - 1).map(|x| step(x - 1, x)).sum::<f32>() / (N - 2) as f32;
        assert!(
            step(N - 1, 0) < 2.0 * inside,
            "{} vs {inside}",
            step(N - 1, 0)
        );
    }

    #[test]
    fn maps_keep_the_albedo_size() {
        let albedo = RgbaImage::from_pixel(48, 32, Rgba([1, 2, 3, 4]));
        assert_eq!(height(&albedo).len(), 48 * 32);
        for map in [
            normal_map(&albedo, 1.0),
            roughness_map(&albedo),
            ao_map(&albedo),
        ] {
            assert_eq!(map.dimensions(), (48, 32));
        }
        let empty = RgbaImage::new(0, 0);
        assert!(height(&empty).is_empty());
        assert_eq!(normal_map(&empty, 1.0).dimensions(), (0, 0));
    }

    #[test]
    fn orm_packs_occlusion_roughness_and_no_metal() {
        let albedo = pattern();
        let (ao, roughness) = (ao_map(&albedo), roughness_map(&albedo));
        let orm = occlusion_roughness_metallic(Some(&ao), &roughness);
        for (x, y, p) in orm.enumerate_pixels() {
            let (a, r) = (ao.get_pixel(x, y)[0], roughness.get_pixel(x, y)[0]);
            assert_eq!(p.0, [a, r, 0, 255]);
        }
        let orm = occlusion_roughness_metallic(None, &roughness);
        assert!(orm.pixels().all(|p| p[0] == 255 && p[2] == 0));
        // An occlusion map of another size is scaled to the roughness map's.
        let half = RgbaImage::from_fn(N / 2, N / 2, |x, _| Rgba([x as u8, 0, 0, 255]));
        let orm = occlusion_roughness_metallic(Some(&half), &roughness);
        assert_eq!(orm.get_pixel(N - 1, 0)[0], (N / 2 - 1) as u8);
    }
}
