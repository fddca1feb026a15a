//! The upscales of the hires pass (see [`crate::generator::Hires`]): of the latents,
//! bilinearly, as PyTorch's `interpolate(mode="bilinear", align_corners=False)` that A1111's
//! "Latent" upscaler calls, except that a tileable image's latents wrap around instead of
//! stopping at the edges; or of the pixels, by Lanczos or an upscaling model, as A1111's other
//! upscalers do.
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
use image::RgbImage;

use super::SdError;
use super::lanczos;
use super::upscaler::Upscaler;

/// Images `(n, 3, h, w)` in [0, 1] scaled to `side × side` as A1111's pixel upscalers scale
/// them: rounded to 8 bits, through `model` (when given) until at least `side` wide — at most
/// three times, once for a 1× network, each output rounded to 8 bits — then resized with
/// Lanczos to exactly `side`
/// ([`lanczos::resize`], wrapping for a tileable image, as the model's tiles do).
pub fn upscale_pixels(
    pixels: &Tensor,
    side: usize,
    model: Option<&Upscaler>,
    wrap: bool,
) -> Result<Tensor, SdError> {
    let (n, _, _, _) = pixels.dims4()?;
    let device = pixels.device();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut image = to_rgb8(&pixels.get(i)?)?;
        if let Some(model) = model {
            for _ in 0..3 {
                if image.width() as usize >= side {
                    break;
                }
                let input = from_rgb8(&image, device)?.unsqueeze(0)?;
                let larger = to_rgb8(&model.upscale(&input, wrap)?.get(0)?)?;
                // A 1× network (a restoration) runs once, its image kept, as A1111 keeps it.
                let same = larger.dimensions() == image.dimensions();
                image = larger;
                if same {
                    break;
                }
            }
        }
        let resized = lanczos::resize(&image, side as u32, side as u32, wrap);
        out.push(from_rgb8(&resized, device)?);
    }
    Ok(Tensor::stack(&out, 0)?)
}

/// `(3, h, w)` in [0, 1] as an 8-bit image, rounded.
fn to_rgb8(pixels: &Tensor) -> Result<RgbImage, SdError> {
    let (_, h, w) = pixels.dims3()?;
    let bytes = (pixels.to_dtype(DType::F32)?.clamp(0f32, 1f32)? * 255.0)?
        .round()?
        .permute((1, 2, 0))?
        .flatten_all()?
        .to_vec1::<f32>()?
        .into_iter()
        .map(|v| v as u8)
        .collect();
    RgbImage::from_raw(w as u32, h as u32, bytes).ok_or_else(|| {
        SdError::BadRequest(format!("a {w}×{h} image has the wrong number of pixels"))
    })
}

/// An 8-bit image as `(3, h, w)` f32 in [0, 1] on `device`.
fn from_rgb8(image: &RgbImage, device: &candle_core::Device) -> Result<Tensor, SdError> {
    let (w, h) = image.dimensions();
    let values: Vec<f32> = image
        .as_raw()
        .iter()
        .map(|&v| f32::from(v) / 255.0)
        .collect();
    Ok(
        Tensor::from_vec(values, (h as usize, w as usize, 3), device)?
            .permute((2, 0, 1))?
            .contiguous()?,
    )
}

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
    fn pixels_scale_up_by_lanczos_and_wrap_across_a_tileable_images_edges() {
        // A bright first column: wrapped, the last columns of the larger image see it too.
        let side = 16;
        let values: Vec<f32> = (0..3 * side * side)
            .map(|i| if i % side == 0 { 1.0 } else { 0.0 })
            .collect();
        let pixels = Tensor::from_vec(values, (1, 3, side, side), &Device::Cpu).unwrap();
        let right_edge = |wrap: bool| -> f32 {
            let up = upscale_pixels(&pixels, 40, None, wrap).unwrap();
            assert_eq!(up.dims(), [1, 3, 40, 40]);
            up.narrow(3, 39, 1)
                .unwrap()
                .mean_all()
                .unwrap()
                .to_scalar()
                .unwrap()
        };
        assert!(right_edge(true) > 0.05, "{}", right_edge(true));
        assert!(right_edge(false) < 0.01, "{}", right_edge(false));
        // 8-bit in, 8-bit out: values land on multiples of 1/255.
        let up = upscale_pixels(&pixels, 40, None, false).unwrap();
        assert!(
            flat(&up)
                .iter()
                .all(|v| ((v * 255.0) - (v * 255.0).round()).abs() < 1e-4)
        );
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
