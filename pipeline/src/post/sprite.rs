//! Sprite clean-up: background removal, trimming and fitting to a canvas.

use image::imageops::{self, FilterType};
use image::{ImageBuffer, Rgba, RgbaImage};

/// Makes pixels with alpha below `alpha_floor` fully transparent and zeroes the colour of
/// every fully transparent pixel, so that no stray colour hides behind alpha 0.
pub fn clean_background(image: &RgbaImage, alpha_floor: u8) -> RgbaImage {
    let mut out = image.clone();
    for pixel in out.pixels_mut() {
        if pixel[3] == 0 || pixel[3] < alpha_floor {
            *pixel = Rgba([0; 4]);
        }
    }
    out
}

/// Trims fully transparent borders and centres the content on a transparent `size`×`size`
/// canvas.
///
/// Content that fits is scaled up by the largest whole factor that still fits (nearest
/// neighbour, so pixels stay crisp); larger content is scaled down to fit, keeping its aspect
/// ratio, with a Catmull-Rom filter on premultiplied colour (no dark fringes). A fully
/// transparent image gives a transparent canvas.
pub fn fit(image: &RgbaImage, size: u32) -> RgbaImage {
    let mut canvas = RgbaImage::new(size, size);
    let Some((x, y, width, height)) = content_bounds(image) else {
        return canvas;
    };
    let content = imageops::crop_imm(image, x, y, width, height).to_image();
    let scaled = if width <= size && height <= size {
        upscale_nearest(&content, (size / width).min(size / height))
    } else {
        let scale = f64::from(size) / f64::from(width.max(height));
        let side = |n: u32| ((f64::from(n) * scale).round() as u32).clamp(1, size.max(1));
        resize_premultiplied(&content, side(width), side(height))
    };
    let offset = |n: u32| i64::from(size.saturating_sub(n) / 2);
    imageops::replace(
        &mut canvas,
        &scaled,
        offset(scaled.width()),
        offset(scaled.height()),
    );
    canvas
}

/// Scales `image` up by a whole `factor` with nearest-neighbour sampling: every pixel becomes
/// a `factor`×`factor` block. A factor of 0 gives an empty image.
///
/// # Panics
/// If a side times `factor` overflows `u32`.
pub fn upscale_nearest(image: &RgbaImage, factor: u32) -> RgbaImage {
    RgbaImage::from_fn(image.width() * factor, image.height() * factor, |x, y| {
        *image.get_pixel(x / factor, y / factor)
    })
}

/// Scales `image` down by a whole `factor`: every output pixel is the mean of a
/// `factor`×`factor` block, so a tileable image stays tileable. A factor of 0 gives an empty
/// image.
pub fn downscale_box(image: &RgbaImage, factor: u32) -> RgbaImage {
    let area = u64::from(factor) * u64::from(factor);
    let (width, height) = match factor {
        0 => (0, 0),
        f => (image.width() / f, image.height() / f),
    };
    RgbaImage::from_fn(width, height, |x, y| {
        let mut sum = [0u64; 4];
        for dy in 0..factor {
            for dx in 0..factor {
                let p = image.get_pixel(x * factor + dx, y * factor + dy);
                for (s, c) in sum.iter_mut().zip(p.0) {
                    *s += u64::from(c);
                }
            }
        }
        Rgba(sum.map(|s| ((s + area / 2) / area) as u8))
    })
}

/// The smallest rectangle `(x, y, width, height)` holding every pixel with alpha > 0, if any.
fn content_bounds(image: &RgbaImage) -> Option<(u32, u32, u32, u32)> {
    let mut bounds: Option<(u32, u32, u32, u32)> = None;
    for (x, y, pixel) in image.enumerate_pixels() {
        if pixel[3] > 0 {
            let (x0, y0, x1, y1) = bounds.unwrap_or((x, y, x, y));
            bounds = Some((x0.min(x), y0.min(y), x1.max(x), y1.max(y)));
        }
    }
    bounds.map(|(x0, y0, x1, y1)| (x0, y0, x1 - x0 + 1, y1 - y0 + 1))
}

/// Resizes on premultiplied colour, so transparent pixels' colour does not bleed into edges.
fn resize_premultiplied(image: &RgbaImage, width: u32, height: u32) -> RgbaImage {
    let premultiplied = ImageBuffer::from_fn(image.width(), image.height(), |x, y| {
        let [r, g, b, a] = image.get_pixel(x, y).0.map(|c| f32::from(c) / 255.0);
        Rgba([r * a, g * a, b * a, a])
    });
    let resized: ImageBuffer<Rgba<f32>, Vec<f32>> =
        imageops::resize(&premultiplied, width, height, FilterType::CatmullRom);
    RgbaImage::from_fn(width, height, |x, y| {
        let [r, g, b, a] = resized.get_pixel(x, y).0;
        let a = a.clamp(0.0, 1.0);
        if a * 255.0 < 0.5 {
            return Rgba([0; 4]);
        }
        let straight = |c: f32| ((c / a).clamp(0.0, 1.0) * 255.0).round() as u8;
        Rgba([
            straight(r),
            straight(g),
            straight(b),
            (a * 255.0).round() as u8,
        ])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_downscale_averages_blocks_and_keeps_tiling() {
        let image = RgbaImage::from_fn(4, 4, |x, y| {
            Rgba([if (x + y) % 2 == 0 { 0 } else { 255 }, x as u8 * 10, 7, 255])
        });
        let small = downscale_box(&image, 2);
        assert_eq!(small.dimensions(), (2, 2));
        // Each 2×2 block holds two 0s and two 255s: the mean rounds to 128.
        assert!(
            small
                .pixels()
                .all(|p| p[0] == 128 && p[2] == 7 && p[3] == 255)
        );
        assert_eq!(small.get_pixel(1, 0)[1], 25);
        assert_eq!(downscale_box(&image, 0).dimensions(), (0, 0));
        // A texture that tiles with period 2 downscales to a flat, seamless one.
        let checker = RgbaImage::from_fn(8, 8, |x, y| Rgba([((x + y) % 2 * 255) as u8, 0, 0, 255]));
        assert_eq!(
            crate::post::seam(&downscale_box(&checker, 4)).across_wrap,
            0.0
        );
    }

    fn square(size: u32, x0: u32, y0: u32, side: u32, color: [u8; 4]) -> RgbaImage {
        RgbaImage::from_fn(size, size, |x, y| {
            let inside = (x0..x0 + side).contains(&x) && (y0..y0 + side).contains(&y);
            Rgba(if inside { color } else { [9, 9, 9, 0] })
        })
    }

    #[test]
    fn clean_background_drops_faint_pixels_and_hidden_colour() {
        let image =
            RgbaImage::from_raw(3, 1, vec![10, 20, 30, 5, 1, 2, 3, 0, 4, 5, 6, 200]).expect("3x1");
        let out = clean_background(&image, 16);
        assert_eq!(out.as_raw(), &[0, 0, 0, 0, 0, 0, 0, 0, 4, 5, 6, 200]);
    }

    #[test]
    fn upscale_nearest_repeats_pixels() {
        let image = RgbaImage::from_raw(2, 1, vec![1, 1, 1, 255, 2, 2, 2, 255]).expect("2x1");
        let out = upscale_nearest(&image, 3);
        assert_eq!(out.dimensions(), (6, 3));
        assert_eq!(out.get_pixel(2, 2).0, [1, 1, 1, 255]);
        assert_eq!(out.get_pixel(3, 0).0, [2, 2, 2, 255]);
        assert_eq!(upscale_nearest(&image, 0).dimensions(), (0, 0));
    }

    #[test]
    fn fit_trims_centres_and_scales_by_whole_factor() {
        // A 3x3 red square off-centre in a 16x16 image; fit to 10 → factor 3, 9x9 at (0,0)..
        let out = fit(&square(16, 11, 2, 3, [255, 0, 0, 255]), 10);
        assert_eq!(out.dimensions(), (10, 10));
        let opaque: Vec<(u32, u32)> = out
            .enumerate_pixels()
            .filter(|(_, _, p)| p[3] > 0)
            .map(|(x, y, _)| (x, y))
            .collect();
        assert_eq!(opaque.len(), 81);
        assert_eq!(opaque.first(), Some(&(0, 0)));
        assert_eq!(opaque.last(), Some(&(8, 8)));
        assert!(out.pixels().all(|p| p[3] == 0 || p.0 == [255, 0, 0, 255]));
    }

    #[test]
    fn fit_scales_large_content_down_without_dark_fringes() {
        let out = fit(&square(64, 0, 0, 48, [200, 100, 50, 255]), 16);
        assert_eq!(out.dimensions(), (16, 16));
        for p in out.pixels().filter(|p| p[3] > 0) {
            assert_eq!(&p.0[..3], &[200, 100, 50], "edge colour kept: {p:?}");
        }
        assert!(out.get_pixel(8, 8)[3] == 255);
    }

    #[test]
    fn fit_of_transparent_image_is_transparent_canvas() {
        let out = fit(&RgbaImage::new(8, 8), 12);
        assert_eq!(out.dimensions(), (12, 12));
        assert!(out.pixels().all(|p| p.0 == [0; 4]));
    }
}
