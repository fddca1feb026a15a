//! Conversions between RGBA images and the model's tensors, and the seeded noise it starts from.
//!
//! The model sees premultiplied RGBA in [-1, 1]: a transparent pixel is all −1 whatever its
//! stored colour, so invisible colour never has to be learned.

use candle_core::{Device, Result, Tensor};
use image::RgbaImage;

/// Alpha below this (out of 255) becomes fully transparent: the model's near-zero noise in
/// the background must not leave a faint haze around a sprite.
const ALPHA_FLOOR: u8 = 10;

/// Premultiplied RGBA values in [-1, 1], channel-major (`4 × h × w`).
pub fn to_values(image: &RgbaImage) -> Vec<f32> {
    let (w, h) = image.dimensions();
    let n = (w * h) as usize;
    let mut out = vec![0f32; 4 * n];
    for (i, p) in image.pixels().enumerate() {
        let a = p[3] as f32 / 255.0;
        for c in 0..3 {
            out[c * n + i] = (p[c] as f32 / 255.0) * a * 2.0 - 1.0;
        }
        out[3 * n + i] = a * 2.0 - 1.0;
    }
    out
}

/// A batch of images (all the same size) as a `(batch, 4, h, w)` tensor.
pub fn to_tensor(images: &[&RgbaImage], device: &Device) -> Result<Tensor> {
    let (w, h) = images.first().map(|i| i.dimensions()).unwrap_or((0, 0));
    let values: Vec<f32> = images.iter().flat_map(|i| to_values(i)).collect();
    Tensor::from_vec(values, (images.len(), 4, h as usize, w as usize), device)
}

/// A `(batch, 4, h, w)` tensor back to straight-alpha RGBA images.
pub fn from_tensor(x: &Tensor) -> Result<Vec<RgbaImage>> {
    let (batch, _, h, w) = x.dims4()?;
    let values = x.clamp(-1f32, 1f32)?.flatten_all()?.to_vec1::<f32>()?;
    let n = h * w;
    Ok((0..batch)
        .map(|b| {
            let v = &values[b * 4 * n..(b + 1) * 4 * n];
            RgbaImage::from_fn(w as u32, h as u32, |x, y| {
                let i = y as usize * w + x as usize;
                let a = (v[3 * n + i] + 1.0) / 2.0;
                let alpha = (a * 255.0).round() as u8;
                if alpha < ALPHA_FLOOR {
                    return image::Rgba([0, 0, 0, 0]);
                }
                let channel = |c: usize| {
                    let premultiplied = (v[c * n + i] + 1.0) / 2.0;
                    ((premultiplied / a).clamp(0.0, 1.0) * 255.0).round() as u8
                };
                image::Rgba([channel(0), channel(1), channel(2), alpha])
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_opaque_and_clears_transparent_pixels() {
        let mut img = RgbaImage::new(2, 1);
        img.put_pixel(0, 0, image::Rgba([200, 100, 50, 255]));
        img.put_pixel(1, 0, image::Rgba([9, 9, 9, 0]));
        let t = to_tensor(&[&img], &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[1, 4, 1, 2]);
        let back = &from_tensor(&t).unwrap()[0];
        assert_eq!(back.get_pixel(0, 0).0, [200, 100, 50, 255]);
        assert_eq!(back.get_pixel(1, 0).0, [0, 0, 0, 0]);
    }

    #[test]
    fn half_transparent_colour_survives_premultiplication() {
        let mut img = RgbaImage::new(1, 1);
        img.put_pixel(0, 0, image::Rgba([255, 0, 0, 128]));
        let back = &from_tensor(&to_tensor(&[&img], &Device::Cpu).unwrap()).unwrap()[0];
        let p = back.get_pixel(0, 0).0;
        assert_eq!((p[0], p[1], p[3]), (255, 0, 128));
    }
}
