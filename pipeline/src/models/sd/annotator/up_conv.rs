//! A stride-2 transposed convolution (`ConvTranspose2d(…, stride 2, padding 1)`, kernel 3 with
//! output padding 1, or kernel 4) as one stride-1 convolution to the four output phases'
//! channels and a pixel shuffle: output row `2m + a` takes a kernel row of each of a few input
//! rows around `m`, and the convolution's window holds those rows for both phases at once.
//!
//! On the CPU in f32, kernel 4 on small inputs (below Winograd's sizes) runs instead as one
//! matrix product to every tap's plane (each output channel's 16 taps of each input pixel) and
//! a gather of each output pixel's four taps: the product does the exact work, where the phase
//! convolution does 9 taps' work for 4.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::super::kernels::Conv2d;
use super::super::upscaler::compact::pixel_shuffle;

/// Inputs of fewer pixels than this take kernel 4's matrix-product path on the CPU; larger ones
/// the phase convolution, which runs by Winograd's method there (measured on 2 cores, the anime
/// U-Net's levels: 16² input with 1024 channels 80 → 30 ms by the product; 32² to 128², where
/// the product's columns outgrow the caches, 62–117 ms against 58–92 ms by Winograd).
const GATHERED_BELOW: usize = 32 * 32;

/// A transposed convolution, rewritten.
pub(super) struct UpConv {
    conv: Conv2d,
    /// How many input rows (columns) before `m` the window starts.
    before: usize,
    /// Kernel 4's taps as one matrix, `(c_out·16, c_in)` (row `o·16 + ky·4 + kx`), and its
    /// bias, for the CPU's path.
    gather: Option<(Tensor, Vec<f32>)>,
}

impl UpConv {
    /// Reads `weight` `(in, out, kernel, kernel)` (PyTorch's layout for a transposed
    /// convolution) and `bias` from `vb`; `kernel` is 3 (with output padding 1) or 4.
    pub(super) fn new(vb: VarBuilder, c_in: usize, c_out: usize, kernel: usize) -> Result<Self> {
        // Which kernel row (column) phase `a` takes from input row `m - before + d`, by
        // `[a][d]`: out row o = 2i - 1 + k, so an even row takes the odd taps and an odd one
        // the even taps.
        let (before, taps): (usize, [[Option<usize>; 3]; 2]) = match kernel {
            3 => (0, [[Some(1), None, None], [Some(2), Some(0), None]]),
            4 => (1, [[Some(3), Some(1), None], [None, Some(2), Some(0)]]),
            other => candle_core::bail!("a {other}×{other} transposed convolution"),
        };
        let window = before + 2;
        let stored = vb.get((c_in, c_out, kernel, kernel), "weight")?;
        let weight = stored.transpose(0, 1)?;
        let bias = vb.get(c_out, "bias")?;
        let gather = if kernel == 4 {
            let matrix = stored
                .permute((1, 2, 3, 0))?
                .contiguous()?
                .reshape((c_out * 16, c_in))?
                .to_dtype(DType::F32)?;
            Some((matrix, bias.to_dtype(DType::F32)?.to_vec1::<f32>()?))
        } else {
            None
        };
        let zeros = Tensor::zeros((c_out, c_in), weight.dtype(), weight.device())?;
        let mut phases = Vec::with_capacity(4);
        for row in &taps {
            for column in &taps {
                let mut window_taps = Vec::with_capacity(window * window);
                for dy in &row[..window] {
                    for dx in &column[..window] {
                        window_taps.push(match (dy, dx) {
                            (Some(ky), Some(kx)) => weight
                                .narrow(2, *ky, 1)?
                                .narrow(3, *kx, 1)?
                                .squeeze(3)?
                                .squeeze(2)?,
                            _ => zeros.clone(),
                        });
                    }
                }
                phases
                    .push(Tensor::stack(&window_taps, 2)?.reshape((c_out, c_in, window, window))?);
            }
        }
        // Output channel `o·4 + a·2 + b`, as the pixel shuffle reads phase (a, b) of channel o.
        let weight = Tensor::stack(&phases, 1)?.reshape((4 * c_out, c_in, window, window))?;
        let bias = bias.unsqueeze(1)?.repeat((1, 4))?.flatten_all()?;
        // A window from one row before to one after is a zero-padded 3×3 convolution, which
        // takes the CPU's Winograd path; the kernel-3 window (this row and the next) is padded
        // by hand.
        let padding = usize::from(before == 1);
        Ok(Self {
            conv: Conv2d::from_weights(weight.contiguous()?, bias, padding),
            before,
            gather,
        })
    }

    /// The transposed convolution of `xs` `(n, c_in, h, w)`: `(n, c_out, 2h, 2w)`.
    pub(super) fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = xs.dims4()?;
        if let Some((matrix, bias)) = &self.gather
            && xs.device().is_cpu()
            && xs.dtype() == DType::F32
            && h * w < GATHERED_BELOW
        {
            return gathered(xs, matrix, bias);
        }
        let ys = if self.before == 1 {
            self.conv.forward(xs)?
        } else {
            self.conv
                .forward(&xs.pad_with_zeros(2, 0, 1)?.pad_with_zeros(3, 0, 1)?)?
        };
        pixel_shuffle(&ys, 2)
    }
}

/// Kernel 4's transposed convolution of `xs` on the CPU: every tap's plane by one matrix
/// product, then each output pixel `(oy, ox)` the sum of its four taps — rows `ky` of the
/// parity of `oy + 1` from input row `(oy + 1 − ky) / 2`, columns alike — plus the bias.
fn gathered(xs: &Tensor, matrix: &Tensor, bias: &[f32]) -> Result<Tensor> {
    use rayon::prelude::*;
    let (n, c_in, h, w) = xs.dims4()?;
    let c_out = bias.len();
    let (oh, ow, plane) = (2 * h, 2 * w, h * w);
    let mut output = vec![0f32; n * c_out * oh * ow];
    for (b, out) in output.chunks_exact_mut(c_out * oh * ow).enumerate() {
        let columns = matrix
            .matmul(&xs.get(b)?.reshape((c_in, plane))?.contiguous()?)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        out.par_chunks_exact_mut(oh * ow)
            .zip(columns.par_chunks_exact(16 * plane))
            .zip(bias)
            .for_each(|((out, taps), &offset)| {
                let tap =
                    |ky: usize, kx: usize, iy: usize| &taps[(ky * 4 + kx) * plane + iy * w..][..w];
                for (oy, row) in out.chunks_exact_mut(ow).enumerate() {
                    row.fill(offset);
                    // Even output rows take tap rows 1 (input row oy/2) and 3 (the one before);
                    // odd ones 0 (the one after) and 2 (input row (oy−1)/2). Columns alike.
                    let first = (oy + 1) % 2;
                    for ky in [first, first + 2] {
                        let Some(iy) = (oy + 1).checked_sub(ky).map(|t| t / 2).filter(|&i| i < h)
                        else {
                            continue;
                        };
                        let (t0, t1, t2, t3) = (
                            tap(ky, 0, iy),
                            tap(ky, 1, iy),
                            tap(ky, 2, iy),
                            tap(ky, 3, iy),
                        );
                        for (j, pair) in row.chunks_exact_mut(2).enumerate() {
                            let even = t1[j] + if j > 0 { t3[j - 1] } else { 0.0 };
                            let odd = t2[j] + if j + 1 < w { t0[j + 1] } else { 0.0 };
                            pair[0] += even;
                            pair[1] += odd;
                        }
                    }
                }
            });
    }
    Tensor::from_vec(output, (n, c_out, oh, ow), xs.device())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn it_is_pytorchs_transposed_convolution() {
        let device = Device::Cpu;
        for (kernel, output_padding) in [(3, 1), (4, 0)] {
            let weight = Tensor::randn(0f32, 1.0, (3, 2, kernel, kernel), &device).unwrap();
            let bias = Tensor::randn(0f32, 1.0, 2, &device).unwrap();
            let vb = VarBuilder::from_tensors(
                [
                    ("weight".to_string(), weight.clone()),
                    ("bias".to_string(), bias.clone()),
                ]
                .into(),
                DType::F32,
                &device,
            );
            let up = UpConv::new(vb, 3, 2, kernel).unwrap();
            // Kernel 4 below 32² takes the matrix product, from there the phase convolution.
            for (h, w) in [(5, 7), (32, 33)] {
                let xs = Tensor::randn(0f32, 1.0, (1, 3, h, w), &device).unwrap();
                let ours = up.forward(&xs).unwrap();
                let theirs = xs
                    .conv_transpose2d(&weight, 1, output_padding, 2, 1)
                    .unwrap()
                    .broadcast_add(&bias.reshape((1, 2, 1, 1)).unwrap())
                    .unwrap();
                assert_eq!(ours.dims(), [1, 2, 2 * h, 2 * w]);
                let most = super::super::super::max_abs_diff(&ours, &theirs);
                assert!(most < 1e-5, "kernel {kernel}, {h}×{w}: {most}");
            }
        }
    }
}
