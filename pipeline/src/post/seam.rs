//! Seam measurement for tileable textures.

use image::{Rgba, RgbaImage};

/// How different a texture's wrap-around neighbours are compared with its inner neighbours.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeamReport {
    /// Mean absolute RGBA difference (0–255) between the last and first column and between the
    /// last and first row: the neighbours that meet when the texture is tiled.
    pub across_wrap: f64,
    /// Mean absolute RGBA difference (0–255) between adjacent columns and adjacent rows inside
    /// the image.
    pub inside: f64,
}

impl SeamReport {
    /// `across_wrap / inside` (with `inside` at least 1e-9): about 1 for a tileable texture,
    /// much larger where tiling shows a seam.
    pub fn ratio(&self) -> f64 {
        self.across_wrap / self.inside.max(1e-9)
    }
}

/// Measures the seam `image` would show when tiled. An empty image reports zeros.
pub fn seam(image: &RgbaImage) -> SeamReport {
    let (width, height) = image.dimensions();
    let mut across_wrap = Mean::default();
    let mut inside = Mean::default();
    for y in 0..height {
        for x in 0..width {
            let pixel = image.get_pixel(x, y);
            let right = image.get_pixel((x + 1) % width, y);
            let below = image.get_pixel(x, (y + 1) % height);
            let horizontal = if x + 1 == width {
                &mut across_wrap
            } else {
                &mut inside
            };
            horizontal.add(pixel, right);
            let vertical = if y + 1 == height {
                &mut across_wrap
            } else {
                &mut inside
            };
            vertical.add(pixel, below);
        }
    }
    SeamReport {
        across_wrap: across_wrap.value(),
        inside: inside.value(),
    }
}

/// Running mean of absolute channel differences.
#[derive(Default)]
struct Mean {
    sum: u64,
    count: u64,
}

impl Mean {
    fn add(&mut self, a: &Rgba<u8>, b: &Rgba<u8>) {
        self.sum +=
            a.0.iter()
                .zip(b.0)
                .map(|(&p, q)| u64::from(p.abs_diff(q)))
                .sum::<u64>();
        self.count += 4;
    }

    fn value(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::TAU;

    #[test]
    fn periodic_pattern_has_no_seam() {
        // Diagonal waves whose periods divide the size: every row and column sees all phases.
        let image = RgbaImage::from_fn(32, 32, |x, y| {
            let wave = |fx: f64, fy: f64| {
                let phase = TAU * (fx * f64::from(x) + fy * f64::from(y)) / 32.0;
                (127.5 + 100.0 * phase.sin()) as u8
            };
            Rgba([wave(2.0, 3.0), wave(1.0, -2.0), wave(3.0, 1.0), 255])
        });
        let report = seam(&image);
        assert!(report.ratio() < 1.2, "{report:?}");
        assert!(report.inside > 1.0, "{report:?}");
    }

    #[test]
    fn gradient_has_a_seam() {
        let image = RgbaImage::from_fn(32, 32, |x, _| {
            let v = (x * 255 / 31) as u8;
            Rgba([v, v, v, 255])
        });
        let report = seam(&image);
        assert!(report.ratio() > 5.0, "{report:?}");
    }

    #[test]
    fn flat_and_empty_images_report_zero() {
        let flat = RgbaImage::from_pixel(4, 4, Rgba([9, 9, 9, 255]));
        assert_eq!(seam(&flat).across_wrap, 0.0);
        assert_eq!(seam(&flat).ratio(), 0.0);
        assert_eq!(seam(&RgbaImage::new(0, 0)).inside, 0.0);
    }
}
