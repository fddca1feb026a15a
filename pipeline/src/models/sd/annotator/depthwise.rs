//! Depthwise convolutions (one kernel per channel) on the CPU as sums of whole shifted input
//! rows, the channels in parallel: several times faster there than candle's grouped
//! convolution (PiDiNet's blocks, MobileNet's).

use candle_core::{DType, Result, Tensor};

/// A depthwise convolution with a kernel `(c, 1, k, k)`, the input zero-padded by `before`
/// rows and columns above and left and `after` below and right, at `stride`.
pub(super) struct Depthwise {
    kernel: Tensor,
    before: usize,
    after: usize,
    stride: usize,
}

impl Depthwise {
    /// Stride 1, padded by `padding` on every side.
    pub(super) fn new(kernel: Tensor, padding: usize) -> Self {
        Self::strided(kernel, 1, (padding, padding))
    }

    /// At `stride`, padded by `before` above and left and `after` below and right (as
    /// MobileNet's stride-2 layers pad one row and column after).
    pub(super) fn strided(kernel: Tensor, stride: usize, (before, after): (usize, usize)) -> Self {
        Self {
            kernel,
            before,
            after,
            stride,
        }
    }

    /// On the CPU in f32, each output row a sum of whole shifted input rows (the taps that are
    /// zero, as nine of a radial kernel's 25 are, skipped); elsewhere candle's grouped
    /// convolution.
    pub(super) fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (channels, _, k, _) = self.kernel.dims4()?;
        let (before, after, stride) = (self.before, self.after, self.stride);
        if !(xs.device().is_cpu() && xs.dtype() == DType::F32) {
            let padded = xs
                .pad_with_zeros(2, before, after)?
                .pad_with_zeros(3, before, after)?;
            return padded.conv2d(&self.kernel, 0, stride, 1, channels);
        }
        use rayon::prelude::*;
        let (n, c, h, w) = xs.dims4()?;
        let (ph, pw) = (h + before + after, w + before + after);
        if ph < k || pw < k {
            candle_core::bail!("a {k}×{k} depthwise convolution of a {h}×{w} input");
        }
        let (oh, ow) = ((ph - k) / stride + 1, (pw - k) / stride + 1);
        let input = xs.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let kernel = self.kernel.flatten_all()?.to_vec1::<f32>()?;
        let mut output = vec![0f32; n * c * oh * ow];
        output
            .par_chunks_exact_mut(oh * ow)
            .zip(input.par_chunks_exact(h * w))
            .enumerate()
            .for_each(|(plane, (out, source))| {
                let taps = &kernel[(plane % c) * k * k..][..k * k];
                let mut padded = vec![0f32; ph * pw];
                for (y, row) in source.chunks_exact(w).enumerate() {
                    padded[(y + before) * pw + before..][..w].copy_from_slice(row);
                }
                for (y, out_row) in out.chunks_exact_mut(ow).enumerate() {
                    for (t, &weight) in taps.iter().enumerate().filter(|(_, w)| **w != 0.0) {
                        let (ky, kx) = (t / k, t % k);
                        let source = &padded[(y * stride + ky) * pw + kx..];
                        if stride == 1 {
                            for (o, &v) in out_row.iter_mut().zip(&source[..ow]) {
                                *o += weight * v;
                            }
                        } else {
                            for (o, &v) in out_row.iter_mut().zip(source.iter().step_by(stride)) {
                                *o += weight * v;
                            }
                        }
                    }
                }
            });
        Tensor::from_vec(output, (n, c, oh, ow), xs.device())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_candles_grouped_convolution_at_strides_one_and_two() {
        let device = Device::Cpu;
        let kernel = Tensor::randn(0f32, 1.0, (3, 1, 3, 3), &device).unwrap();
        let xs = Tensor::randn(0f32, 1.0, (1, 3, 9, 8), &device).unwrap();
        for (stride, before, after) in [(1, 1, 1), (2, 0, 1), (2, 1, 1)] {
            let ours = Depthwise::strided(kernel.clone(), stride, (before, after))
                .forward(&xs)
                .unwrap();
            let theirs = xs
                .pad_with_zeros(2, before, after)
                .unwrap()
                .pad_with_zeros(3, before, after)
                .unwrap()
                .conv2d(&kernel, 0, stride, 1, 3)
                .unwrap();
            assert_eq!(ours.dims(), theirs.dims());
            let gap = super::super::super::max_abs_diff(&ours, &theirs);
            assert!(gap < 1e-5, "stride {stride}: {gap}");
        }
    }
}
