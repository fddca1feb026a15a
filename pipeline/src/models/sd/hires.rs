//! The latent upscale of the hires pass (see [`crate::generator::Hires`]): bilinear, as
//! PyTorch's `interpolate(mode="bilinear", align_corners=False)` that A1111's "Latent" upscaler
//! calls, except that a tileable image's latents wrap around instead of stopping at the edges.
//!
//! ```
//! use autonomy_pipeline::models::sd::hires::upscale_latents;
//! let latents = candle_core::Tensor::arange(0f32, 4.0, &candle_core::Device::Cpu)?
//!     .reshape((1, 1, 2, 2))?;
//! let up = upscale_latents(&latents, 4, false)?;
//! assert_eq!(
//!     up.flatten_all()?.to_vec1::<f32>()?[..4],
//!     [0.0, 0.25, 0.75, 1.0]
//! );
//! # Ok::<(), candle_core::Error>(())
//! ```

use candle_core::{DType, Tensor};

/// `latents` `(n, c, h, w)` scaled to `(n, c, side·h/w…)`: a square `side × side` grid,
/// bilinearly; `wrap` reads across the edges (a tileable image), else the edges are held.
pub fn upscale_latents(latents: &Tensor, side: usize, wrap: bool) -> candle_core::Result<Tensor> {
    let (n, c, h, w) = latents.dims4()?;
    if h == 0 || w == 0 || side == 0 {
        candle_core::bail!("cannot scale {h}×{w} latents to {side}×{side}");
    }
    let dtype = latents.dtype();
    let values = latents
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let rows = taps(h, side, wrap);
    let columns = taps(w, side, wrap);
    let mut out = Vec::with_capacity(n * c * side * side);
    for plane in values.chunks_exact(h * w) {
        for &(y0, y1, fy) in &rows {
            for &(x0, x1, fx) in &columns {
                let at = |y: usize, x: usize| plane[y * w + x];
                let top = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx;
                let bottom = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx;
                out.push(top * (1.0 - fy) + bottom * fy);
            }
        }
    }
    Tensor::from_vec(out, (n, c, side, side), latents.device())?.to_dtype(dtype)
}

/// For each of `to` outputs, the two inputs of `from` it mixes and the second's weight.
fn taps(from: usize, to: usize, wrap: bool) -> Vec<(usize, usize, f32)> {
    let scale = from as f32 / to as f32;
    (0..to)
        .map(|o| {
            let source = (o as f32 + 0.5) * scale - 0.5;
            if wrap {
                let floor = source.floor();
                let first = (floor as isize).rem_euclid(from as isize) as usize;
                (first, (first + 1) % from, source - floor)
            } else {
                let source = source.max(0.0);
                let first = (source as usize).min(from - 1);
                (first, (first + 1).min(from - 1), source - first as f32)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn grid(values: &[f32], side: usize) -> Tensor {
        Tensor::from_vec(values.to_vec(), (1, 1, side, side), &Device::Cpu).unwrap()
    }

    fn flat(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn doubling_mixes_a_quarter_and_three_quarters_and_holds_the_edges() {
        // PyTorch: interpolate([[0, 1], [2, 3]], size=4, mode="bilinear").
        let up = upscale_latents(&grid(&[0.0, 1.0, 2.0, 3.0], 2), 4, false).unwrap();
        let expected = [
            0.0, 0.25, 0.75, 1.0, 0.5, 0.75, 1.25, 1.5, 1.5, 1.75, 2.25, 2.5, 2.0, 2.25, 2.75, 3.0,
        ];
        assert_eq!(flat(&up), expected);
        // A uniform grid stays uniform, at any scale.
        let up = upscale_latents(&grid(&[0.5; 9], 3), 7, false).unwrap();
        assert!(flat(&up).iter().all(|&v| (v - 0.5).abs() < 1e-6));
    }

    #[test]
    fn an_empty_grid_is_an_error() {
        let empty = Tensor::zeros((1, 4, 0, 0), DType::F32, &Device::Cpu).unwrap();
        assert!(upscale_latents(&empty, 8, false).is_err());
        assert!(upscale_latents(&grid(&[1.0], 1), 0, true).is_err());
    }

    #[test]
    fn wrapping_keeps_a_tileable_grid_tileable() {
        let values: Vec<f32> = (0..16).map(|i| ((i * 7) % 5) as f32).collect();
        let up = upscale_latents(&grid(&values, 4), 8, true).unwrap();
        let out = flat(&up);
        // Output 0 sits a quarter latent before input 0 both ways: it mixes in the far edges.
        let corner = 0.25 * (0.25 * values[15] + 0.75 * values[12])
            + 0.75 * (0.25 * values[3] + 0.75 * values[0]);
        assert!((out[0] - corner).abs() < 1e-5, "{} vs {corner}", out[0]);
        // Rolling the input by one latent rolls the output by two pixels.
        let rolled: Vec<f32> = (0..16)
            .map(|i| values[(i / 4) * 4 + (i % 4 + 3) % 4])
            .collect();
        let up_rolled = flat(&upscale_latents(&grid(&rolled, 4), 8, true).unwrap());
        for y in 0..8 {
            for x in 0..8 {
                let a = up_rolled[y * 8 + x];
                let b = out[y * 8 + (x + 6) % 8];
                assert!((a - b).abs() < 1e-5, "({y}, {x}): {a} vs {b}");
            }
        }
    }
}
