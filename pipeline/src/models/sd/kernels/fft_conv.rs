//! Convolution by FFT for large stride-1 kernels on the CPU (RealPLKSR's 17×17): the output is
//! cut into tiles, each read through a frame of its pixels plus the kernel's reach
//! (overlap-save), and per frame every output channel's spectrum is the sum over input
//! channels of the input's spectrum times the conjugated kernel's — a correlation, as
//! convolutions in networks are. The work per output pixel grows with the logarithm of the
//! frame rather than with the kernel's area: 17×17 taps cost what about two dozen do directly.
//!
//! Spectra are laid out column-major: each frame's rows are transformed as real signals
//! (`cols / 2 + 1` bins each), then each bin's column as a complex one, contiguous.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape};
use rayon::prelude::*;
use realfft::num_complex::Complex32;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};
use rustfft::{Fft, FftPlanner};

use super::{Epilogue, finish, stride_one_operands};

/// The frame side tiles aim at (with a 17×17 kernel, 80 outputs per frame of 96): larger
/// frames waste less of each on the kernel's reach, smaller ones keep the spectra in cache.
const FRAME_TARGET: usize = 96;
/// Spectrum values per block of the channel products (one job's share).
const PRODUCT_BLOCK: usize = 256;

/// A stride-1 convolution of `padding` on every side, by FFT, finished by `epilogue`.
pub(super) struct FftConv {
    pub(super) padding: usize,
    pub(super) epilogue: Epilogue,
}

/// How one axis of the output is cut: `tiles` tiles of `tile` outputs (the last one may be
/// cut short), each read through a window of `frame` inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Axis {
    tiles: usize,
    tile: usize,
    frame: usize,
}

impl Axis {
    /// Tiles for `out` outputs of a `kernel`-wide kernel, their frames at most about
    /// [`FRAME_TARGET`] (or the kernel's width twice over, for wider kernels).
    fn new(out: usize, kernel: usize) -> Self {
        let most = FRAME_TARGET.saturating_sub(kernel - 1).max(kernel);
        let tiles = out.div_ceil(most).max(1);
        let tile = out.div_ceil(tiles);
        Self {
            tiles,
            tile,
            frame: smooth(tile + kernel - 1),
        }
    }
}

/// The least even `n ≥ least` with no prime factors but 2, 3 and 5 (the lengths FFTs are
/// fastest at; a real transform of an even length is a complex one of half of it).
fn smooth(least: usize) -> usize {
    let is_smooth = |n: usize| {
        if !n.is_multiple_of(2) {
            return false;
        }
        let mut m = n;
        for p in [2, 3, 5] {
            while m.is_multiple_of(p) {
                m /= p;
            }
        }
        m == 1
    };
    (least.max(1)..).find(|&n| is_smooth(n)).unwrap_or(least)
}

/// The transforms of one frame size, `rows × cols`.
struct Transforms {
    rows: usize,
    cols: usize,
    /// `cols / 2 + 1`: the complex bins of a real row.
    bins: usize,
    row_forward: Arc<dyn RealToComplex<f32>>,
    row_inverse: Arc<dyn ComplexToReal<f32>>,
    column_forward: Arc<dyn Fft<f32>>,
    column_inverse: Arc<dyn Fft<f32>>,
}

/// One job's buffers for [`Transforms`].
struct Scratch {
    real: Vec<f32>,
    row: Vec<Complex32>,
    fft: Vec<Complex32>,
}

/// An FFT library's error as candle's.
fn fft_error(error: realfft::FftError) -> candle_core::Error {
    candle_core::Error::Msg(format!("FFT convolution: {error}"))
}

impl Transforms {
    fn new(rows: usize, cols: usize) -> Self {
        let mut real = RealFftPlanner::<f32>::new();
        let mut complex = FftPlanner::<f32>::new();
        Self {
            rows,
            cols,
            bins: cols / 2 + 1,
            row_forward: real.plan_fft_forward(cols),
            row_inverse: real.plan_fft_inverse(cols),
            column_forward: complex.plan_fft_forward(rows),
            column_inverse: complex.plan_fft_inverse(rows),
        }
    }

    /// Complex values in a frame's spectrum.
    fn spectrum_len(&self) -> usize {
        self.bins * self.rows
    }

    fn scratch(&self) -> Scratch {
        let fft = [
            self.row_forward.get_scratch_len(),
            self.row_inverse.get_scratch_len(),
            self.column_forward.get_inplace_scratch_len(),
            self.column_inverse.get_inplace_scratch_len(),
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        Scratch {
            real: vec![0.0; self.cols],
            row: vec![Complex32::default(); self.bins],
            fft: vec![Complex32::default(); fft],
        }
    }

    /// Writes into `spectrum` the spectrum of the frame whose row `r` `fill(r, row)` writes
    /// (`cols` values), returning false for a row of zeros, which it may leave unwritten.
    fn forward(
        &self,
        spectrum: &mut [Complex32],
        scratch: &mut Scratch,
        fill: impl Fn(usize, &mut [f32]) -> bool,
    ) -> Result<()> {
        let Scratch { real, row, fft } = scratch;
        for r in 0..self.rows {
            if fill(r, real) {
                let fft = &mut fft[..self.row_forward.get_scratch_len()];
                self.row_forward
                    .process_with_scratch(real, row, fft)
                    .map_err(fft_error)?;
            } else {
                row.fill(Complex32::default());
            }
            for (bin, &value) in row.iter().enumerate() {
                spectrum[bin * self.rows + r] = value;
            }
        }
        let fft = &mut fft[..self.column_forward.get_inplace_scratch_len()];
        self.column_forward.process_with_scratch(spectrum, fft);
        Ok(())
    }

    /// Transforms `spectrum` back (destroying it) and hands each of the frame's first `rows`
    /// rows to `emit(r, row)`, scaled by `rows · cols` (the transforms are unnormalised).
    fn inverse(
        &self,
        spectrum: &mut [Complex32],
        scratch: &mut Scratch,
        rows: usize,
        mut emit: impl FnMut(usize, &[f32]),
    ) -> Result<()> {
        let Scratch { real, row, fft } = scratch;
        let column_fft = &mut fft[..self.column_inverse.get_inplace_scratch_len()];
        self.column_inverse
            .process_with_scratch(spectrum, column_fft);
        for r in 0..rows {
            for (bin, value) in row.iter_mut().enumerate() {
                *value = spectrum[bin * self.rows + r];
            }
            // A real row's first bin (and last, for an even length) is real; rounding leaves
            // a trace of imaginary part, which the real transform refuses.
            row[0].im = 0.0;
            if self.cols.is_multiple_of(2) {
                row[self.bins - 1].im = 0.0;
            }
            let fft = &mut fft[..self.row_inverse.get_scratch_len()];
            self.row_inverse
                .process_with_scratch(row, real, fft)
                .map_err(fft_error)?;
            emit(r, real);
        }
        Ok(())
    }
}

impl CustomOp2 for FftConv {
    fn name(&self) -> &'static str {
        "autonomy-fft-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let p = self.padding;
        let ((input, weight, [batch, c_in, h, w], [c_out, _, kh, kw]), [oh, ow]) =
            stride_one_operands(s1, l1, s2, l2, p)?;
        let (ys, xs) = (Axis::new(oh, kh), Axis::new(ow, kw));
        let fft = Transforms::new(ys.frame, xs.frame);
        let len = fft.spectrum_len();

        // Each kernel's spectrum, conjugated (a correlation) and scaled by the inverse
        // transform's 1 / (rows · cols); kernel (co, ci) at co·c_in + ci.
        let mut kernels = vec![Complex32::default(); c_out * c_in * len];
        let scale = 1.0 / (fft.rows * fft.cols) as f32;
        kernels
            .par_chunks_mut(len)
            .zip(weight.par_chunks(kh * kw))
            .try_for_each_init(
                || fft.scratch(),
                |scratch, (spectrum, kernel)| {
                    fft.forward(spectrum, scratch, |r, row| {
                        match kernel.chunks_exact(kw).nth(r) {
                            Some(taps) => {
                                row[..kw].copy_from_slice(taps);
                                row[kw..].fill(0.0);
                                true
                            }
                            None => false,
                        }
                    })?;
                    for value in spectrum.iter_mut() {
                        *value = value.conj() * scale;
                    }
                    Ok::<_, candle_core::Error>(())
                },
            )?;

        // Each frame's spectrum per input channel: frame (b, ty, tx) of channel ci at
        // ((b·tiles_y + ty)·tiles_x + tx)·c_in + ci.
        let frames = batch * ys.tiles * xs.tiles;
        let mut inputs = vec![Complex32::default(); frames * c_in * len];
        inputs.par_chunks_mut(len).enumerate().try_for_each_init(
            || fft.scratch(),
            |scratch, (job, spectrum)| {
                let (frame, ci) = (job / c_in, job % c_in);
                let b = frame / (ys.tiles * xs.tiles);
                let (ty, tx) = ((frame / xs.tiles) % ys.tiles, frame % xs.tiles);
                let plane = &input[(b * c_in + ci) * h * w..][..h * w];
                // Frame column c reads input column x0 + c, zero outside the image.
                let x0 = (tx * xs.tile) as isize - p as isize;
                let lo = (-x0).clamp(0, fft.cols as isize) as usize;
                let hi = (w as isize - x0).clamp(lo as isize, fft.cols as isize) as usize;
                fft.forward(spectrum, scratch, |r, row| {
                    let Some(iy) = (ty * ys.tile + r).checked_sub(p).filter(|&y| y < h) else {
                        return false;
                    };
                    if lo == hi {
                        return false;
                    }
                    let pixels = &plane[iy * w..][..w];
                    row[..lo].fill(0.0);
                    row[lo..hi].copy_from_slice(
                        &pixels[(x0 + lo as isize) as usize..(x0 + hi as isize) as usize],
                    );
                    row[hi..].fill(0.0);
                    true
                })
            },
        )?;

        // The products summed over input channels, in blocks of the spectrum: block j holds
        // every frame's every output channel, PRODUCT_BLOCK values each.
        let blocks = len.div_ceil(PRODUCT_BLOCK);
        let per_block = frames * c_out * PRODUCT_BLOCK;
        let mut products = vec![Complex32::default(); blocks * per_block];
        products
            .par_chunks_mut(per_block)
            .enumerate()
            .for_each(|(j, block)| {
                let at = j * PRODUCT_BLOCK;
                let n = PRODUCT_BLOCK.min(len - at);
                for (k, sum) in block.chunks_exact_mut(PRODUCT_BLOCK).enumerate() {
                    let (frame, co) = (k / c_out, k % c_out);
                    let sum = &mut sum[..n];
                    for ci in 0..c_in {
                        let kernel = &kernels[(co * c_in + ci) * len + at..][..n];
                        let spectrum = &inputs[(frame * c_in + ci) * len + at..][..n];
                        multiply_add(sum, kernel, spectrum);
                    }
                }
            });
        drop((kernels, inputs));

        // Back to pixels, each job one band of tile rows of one output plane.
        let mut output = vec![0f32; batch * c_out * oh * ow];
        output
            .par_chunks_mut(oh * ow)
            .enumerate()
            .try_for_each(|(plane_index, plane)| {
                let (b, co) = (plane_index / c_out, plane_index % c_out);
                let (offset, slope) = self.epilogue.of(b, co, c_out);
                plane
                    .par_chunks_mut(ys.tile * ow)
                    .enumerate()
                    .try_for_each_init(
                        || (fft.scratch(), vec![Complex32::default(); len]),
                        |(scratch, spectrum), (ty, band)| {
                            let rows = band.len() / ow;
                            for tx in 0..xs.tiles {
                                let frame = (b * ys.tiles + ty) * xs.tiles + tx;
                                let k = frame * c_out + co;
                                for (j, part) in spectrum.chunks_mut(PRODUCT_BLOCK).enumerate() {
                                    let from = &products[j * per_block + k * PRODUCT_BLOCK..];
                                    part.copy_from_slice(&from[..part.len()]);
                                }
                                let x0 = tx * xs.tile;
                                let width = xs.tile.min(ow - x0);
                                fft.inverse(spectrum, scratch, rows, |r, row| {
                                    band[r * ow + x0..][..width].copy_from_slice(&row[..width]);
                                })?;
                            }
                            finish(band, offset, slope);
                            Ok::<_, candle_core::Error>(())
                        },
                    )
            })?;
        Ok((CpuStorage::F32(output), Shape::from((batch, c_out, oh, ow))))
    }
}

on_widest_vectors! {
    /// `sum += a·b`, element by element, on the widest vectors the CPU has.
    fn multiply_add => multiply_add_any(sum: &mut [Complex32], a: &[Complex32], b: &[Complex32])
}

#[inline(always)]
fn multiply_add_any(sum: &mut [Complex32], a: &[Complex32], b: &[Complex32]) {
    for ((s, &a), &b) in sum.iter_mut().zip(a).zip(b) {
        s.re += a.re * b.re - a.im * b.im;
        s.im += a.re * b.im + a.im * b.re;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_fast_lengths_covering_each_tile_and_the_kernel() {
        assert_eq!(smooth(80), 80);
        assert_eq!(smooth(74), 80);
        assert_eq!(smooth(97), 100);
        // RealPLKSR's 17×17 kernel on 128² and on 512²; an image smaller than a frame; a
        // kernel wider than the frame target.
        assert_eq!(
            Axis::new(128, 17),
            Axis {
                tiles: 2,
                tile: 64,
                frame: 80
            }
        );
        assert_eq!(Axis::new(512, 17).tiles, 7);
        assert_eq!(
            Axis::new(21, 17),
            Axis {
                tiles: 1,
                tile: 21,
                frame: 40
            }
        );
        for (out, kernel) in [(1, 17), (300, 5), (128, 101), (1000, 31)] {
            let axis = Axis::new(out, kernel);
            assert!(axis.tiles * axis.tile >= out, "{out}, {kernel}: {axis:?}");
            assert!(
                axis.frame >= axis.tile + kernel - 1,
                "{out}, {kernel}: {axis:?}"
            );
        }
    }
}
