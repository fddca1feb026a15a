//! A1111's `shuffle` (content shuffle, the control image of the shuffle ControlNet,
//! `control_v11e_sd15_shuffle`): the picture's pixels moved by a smooth random flow, so that
//! its colours and textures stay and its layout goes. As `controlnet_aux`'s
//! `ContentShuffleDetector`: each coordinate of the flow is uniform noise on a grid of cells,
//! resized bicubically, cropped and stretched over the whole picture, and the picture is
//! sampled there (bilinear). Its cells are 256 pixels on a picture brought to 512 on its shorter
//! side; here the picture keeps its size and the cells are half its shorter side, which shuffles
//! alike. A1111 draws new noise every time; Autonomy's is seeded, so a recipe makes the same
//! asset on every build.

use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::color::bicubic_map;

/// The seed of the flow's noise.
const SEED: u64 = 0x5_4FF1E;

/// `make_noise_disk`: uniform noise on a grid of `cell`-pixel cells, two more than the picture needs,
/// resized bicubically to the picture plus a cell each side, the middle cropped, and stretched
/// to 0–1; `(h, w)`, row by row.
fn noise_disk(w: u32, h: u32, cell: u32, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let (gw, gh) = (w / cell + 2, h / cell + 2);
    let grid: Vec<f32> = (0..gw * gh).map(|_| rng.random::<f32>()).collect();
    let (bw, bh) = (w + 2 * cell, h + 2 * cell);
    let big = bicubic_map(&grid, (gw, gh), (bw, bh));
    let mut disk: Vec<f32> = (0..h)
        .flat_map(|y| {
            let start = ((y + cell) * bw + cell) as usize;
            big[start..start + w as usize].to_vec()
        })
        .collect();
    let least = disk.iter().copied().fold(f32::INFINITY, f32::min);
    for v in &mut disk {
        *v -= least;
    }
    let most = disk.iter().copied().fold(0.0f32, f32::max).max(1e-5);
    for v in &mut disk {
        *v /= most;
    }
    disk
}

/// `picture` shuffled by the seeded flow, at its size.
pub fn shuffle(picture: &RgbImage) -> RgbImage {
    let (w, h) = picture.dimensions();
    let cell = (w.min(h) / 2).max(1);
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let xs = noise_disk(w, h, cell, &mut rng);
    let ys = noise_disk(w, h, cell, &mut rng);
    let (right, bottom) = ((w - 1) as f32, (h - 1) as f32);
    RgbImage::from_fn(w, h, |x, y| {
        let i = (y * w + x) as usize;
        let (sx, sy) = (xs[i] * right, ys[i] * bottom);
        let (x0, y0) = (sx.floor(), sy.floor());
        let (fx, fy) = (sx - x0, sy - y0);
        let (x0, y0) = (x0 as u32, y0 as u32);
        let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
        let at = |x, y, c| f32::from(picture.get_pixel(x, y)[c]);
        Rgb(std::array::from_fn(|c| {
            let top = at(x0, y0, c) * (1.0 - fx) + at(x1, y0, c) * fx;
            let low = at(x0, y1, c) * (1.0 - fx) + at(x1, y1, c) * fx;
            (top * (1.0 - fy) + low * fy).round().clamp(0.0, 255.0) as u8
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gradient (each pixel's red its column) shuffled: the same every time, its values
    /// from the whole gradient, moved smoothly (neighbours come from nearby columns), and not
    /// where they were.
    #[test]
    fn a_shuffle_moves_pixels_smoothly_and_repeats() {
        let gradient = RgbImage::from_fn(200, 120, |x, y| Rgb([x as u8, y as u8, 0]));
        let shuffled = shuffle(&gradient);
        assert_eq!(shuffled, shuffle(&gradient));
        assert_eq!(shuffled.dimensions(), (200, 120));
        let reds: Vec<u8> = shuffled.pixels().map(|p| p[0]).collect();
        assert!(*reds.iter().min().unwrap() <= 2 && *reds.iter().max().unwrap() >= 197);
        let jumps = (0..120)
            .flat_map(|y| (1..200).map(move |x| (x, y)))
            .filter(|&(x, y)| {
                shuffled.get_pixel(x, y)[0].abs_diff(shuffled.get_pixel(x - 1, y)[0]) > 6
            })
            .count();
        assert_eq!(jumps, 0, "the flow is smooth");
        let moved = shuffled
            .enumerate_pixels()
            .filter(|(x, _, p)| p[0].abs_diff(*x as u8) > 20)
            .count();
        assert!(moved > 200 * 120 / 2, "{moved} pixels moved");
        let flat = RgbImage::from_pixel(40, 30, Rgb([10, 200, 30]));
        assert_eq!(shuffle(&flat), flat);
    }
}
