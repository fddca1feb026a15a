//! A stride-2 transposed convolution (`ConvTranspose2d(…, stride 2, padding 1)`, kernel 3 with
//! output padding 1, or kernel 4) as one stride-1 convolution to the four output phases'
//! channels and a pixel shuffle: output row `2m + a` takes a kernel row of each of a few input
//! rows around `m`, and the convolution's window holds those rows for both phases at once.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::super::kernels::Conv2d;
use super::super::upscaler::compact::pixel_shuffle;

/// A transposed convolution, rewritten.
pub(super) struct UpConv {
    conv: Conv2d,
    /// How many input rows (columns) before `m` the window starts.
    before: usize,
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
        let weight = vb
            .get((c_in, c_out, kernel, kernel), "weight")?
            .transpose(0, 1)?;
        let bias = vb.get(c_out, "bias")?;
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
        })
    }

    /// The transposed convolution of `xs` `(n, c_in, h, w)`: `(n, c_out, 2h, 2w)`.
    pub(super) fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let ys = if self.before == 1 {
            self.conv.forward(xs)?
        } else {
            self.conv
                .forward(&xs.pad_with_zeros(2, 0, 1)?.pad_with_zeros(3, 0, 1)?)?
        };
        pixel_shuffle(&ys, 2)
    }
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
            let xs = Tensor::randn(0f32, 1.0, (1, 3, 5, 7), &device).unwrap();
            let ours = up.forward(&xs).unwrap();
            let theirs = xs
                .conv_transpose2d(&weight, 1, output_padding, 2, 1)
                .unwrap()
                .broadcast_add(&bias.reshape((1, 2, 1, 1)).unwrap())
                .unwrap();
            assert_eq!(ours.dims(), [1, 2, 10, 14]);
            let most = super::super::super::max_abs_diff(&ours, &theirs);
            assert!(most < 1e-5, "kernel {kernel}: {most}");
        }
    }
}
