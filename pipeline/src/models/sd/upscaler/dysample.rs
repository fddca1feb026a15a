//! DySample (Liu et al. 2023, "Learning to Upsample by Learning to Sample"), the upsampler
//! of RealPLKSR's DySample releases as spandrel runs it: each output pixel samples the
//! features bilinearly (clamped at the border) at its place in the input plus an offset that
//! two 1×1 convolutions predict from the features, one offset per group of channels, then a
//! 1×1 convolution mixes the sampled channels into the image.

use candle_core::{D, DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::super::kernels::Conv2d;
use super::compact::pixel_shuffle;

/// DySample, its weights under `vb`'s `offset`, `scope`, `init_pos` and `end_conv`.
pub struct DySample {
    scale: usize,
    groups: usize,
    offset: Conv2d,
    scope: Conv2d,
    /// Where each output pixel of a group samples before the offsets `(1, 2·groups·scale², 1, 1)`.
    initial: Tensor,
    end: Option<Conv2d>,
}

impl DySample {
    /// Reads the upsampler of `channels` feature channels into `out` image channels, `scale`
    /// times larger, sampling in `groups` groups (the end convolution is there unless `scale`
    /// is 1).
    pub fn new(
        vb: VarBuilder,
        channels: usize,
        out: usize,
        scale: usize,
        groups: usize,
    ) -> Result<Self> {
        let offsets = 2 * groups * scale * scale;
        Ok(Self {
            scale,
            groups,
            offset: Conv2d::new(vb.pp("offset"), channels, offsets, 1, 1, 0)?,
            scope: Conv2d::without_bias(vb.pp("scope"), channels, offsets, 1, 1, 0)?,
            initial: vb.get((1, offsets, 1, 1), "init_pos")?,
            end: (scale != 1)
                .then(|| Conv2d::new(vb.pp("end_conv"), channels, out, 1, 1, 0))
                .transpose()?,
        })
    }

    /// `xs` `(n, channels, h, w)` to `(n, out, h·scale, w·scale)`.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = xs.dims4()?;
        let (s, g) = (self.scale, self.groups);
        let gate = candle_nn::ops::sigmoid(&self.scope.forward(xs)?)?;
        let offsets = ((self.offset.forward(xs)? * gate)? * 0.5)?
            .broadcast_add(&self.initial.to_dtype(xs.dtype())?)?;
        // Where each output pixel samples, in input pixels (the centre of pixel (y, x) is at
        // (y, x)): its input pixel plus its offset, laid out as the output by a pixel shuffle.
        // The arithmetic is the reference's, step for step (a pixel's centre plus its offset,
        // to [-1, 1], back to pixels as `grid_sample` takes it, clamped to the border), so
        // that the samples land where its do to the last bit.
        let along = |axis: usize, length: usize, shape: (usize, usize, usize, usize)| {
            let offsets = offsets.narrow(1, axis * g * s * s, g * s * s)?;
            let centres = (Tensor::arange(0u32, length as u32, xs.device())?
                .to_dtype(xs.dtype())?
                .reshape(shape)?
                + 0.5)?;
            let size = Tensor::new(&[length as f32], xs.device())?.to_dtype(xs.dtype())?;
            let unit = ((offsets.broadcast_add(&centres)? * 2.0)?.broadcast_div(&size)? - 1.0)?;
            let pixels = ((pixel_shuffle(&unit, s)? + 1.0)?.broadcast_mul(&size)? - 1.0)?;
            (pixels * 0.5)?
                .clamp(0f32, (length - 1) as f32)?
                .reshape((n * g, 1, h * s * w * s))
        };
        let x = along(0, w, (1, 1, 1, w))?;
        let y = along(1, h, (1, 1, h, 1))?;
        let (x0, y0) = (x.floor()?, y.floor()?);
        let (fx, fy) = ((&x - &x0)?, (&y - &y0)?);
        let x1 = (&x0 + 1.0)?.minimum((w - 1) as f64)?;
        let y1 = (&y0 + 1.0)?.minimum((h - 1) as f64)?;
        let features = xs.reshape((n * g, c / g, h * w))?;
        let shape = (n * g, c / g, h * s * w * s);
        let at = |y: &Tensor, x: &Tensor| -> Result<Tensor> {
            let index = ((y * w as f64)? + x)?
                .to_dtype(DType::U32)?
                .broadcast_as(shape)?
                .contiguous()?;
            features.gather(&index, D::Minus1)
        };
        let (gx, gy) = ((1.0 - &fx)?, (1.0 - &fy)?);
        let top = (at(&y0, &x0)?.broadcast_mul(&gx)? + at(&y0, &x1)?.broadcast_mul(&fx)?)?;
        let bottom = (at(&y1, &x0)?.broadcast_mul(&gx)? + at(&y1, &x1)?.broadcast_mul(&fx)?)?;
        let sampled = (top.broadcast_mul(&gy)? + bottom.broadcast_mul(&fy)?)?.reshape((
            n,
            c,
            h * s,
            w * s,
        ))?;
        match &self.end {
            Some(end) => end.forward(&sampled),
            None => Ok(sampled),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::max_abs_diff;
    use super::*;
    use candle_core::Device;
    use std::collections::HashMap;

    /// A DySample of `channels` channels whose offsets are all `shift` (zero convolutions,
    /// `init_pos` set to it) and no end convolution's effect (identity).
    fn shifted(channels: usize, scale: usize, groups: usize, shift: (f32, f32)) -> DySample {
        let dev = Device::Cpu;
        let offsets = 2 * groups * scale * scale;
        let zeros = |dims: &[usize]| Tensor::zeros(dims, DType::F32, &dev).unwrap();
        let initial: Vec<f32> = (0..offsets)
            .map(|i| if i < offsets / 2 { shift.0 } else { shift.1 })
            .collect();
        let tensors = HashMap::from([
            (
                "offset.weight".to_string(),
                zeros(&[offsets, channels, 1, 1]),
            ),
            ("offset.bias".to_string(), zeros(&[offsets])),
            (
                "scope.weight".to_string(),
                zeros(&[offsets, channels, 1, 1]),
            ),
            (
                "init_pos".to_string(),
                Tensor::from_vec(initial, (1, offsets, 1, 1), &dev).unwrap(),
            ),
            (
                "end_conv.weight".to_string(),
                Tensor::eye(channels, DType::F32, &dev)
                    .unwrap()
                    .reshape((channels, channels, 1, 1))
                    .unwrap(),
            ),
            ("end_conv.bias".to_string(), zeros(&[channels])),
        ]);
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &dev);
        DySample::new(vb, channels, channels, scale, groups).unwrap()
    }

    #[test]
    fn zero_offsets_repeat_pixels_and_a_half_pixel_offset_averages_neighbours() {
        let xs = Tensor::arange(0f32, 2.0 * 3.0 * 4.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 2, 3, 4))
            .unwrap();
        // The offsets' convolutions are zero: init_pos alone moves the samples (within the
        // rounding of the reference's trip through [-1, 1]).
        let nearest = shifted(2, 2, 2, (0.0, 0.0)).forward(&xs).unwrap();
        let repeated = xs.upsample_nearest2d(6, 8).unwrap();
        assert!(max_abs_diff(&nearest, &repeated) < 1e-5);
        // Half a pixel right: each sample is the mean of a pixel and its right neighbour, the
        // last column clamped at the border.
        let right = shifted(2, 1, 1, (0.5, 0.0)).forward(&xs).unwrap();
        let row = right.get(0).unwrap().get(0).unwrap().get(1).unwrap();
        let mean_of_neighbours = Tensor::new(&[4.5f32, 5.5, 6.5, 7.0], &Device::Cpu).unwrap();
        assert!(max_abs_diff(&row, &mean_of_neighbours) < 1e-5);
    }
}
