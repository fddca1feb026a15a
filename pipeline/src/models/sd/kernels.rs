//! The UNet's and VAE's convolutions, linear layers, attention and GEGLU gate: CPU kernels for
//! the two operations that dominate Stable Diffusion on a CPU, with candle's own operations
//! everywhere else (GPUs, f16; on CUDA, f16/bf16 attention goes through
//! `super::flash_attention`, biases with what follows them through `super::elementwise`, and
//! with the `cudnn` feature convolutions through cuDNN, `super::cudnn`):
//!
//! - **convolution** as matrix products over bands of output rows: each band's patches are
//!   copied row by row (contiguous copies, no full-image im2col buffer) and one `gemm` writes
//!   the band straight into the NCHW output; 3×3 stride-1 convolutions (most of a UNet's and
//!   a VAE's work) use Winograd's F(2×2, 3×3) instead: 16 matrix products over transformed
//!   4×4 tiles, 2.25× fewer multiplications; stride-1 kernels of 5 to 8 unroll each input
//!   row once for all kernel rows, and from 9 up (RealPLKSR's 17×17) they go through FFTs,
//!   tile by tile (`fft_conv`). The bias, a ResNet block's
//!   time-embedding shift and a leaky ReLU are applied in the pass that writes the output;
//! - ESRGAN's **dense block** (five convolutions, each over every earlier output) with each
//!   input transformed for Winograd once, and no concatenated copies;
//! - **attention** fused per block of 64 queries: scores, a vectorisable softmax and the
//!   weighted sum stay in a cache-sized buffer instead of a `(heads, n, n)` score tensor;
//! - the feed-forward's **GEGLU** gate `a · GELU(b)` in one vectorised pass (an erf to 1.5e-7
//!   instead of libm's scalar one), and the upscalers' plain GELU, Mish and sigmoid gate alike;
//! - the **depthwise 3×3 convolution** of channels-last images DAT's blocks run, one pass per
//!   output row.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, D, DType, Layout, Module, Result, Shape, Tensor,
};
use candle_nn::VarBuilder;
use rayon::prelude::*;
use std::cell::RefCell;

/// Defines `fn $name(args)` running `$portable(args)` compiled for AVX-512F, else for AVX2 and
/// FMA, whichever the CPU has (checked at run time), else as it is. `$portable` is
/// `#[inline(always)]` and written so that it vectorises for the features it is inlined into.
macro_rules! on_widest_vectors {
    ($(#[$doc:meta])* fn $name:ident => $portable:ident ($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {
        $(#[$doc])*
        fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $portable($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $portable($($arg),*)
                }
                if is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F.
                    return unsafe { avx512($($arg),*) };
                }
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has AVX2 and FMA.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $portable($($arg),*)
        }
    };
}
pub(super) use on_widest_vectors;

mod fft_conv;

/// Output pixels × patch size per convolution band (floats in its patch buffer).
const BAND_FLOATS: usize = 1 << 21;
/// Winograd tiles × (input + output channels) × 16 per band at most (floats in its buffers).
const TILE_FLOATS: usize = 1 << 22;
/// Winograd tiles per band: enough for efficient matrix products, few enough that a band's
/// buffers stay near the core's cache (measured on 2 cores: ESRGAN's 32-channel dense
/// convolutions faster than with bands of 1024 tiles and more, the UNet's no slower).
const BAND_TILES: usize = 512;
/// The kernel side from which stride-1 convolutions unroll their input by rows
/// ([`RowConv`]) rather than whole patches.
const LARGE_KERNEL: usize = 5;
/// The kernel side from which stride-1 convolutions go through FFTs
/// ([`fft_conv::FftConv`]).
const FFT_KERNEL: usize = 9;
/// Unrolled floats per output row band of [`RowConv`], before the kernel's extra rows
/// (measured on 2 cores, RealPLKSR's 16-channel 17×17 convolution of 128²: 23–25 ms in bands
/// of 3 rows, 26 ms in bands of 15, 37 ms for [`BandedConv`]'s whole patches).
const ROW_BAND_FLOATS: usize = 1 << 17;
/// Queries per attention block.
const QUERY_BLOCK: usize = 64;

/// The statistics of a batch norm in evaluation: its `weight` (γ), `bias` (β), `running_mean`
/// and `running_var`, each `(channels)`.
pub struct BatchNorm<'a> {
    /// γ.
    pub weight: &'a Tensor,
    /// β.
    pub bias: &'a Tensor,
    /// The running mean.
    pub mean: &'a Tensor,
    /// The running variance.
    pub var: &'a Tensor,
}

/// The convolution `weight` `(out, in, k, k)` plus `bias` `(out)`, followed by `norm` (PyTorch's
/// ε, 1e-5), as one convolution's weight and bias.
pub fn fold_batch_norm(
    weight: &Tensor,
    bias: &Tensor,
    norm: BatchNorm,
) -> Result<(Tensor, Tensor)> {
    let out = weight.dim(0)?;
    let scale = (norm.weight / (norm.var + 1e-5)?.sqrt()?)?;
    let weight = weight.broadcast_mul(&scale.reshape((out, 1, 1, 1))?)?;
    let bias = ((bias - norm.mean)? * &scale)?.add(norm.bias)?;
    Ok((weight, bias))
}

/// A 2D convolution (groups 1, dilation 1) with optional bias.
#[derive(Clone, Debug)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    padding: usize,
}

impl Conv2d {
    /// Reads `weight` `(out, in, k, k)` and `bias` from `vb`.
    pub fn new(
        vb: VarBuilder,
        channels_in: usize,
        channels_out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        let mut conv = Self::without_bias(
            vb.clone(),
            channels_in,
            channels_out,
            kernel,
            stride,
            padding,
        )?;
        conv.bias = Some(vb.get(channels_out, "bias")?);
        Ok(conv)
    }

    /// Reads `weight` `(out, in, k, k)` alone from `vb`: a convolution without a bias.
    pub fn without_bias(
        vb: VarBuilder,
        channels_in: usize,
        channels_out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        Ok(Self {
            weight: vb.get((channels_out, channels_in, kernel, kernel), "weight")?,
            bias: None,
            stride,
            padding,
        })
    }

    /// The stride-1 convolution of `weight` `(out, in, k, k)` plus `bias` `(out)`, from weights
    /// in hand rather than stored (several stored convolutions folded into one at load).
    pub fn from_weights(weight: Tensor, bias: Tensor, padding: usize) -> Self {
        Self {
            weight,
            bias: Some(bias),
            stride: 1,
            padding,
        }
    }

    /// The convolution off the CPU's f32 path: cuDNN's for CUDA tensors with the `cudnn`
    /// feature, else candle's.
    fn device_conv(&self, xs: &Tensor) -> Result<Tensor> {
        #[cfg(feature = "cudnn")]
        if xs.device().is_cuda() {
            return xs.contiguous()?.apply_op2_no_bwd(
                &self.weight.contiguous()?,
                &super::cudnn::CudnnConv {
                    padding: self.padding,
                    stride: self.stride,
                },
            );
        }
        xs.conv2d(&self.weight, self.padding, self.stride, 1, 1)
    }

    /// The convolution with a per-sample shift `(n, c_out)` of each output channel added to its
    /// output (a ResNet block's time embedding): on the CPU and on CUDA in the same pass as the
    /// bias, else as a second broadcast add after it.
    pub fn forward_shifted(&self, xs: &Tensor, shift: &Tensor) -> Result<Tensor> {
        self.convolve(xs, Some(shift), None)
    }

    /// The convolution, its bias, then a leaky ReLU with `slopes` (ESRGAN's, or the compact
    /// networks' PReLU): on the CPU in the same pass that writes the output.
    pub fn forward_leaky(&self, xs: &Tensor, slopes: &Slopes) -> Result<Tensor> {
        self.convolve(xs, None, Some(slopes))
    }

    /// The convolution plus its bias plus `shift` `(n, c_out)` when given, then `slopes`.
    fn convolve(
        &self,
        xs: &Tensor,
        shift: Option<&Tensor>,
        slopes: Option<&Slopes>,
    ) -> Result<Tensor> {
        if xs.device().is_cpu() && xs.dtype() == DType::F32 {
            let (batch, _, h, w) = xs.dims4()?;
            let epilogue = Epilogue {
                offsets: self.offsets(batch, shift)?,
                slopes: slopes
                    .map(|slopes| slopes.values(self.weight.dim(0)?))
                    .transpose()?,
            };
            let winograd = self.takes_winograd(h, w)?;
            let (_, _, kh, kw) = self.weight.dims4()?;
            let (xs, weight) = (xs.contiguous()?, self.weight.contiguous()?);
            return if winograd {
                xs.apply_op2_no_bwd(&weight, &WinogradConv { epilogue })
            } else if self.stride == 1 && kh.min(kw) >= FFT_KERNEL {
                xs.apply_op2_no_bwd(
                    &weight,
                    &fft_conv::FftConv {
                        padding: self.padding,
                        epilogue,
                    },
                )
            } else if self.stride == 1 && kh.min(kw) >= LARGE_KERNEL {
                xs.apply_op2_no_bwd(
                    &weight,
                    &RowConv {
                        padding: self.padding,
                        epilogue,
                    },
                )
            } else {
                xs.apply_op2_no_bwd(
                    &weight,
                    &BandedConv {
                        stride: self.stride,
                        padding: self.padding,
                        epilogue,
                    },
                )
            };
        }
        #[cfg(feature = "cuda")]
        if let (true, Some(bias)) = (xs.device().is_cuda(), &self.bias) {
            let out = super::elementwise::channel_bias(&self.device_conv(xs)?, bias, shift)?;
            return match slopes {
                Some(slopes) => slopes.apply(&out),
                None => Ok(out),
            };
        }
        let mut out = self.device_conv(xs)?;
        if let Some(bias) = &self.bias {
            out = out.broadcast_add(&bias.reshape((1, (), 1, 1))?)?;
        }
        if let Some(shift) = shift {
            out = out.broadcast_add(&shift.unsqueeze(D::Minus1)?.unsqueeze(D::Minus1)?)?;
        }
        match slopes {
            Some(slopes) => slopes.apply(&out),
            None => Ok(out),
        }
    }

    /// Whether the CPU convolves an `h`×`w` image by Winograd's method: 3×3, stride 1,
    /// padding 1, and enough tiles and channels (measured on 2 cores: 0.6–0.7 of the banded
    /// time from 32×32 and 32 channels up; slower on 16×16 and below, where transforming the
    /// kernels on every call outweighs the saved products).
    fn takes_winograd(&self, h: usize, w: usize) -> Result<bool> {
        let (c_out, c_in, kh, kw) = self.weight.dims4()?;
        Ok((kh, kw, self.stride, self.padding) == (3, 3, 1, 1)
            && h * w >= 32 * 32
            && c_in.min(c_out) >= 16)
    }

    /// The bias plus `shift` of each image's output channels, `batch × c_out` values, or
    /// `None` when there is neither.
    fn offsets(&self, batch: usize, shift: Option<&Tensor>) -> Result<Option<Vec<f32>>> {
        let c_out = self.weight.dim(0)?;
        let bias = self.bias.as_ref().map(|bias| bias.reshape((1, c_out)));
        let offsets = match (bias.transpose()?, shift) {
            (None, None) => return Ok(None),
            (Some(bias), None) => bias,
            (None, Some(shift)) => shift.clone(),
            (Some(bias), Some(shift)) => shift.broadcast_add(&bias)?,
        };
        let offsets = offsets.broadcast_as((batch, c_out))?;
        Ok(Some(
            offsets.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?,
        ))
    }
}

/// The slopes of a leaky ReLU after a convolution: `x` where `x ≥ 0`, else `slope·x`.
#[derive(Clone, Debug)]
pub enum Slopes {
    /// One slope for every channel (ESRGAN's 0.2).
    Uniform(f32),
    /// A slope per output channel, `(c_out)`: PReLU.
    PerChannel(Tensor),
}

impl Slopes {
    /// Each of `channels` output channels' slope.
    fn values(&self, channels: usize) -> Result<Vec<f32>> {
        match self {
            Self::Uniform(slope) => Ok(vec![*slope; channels]),
            Self::PerChannel(slopes) if slopes.elem_count() == channels => {
                slopes.to_dtype(DType::F32)?.flatten_all()?.to_vec1()
            }
            Self::PerChannel(slopes) => candle_core::bail!(
                "leaky ReLU: {} slopes for {channels} channels",
                slopes.elem_count()
            ),
        }
    }

    /// The leaky ReLU of `xs` `(n, c, h, w)` with candle's operations (off the CPU's kernels).
    fn apply(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Self::Uniform(slope) if (0.0..=1.0).contains(slope) => {
                xs.maximum(&(xs * f64::from(*slope))?)
            }
            Self::Uniform(slope) => xs.relu()? + (xs.minimum(0f32)? * f64::from(*slope))?,
            Self::PerChannel(slopes) => {
                xs.relu()?
                    + xs.minimum(0f32)?
                        .broadcast_mul(&slopes.to_dtype(xs.dtype())?.reshape((1, (), 1, 1))?)?
            }
        }
    }
}

/// What a CPU convolution does to its outputs in the pass that writes them: adds each image's
/// channel offset (bias plus shift), then a leaky ReLU.
#[derive(Default)]
struct Epilogue {
    /// `batch × c_out` offsets, image-major.
    offsets: Option<Vec<f32>>,
    /// `c_out` slopes below zero.
    slopes: Option<Vec<f32>>,
}

impl Epilogue {
    /// The offset and slope of channel `co` of image `b` (of `c_out` channels).
    fn of(&self, b: usize, co: usize, c_out: usize) -> (f32, Option<f32>) {
        let offset = self.offsets.as_ref().map_or(0.0, |o| o[b * c_out + co]);
        (offset, self.slopes.as_ref().map(|slopes| slopes[co]))
    }

    /// Finishes `pixels` of each of image `b`'s `c_out` output planes (`plane` floats each)
    /// in the output `out` points at.
    ///
    /// # Safety
    /// `out` holds the whole output, and no other thread touches those pixels of image `b`
    /// during the call.
    unsafe fn finish_band(
        &self,
        out: Out,
        b: usize,
        c_out: usize,
        plane: usize,
        pixels: std::ops::Range<usize>,
    ) {
        for co in 0..c_out {
            // SAFETY: as the caller promises; a band's pixels of a plane are contiguous.
            let band = unsafe {
                std::slice::from_raw_parts_mut(
                    out.0.add((b * c_out + co) * plane + pixels.start),
                    pixels.len(),
                )
            };
            let (offset, slope) = self.of(b, co, c_out);
            finish(band, offset, slope);
        }
    }
}

on_widest_vectors! {
    /// [`finish_any`] compiled for the widest vectors the CPU has.
    fn finish => finish_any(xs: &mut [f32], offset: f32, slope: Option<f32>)
}

/// `x + offset` for every `x` of `xs`, then times `slope` where that is below zero.
#[inline(always)]
fn finish_any(xs: &mut [f32], offset: f32, slope: Option<f32>) {
    match slope {
        Some(slope) => {
            for x in xs {
                let y = *x + offset;
                *x = if y < 0.0 { y * slope } else { y };
            }
        }
        None if offset != 0.0 => xs.iter_mut().for_each(|x| *x += offset),
        None => {}
    }
}

impl Module for Conv2d {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.convolve(xs, None, None)
    }
}

/// A linear layer `xs·wᵀ + b` whose weight is kept transposed, `(in, out)` and contiguous: gemm
/// multiplies few rows by it (a text encoder's 77 tokens, a cross-attention's context) 2.4–3.4×
/// faster than by candle's transposed view of `(out, in)` (on 2 cores, 77×1024 by 1024×4096 in
/// 4.1 ms against 9.8 ms; 4096 rows by 320×320 alike). On CUDA its bias is added in one pass
/// with what follows it: the residual after an attention or feed-forward layer, or the
/// feed-forward's GEGLU gate.
#[derive(Clone, Debug)]
pub struct Linear {
    /// `(in, out)`.
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// Reads `weight` `(out, in)` and, when `biased`, `bias` `(out)` from `vb`.
    pub fn new(
        vb: VarBuilder,
        channels_in: usize,
        channels_out: usize,
        biased: bool,
    ) -> Result<Self> {
        let weight = vb
            .get((channels_out, channels_in), "weight")?
            .t()?
            .contiguous()?;
        let bias = biased.then(|| vb.get(channels_out, "bias")).transpose()?;
        Ok(Self { weight, bias })
    }

    /// How many features it takes.
    pub fn inputs(&self) -> usize {
        self.weight.dims().first().copied().unwrap_or(0)
    }

    /// `xs` `(…, in)` times the weight, `(…, out)`, without the bias.
    fn product(&self, xs: &Tensor) -> Result<Tensor> {
        let (in_, out) = self.weight.dims2()?;
        let mut dims = xs.dims().to_vec();
        if dims.last() != Some(&in_) {
            candle_core::bail!("a linear layer of {in_} inputs given {:?}", xs.dims());
        }
        let rows = xs.elem_count() / in_.max(1);
        let product = xs.reshape((rows, in_))?.matmul(&self.weight)?;
        if let Some(last) = dims.last_mut() {
            *last = out;
        }
        product.reshape(dims)
    }

    /// `forward(xs) + residual`.
    pub fn forward_residual(&self, xs: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let product = self.product(xs)?;
        #[cfg(feature = "cuda")]
        if let Some(bias) = self.fused_bias(&product) {
            return super::elementwise::row_bias(&product, bias, Some(residual));
        }
        self.biased(product)? + residual
    }

    /// [`geglu`] of `forward(xs)`.
    pub fn forward_geglu(&self, xs: &Tensor) -> Result<Tensor> {
        let product = self.product(xs)?;
        #[cfg(feature = "cuda")]
        if let Some(bias) = self.fused_bias(&product) {
            return super::elementwise::geglu(&product, bias);
        }
        geglu(&self.biased(product)?)
    }

    /// The bias, when a fused kernel adds it to `product` (a CUDA tensor).
    #[cfg(feature = "cuda")]
    fn fused_bias(&self, product: &Tensor) -> Option<&Tensor> {
        self.bias.as_ref().filter(|_| product.device().is_cuda())
    }

    /// `product + bias`, as candle's linear layer adds it.
    fn biased(&self, product: Tensor) -> Result<Tensor> {
        match &self.bias {
            Some(bias) => product.broadcast_add(bias),
            None => Ok(product),
        }
    }
}

impl Module for Linear {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let product = self.product(xs)?;
        #[cfg(feature = "cuda")]
        if let Some(bias) = self.fused_bias(&product) {
            return super::elementwise::row_bias(&product, bias, None);
        }
        self.biased(product)
    }
}

struct BandedConv {
    stride: usize,
    padding: usize,
    epilogue: Epilogue,
}

/// A raw output pointer shared by threads that write disjoint parts of it.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: every thread writes a disjoint region (see the callers).
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

/// A convolution's input `(batch, c_in, h, w)` and weight `(c_out, c_in, kh, kw)` values and
/// shapes.
type ConvOperands<'a> = (&'a [f32], &'a [f32], [usize; 4], [usize; 4]);

fn conv_operands<'a>(
    s1: &'a CpuStorage,
    l1: &Layout,
    s2: &'a CpuStorage,
    l2: &Layout,
) -> Result<ConvOperands<'a>> {
    let input = f32s(s1, l1, "conv2d input")?;
    let weight = f32s(s2, l2, "conv2d weight")?;
    let (batch, c_in, h, w) = l1.shape().dims4()?;
    let (c_out, w_in, kh, kw) = l2.shape().dims4()?;
    if w_in != c_in {
        candle_core::bail!("conv2d: {c_in} input channels but the weight takes {w_in}");
    }
    Ok((input, weight, [batch, c_in, h, w], [c_out, w_in, kh, kw]))
}

/// [`conv_operands`] of a stride-1 convolution with `padding` on every side, and its output's
/// height and width.
fn stride_one_operands<'a>(
    s1: &'a CpuStorage,
    l1: &Layout,
    s2: &'a CpuStorage,
    l2: &Layout,
    padding: usize,
) -> Result<(ConvOperands<'a>, [usize; 2])> {
    let operands = conv_operands(s1, l1, s2, l2)?;
    let ([_, _, h, w], [_, _, kh, kw], p) = (operands.2, operands.3, padding);
    if h + 2 * p < kh || w + 2 * p < kw {
        candle_core::bail!("conv2d: a {h}×{w} input is smaller than the {kh}×{kw} kernel");
    }
    Ok((operands, [h + 2 * p - kh + 1, w + 2 * p - kw + 1]))
}

/// `dst = a·b` for row-major `a` `(m, k)` and `b` `(k, n)`, rows of `dst` `dst_row` apart.
///
/// # Safety
/// `a` and `b` hold `m·k` and `k·n` floats; `dst` is valid for writes of `m` rows of `n`
/// floats, `dst_row` apart, which nobody else touches during the call.
unsafe fn matmul_into(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_row: usize,
    a: &[f32],
    b: &[f32],
) {
    debug_assert!(a.len() >= m * k && b.len() >= k * n);
    // SAFETY: as the caller promises; gemm reads a and b within the sizes above.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_row as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// The values of a contiguous f32 CPU tensor, or an error naming `what` it is.
pub(super) fn f32s<'a>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> Result<&'a [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (CpuStorage::F32(values), Some((start, end))) => Ok(&values[start..end]),
        _ => candle_core::bail!("{what}: a contiguous f32 tensor is expected"),
    }
}

impl CustomOp2 for BandedConv {
    fn name(&self) -> &'static str {
        "autonomy-banded-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (input, weight, [batch, c_in, h, w], [c_out, _, kh, kw]) =
            conv_operands(s1, l1, s2, l2)?;
        let (s, p) = (self.stride, self.padding);
        if h + 2 * p < kh || w + 2 * p < kw {
            candle_core::bail!("conv2d: a {h}×{w} input is smaller than the {kh}×{kw} kernel");
        }
        let oh = (h + 2 * p - kh) / s + 1;
        let ow = (w + 2 * p - kw) / s + 1;
        let patch = c_in * kh * kw;
        let rows = (BAND_FLOATS / (patch * ow)).clamp(1, oh);
        let bands = oh.div_ceil(rows);
        let mut output = vec![0f32; batch * c_out * oh * ow];
        let out = Out(output.as_mut_ptr());
        (0..batch * bands).into_par_iter().for_each(|job| {
            let (b, band) = (job / bands, job % bands);
            let y0 = band * rows;
            let n_rows = rows.min(oh - y0);
            let cols = n_rows * ow;
            let image = &input[b * c_in * h * w..(b + 1) * c_in * h * w];
            let mut col = vec![0f32; patch * cols];
            for ci in 0..c_in {
                let plane = &image[ci * h * w..(ci + 1) * h * w];
                for ky in 0..kh {
                    for kx in 0..kw {
                        let row = &mut col[((ci * kh + ky) * kw + kx) * cols..][..cols];
                        for r in 0..n_rows {
                            let iy = (y0 + r) * s + ky;
                            if iy < p || iy - p >= h {
                                continue;
                            }
                            let src = &plane[(iy - p) * w..(iy - p + 1) * w];
                            let dst = &mut row[r * ow..(r + 1) * ow];
                            if s == 1 {
                                // Output x reads input x + kx − p: one shifted copy.
                                let lo = p.saturating_sub(kx);
                                let hi = (w + p - kx).min(ow);
                                if lo < hi {
                                    dst[lo..hi].copy_from_slice(&src[lo + kx - p..hi + kx - p]);
                                }
                            } else {
                                for (ox, v) in dst.iter_mut().enumerate() {
                                    let ix = ox * s + kx;
                                    if ix >= p && ix - p < w {
                                        *v = src[ix - p];
                                    }
                                }
                            }
                        }
                    }
                }
            }
            let dst = out;
            // SAFETY: `dst` points at `output`, alive until every job returns; this job writes
            // rows y0..y0+n_rows of batch b's c_out planes, which no other job writes.
            unsafe {
                matmul_into(
                    c_out,
                    cols,
                    patch,
                    dst.0.add(b * c_out * oh * ow + y0 * ow),
                    oh * ow,
                    weight,
                    &col,
                );
            }
            // SAFETY: as above.
            unsafe {
                self.epilogue
                    .finish_band(dst, b, c_out, oh * ow, y0 * ow..y0 * ow + cols)
            };
        });
        Ok((CpuStorage::F32(output), Shape::from((batch, c_out, oh, ow))))
    }
}

/// A stride-1 convolution with a large kernel (RealPLKSR's 17×17) as one matrix product per
/// kernel row and band of output rows: each input row is unrolled along x once (`c_in·kw`
/// values per pixel) and read by all `kh` kernel rows, where [`BandedConv`] would unroll
/// `kh` times as much. Each product is pixels × channels out, so that the long side (the
/// pixels) fills the matrix kernel's rows, and accumulates into the output planes directly.
struct RowConv {
    padding: usize,
    epilogue: Epilogue,
}

impl CustomOp2 for RowConv {
    fn name(&self) -> &'static str {
        "autonomy-row-conv2d"
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
        let taps = c_in * kw;
        // Kernel row ky as a (taps × c_out) matrix: row ci·kw + kx holds every channel's tap.
        let mut by_row = vec![0f32; kh * taps * c_out];
        for (co, kernels) in weight.chunks_exact(c_in * kh * kw).enumerate() {
            for (ci, kernel) in kernels.chunks_exact(kh * kw).enumerate() {
                for (ky, row) in kernel.chunks_exact(kw).enumerate() {
                    for (kx, &tap) in row.iter().enumerate() {
                        by_row[(ky * taps + ci * kw + kx) * c_out + co] = tap;
                    }
                }
            }
        }
        // A band unrolls its output rows plus the kernel's height less one.
        let rows = (ROW_BAND_FLOATS / (taps * ow)).clamp(1, oh);
        let bands = oh.div_ceil(rows);
        let mut output = vec![0f32; batch * c_out * oh * ow];
        let out = Out(output.as_mut_ptr());
        (0..batch * bands).into_par_iter().for_each(|job| {
            let (b, band) = (job / bands, job % bands);
            let y0 = band * rows;
            let n_rows = rows.min(oh - y0);
            let image = &input[b * c_in * h * w..(b + 1) * c_in * h * w];
            // Tap-major (each tap's pixels contiguous, as the product packs them):
            // unrolled[(ci·kw + kx)·span + r·ow + ox] = x[ci, y0 + r − p, ox + kx − p], zero
            // outside the image.
            let in_rows = n_rows + kh - 1;
            let span = in_rows * ow;
            with_scratch(taps * span, 0, |unrolled, _| {
                for (tap, row) in unrolled.chunks_exact_mut(span).enumerate() {
                    let (ci, kx) = (tap / kw, tap % kw);
                    // Output x reads input x + kx − p: inside the image for x in lo..hi.
                    let lo = p.saturating_sub(kx).min(ow);
                    let hi = (w + p).saturating_sub(kx).clamp(lo, ow);
                    for (r, pixels) in row.chunks_exact_mut(ow).enumerate() {
                        match (y0 + r).checked_sub(p).filter(|&iy| iy < h) {
                            Some(iy) => {
                                pixels[..lo].fill(0.0);
                                if lo < hi {
                                    let src = &image[(ci * h + iy) * w..][..w];
                                    pixels[lo..hi].copy_from_slice(&src[lo + kx - p..hi + kx - p]);
                                }
                                pixels[hi..].fill(0.0);
                            }
                            None => pixels.fill(0.0),
                        }
                    }
                }
                for ky in 0..kh {
                    // SAFETY: `out` points at `output`, alive until every job returns; this job
                    // writes rows y0..y0+n_rows of batch b's c_out planes (pixel i of channel
                    // co at co·oh·ow + i), which no other job writes. gemm reads n_rows·ow
                    // pixels of each tap's row from ky·ow on (within its span) and taps ×
                    // c_out weights.
                    unsafe {
                        gemm::gemm(
                            n_rows * ow,
                            c_out,
                            taps,
                            out.0.add(b * c_out * oh * ow + y0 * ow),
                            (oh * ow) as isize,
                            1,
                            ky > 0,
                            unrolled[ky * ow..].as_ptr(),
                            span as isize,
                            1,
                            by_row[ky * taps * c_out..].as_ptr(),
                            1,
                            c_out as isize,
                            1.0,
                            1.0,
                            false,
                            false,
                            false,
                            gemm::Parallelism::None,
                        );
                    }
                }
            });
            // SAFETY: as for the products above.
            let rows = y0 * ow..(y0 + n_rows) * ow;
            unsafe { self.epilogue.finish_band(out, b, c_out, oh * ow, rows) };
        });
        Ok((CpuStorage::F32(output), Shape::from((batch, c_out, oh, ow))))
    }
}

/// A 3×3, stride 1, padding 1 convolution by Winograd's minimal filtering F(2×2, 3×3)
/// (Lavin & Gray, 2016): each 4×4 input tile `d` becomes `Bᵀ·d·B`, each kernel `g` becomes
/// `G·g·Gᵀ`, the 16 element positions are 16 matrix products over channels, and `Aᵀ·m·A`
/// turns each product tile into 2×2 outputs, finished by the epilogue as they are written.
struct WinogradConv {
    epilogue: Epilogue,
}

thread_local! {
    /// This thread's convolution buffers (Winograd's transformed tiles and their products,
    /// [`RowConv`]'s unrolled rows), kept between calls so that a band neither allocates nor
    /// zeroes them: each band overwrites what it reads.
    static SCRATCH: RefCell<[Vec<f32>; 2]> = const { RefCell::new([Vec::new(), Vec::new()]) };
}

/// `G·g·Gᵀ` of each 3×3 kernel, as 16 matrices `(c_out, c_in)`, element `4·i + j` first.
fn winograd_kernels(weight: &[f32], c_out: usize, c_in: usize) -> Vec<f32> {
    let mut u = vec![0f32; 16 * c_out * c_in];
    for (o_i, g) in weight.chunks_exact(9).enumerate() {
        // G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]]; rows of G·g first.
        let mut gg = [[0f32; 3]; 4];
        for c in 0..3 {
            let (a, b, d) = (g[c], g[3 + c], g[6 + c]);
            gg[0][c] = a;
            gg[1][c] = 0.5 * (a + b + d);
            gg[2][c] = 0.5 * (a - b + d);
            gg[3][c] = d;
        }
        for (i, row) in gg.iter().enumerate() {
            let (a, b, d) = (row[0], row[1], row[2]);
            let out = [a, 0.5 * (a + b + d), 0.5 * (a - b + d), d];
            for (j, value) in out.into_iter().enumerate() {
                u[(4 * i + j) * c_out * c_in + o_i] = value;
            }
        }
    }
    u
}

/// One job's share of a Winograd convolution: rows of tiles `ty0..ty0 + rows` of an `h`×`w`
/// image, `tiles_x` tiles to a row.
#[derive(Clone, Copy)]
struct TileBand {
    h: usize,
    w: usize,
    tiles_x: usize,
    ty0: usize,
    rows: usize,
}

/// Where a band's transformed input channels go: channels `first..` of the `of` channels each
/// element's matrix holds.
#[derive(Clone, Copy)]
struct Channels {
    first: usize,
    of: usize,
}

on_widest_vectors! {
    /// `Bᵀ·d·B` of every tile of `band` in each of `image`'s `c_in` planes into
    /// `v[k][into.first + ci][t]` (element `k`, channel `ci`, tile `t` of the band; `into.of`
    /// channels to each `k`).
    fn winograd_input => winograd_input_any(image: &[f32], c_in: usize, band: TileBand, v: &mut [f32], into: Channels)
}

#[inline(always)]
fn winograd_input_any(image: &[f32], c_in: usize, band: TileBand, v: &mut [f32], into: Channels) {
    let TileBand {
        h,
        w,
        tiles_x,
        ty0,
        rows,
    } = band;
    let tiles = rows * tiles_x;
    let split = || [vec![0f32; tiles_x + 1], vec![0f32; tiles_x + 1]];
    // Input row y split into slot (y + 1) mod 4: tile row ty reads rows 2·ty − 1 … 2·ty + 2,
    // the first two of them already split for the tile row above.
    let mut slots = [split(), split(), split(), split()];
    let mut scratch = split();
    for ci in 0..c_in {
        let plane = &image[ci * h * w..(ci + 1) * h * w];
        for row in 0..rows {
            let ty = ty0 + row;
            let fresh = if row == 0 { 0 } else { 2 };
            for r in fresh..4 {
                split_row(
                    plane,
                    w,
                    (2 * ty + r).checked_sub(1),
                    &mut slots[(2 * ty + r) % 4],
                );
            }
            let input_rows = std::array::from_fn(|r| &slots[(2 * ty + r) % 4]);
            let at = |k: usize| (k * into.of + into.first + ci) * tiles + row * tiles_x;
            transform_input_row(input_rows, tiles_x, v, at, &mut scratch);
        }
    }
}

on_widest_vectors! {
    /// `Aᵀ·m·A` of every product tile of `band` (`m[k][co][t]`) into `planes[co]` (the band's
    /// output rows of channel `co` of image `b`), finished by `epilogue`.
    fn winograd_output => winograd_output_any(m: &[f32], band: TileBand, b: usize, epilogue: &Epilogue, planes: &mut [&mut [f32]])
}

#[inline(always)]
fn winograd_output_any(
    m: &[f32],
    band: TileBand,
    b: usize,
    epilogue: &Epilogue,
    planes: &mut [&mut [f32]],
) {
    let TileBand {
        w, tiles_x, rows, ..
    } = band;
    let (tiles, c_out) = (rows * tiles_x, planes.len());
    let mut scratch: [Vec<f32>; 4] = std::array::from_fn(|_| vec![0f32; tiles_x]);
    for (co, plane) in planes.iter_mut().enumerate() {
        let finish = epilogue.of(b, co, c_out);
        let mut lines = plane.chunks_exact_mut(w);
        for row in 0..rows {
            let at = |k: usize| (k * c_out + co) * tiles + row * tiles_x;
            let out_rows = [lines.next(), lines.next()];
            transform_output_row(m, at, tiles_x, out_rows, &mut scratch, finish);
        }
    }
}

/// Input row `y` of `plane` (`w` wide; zeros when `y` is outside the image) split into the
/// even and odd columns of the row padded by one zero on the left: `even[k]` is column
/// `2k − 1`, `odd[k]` column `2k` (zeros past the edges), `tiles + 1` of each.
#[inline(always)]
fn split_row(plane: &[f32], w: usize, y: Option<usize>, [even, odd]: &mut [Vec<f32>; 2]) {
    let Some(row) = y.and_then(|y| plane.get(y * w..(y + 1) * w)) else {
        even.fill(0.0);
        odd.fill(0.0);
        return;
    };
    let (pairs, rest) = row.as_chunks::<2>();
    for ((&[a, b], odd), even) in pairs.iter().zip(&mut odd[..]).zip(&mut even[1..]) {
        *odd = a;
        *even = b;
    }
    let k = pairs.len();
    even[0] = 0.0;
    // Past the right edge: an odd width's last column, then zeros.
    odd[k..].fill(0.0);
    even[k + 1..].fill(0.0);
    if let [last] = rest {
        odd[k] = *last;
    }
}

/// `out = a − b`, element by element.
#[inline(always)]
fn sub_into(out: &mut [f32], a: &[f32], b: &[f32]) {
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = x - y;
    }
}

/// `out = a + b`, element by element.
#[inline(always)]
fn add_into(out: &mut [f32], a: &[f32], b: &[f32]) {
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = x + y;
    }
}

/// `Bᵀ·d·B` of a row of `tiles` tiles, `rows[r]` being input row `2·ty − 1 + r` from
/// [`split_row`] (tile `t` of a row is `(even[t], odd[t], even[t+1], odd[t+1])`): element
/// `4·i + j` of every tile goes to `v[at(4·i + j)..][..tiles]`. Every loop runs along the row
/// of tiles, so it vectorises.
#[inline(always)]
fn transform_input_row(
    rows: [&[Vec<f32>; 2]; 4],
    tiles: usize,
    v: &mut [f32],
    at: impl Fn(usize) -> usize,
    scratch: &mut [Vec<f32>; 2],
) {
    // Row i of Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]]: rows a ± b.
    for (i, (a, b, add)) in [(0, 2, false), (1, 2, true), (2, 1, false), (1, 3, false)]
        .into_iter()
        .enumerate()
    {
        for (parity, out) in scratch.iter_mut().enumerate() {
            let (x, y) = (&rows[a][parity], &rows[b][parity]);
            if add {
                add_into(out, x, y);
            } else {
                sub_into(out, x, y);
            }
        }
        // Then ·B along each tile's row: (d0 − d2, d1 + d2, d2 − d1, d1 − d3).
        let [even, odd] = &*scratch;
        let (e0, e1, o0, o1) = (&even[..tiles], &even[1..], &odd[..tiles], &odd[1..]);
        sub_into(&mut v[at(4 * i)..][..tiles], e0, e1);
        add_into(&mut v[at(4 * i + 1)..][..tiles], o0, e1);
        sub_into(&mut v[at(4 * i + 2)..][..tiles], e1, o0);
        sub_into(&mut v[at(4 * i + 3)..][..tiles], o0, o1);
    }
}

/// `Aᵀ·m·A` of a row of `tiles` product tiles (element `4·i + j` of every tile at
/// `m[at(4·i + j)..][..tiles]`) into the two output rows they cover (`None` past the bottom
/// edge), each `w` wide, each then finished with `(offset, slope)` as [`finish_any`] does.
#[inline(always)]
fn transform_output_row(
    m: &[f32],
    at: impl Fn(usize) -> usize,
    tiles: usize,
    out_rows: [Option<&mut [f32]>; 2],
    scratch: &mut [Vec<f32>; 4],
    (offset, slope): (f32, Option<f32>),
) {
    let element = |k: usize| &m[at(k)..][..tiles];
    for (dy, out) in out_rows.into_iter().enumerate() {
        let Some(out) = out else { continue };
        // Row dy of Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]], for each column j of the tiles.
        for (j, r) in scratch.iter_mut().enumerate() {
            let (m0, m1, m2, m3) = (element(j), element(4 + j), element(8 + j), element(12 + j));
            if dy == 0 {
                for (((r, &a), &b), &c) in r.iter_mut().zip(m0).zip(m1).zip(m2) {
                    *r = a + b + c;
                }
            } else {
                for (((r, &a), &b), &c) in r.iter_mut().zip(m1).zip(m2).zip(m3) {
                    *r = a - b - c;
                }
            }
        }
        // Then ·A along the row: x = 2t gets r0 + r1 + r2, x = 2t + 1 gets r1 − r2 − r3.
        let [r0, r1, r2, r3] = &*scratch;
        let mut pairs = out.chunks_exact_mut(2);
        for (t, pair) in (&mut pairs).enumerate() {
            pair[0] = r0[t] + r1[t] + r2[t];
            pair[1] = r1[t] - r2[t] - r3[t];
        }
        if let [last] = pairs.into_remainder() {
            let t = tiles - 1;
            *last = r0[t] + r1[t] + r2[t];
        }
        finish_any(out, offset, slope);
    }
}

/// `buffer`'s first `len` floats, grown (never cleared) to hold them.
fn grown(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    &mut buffer[..len]
}

/// `run(v, m)` on this thread's convolution buffers of `len_v` and `len_m` floats (contents
/// unspecified), or on fresh ones should the thread's be in use.
fn with_scratch<R>(len_v: usize, len_m: usize, run: impl FnOnce(&mut [f32], &mut [f32]) -> R) -> R {
    SCRATCH.with(|buffers| {
        let mut own = <[Vec<f32>; 2]>::default();
        let mut borrowed = buffers.try_borrow_mut();
        let [v, m] = match borrowed.as_deref_mut() {
            Ok(kept) => kept,
            Err(_) => &mut own,
        };
        run(grown(v, len_v), grown(m, len_m))
    })
}

/// How Winograd convolutions of `batch` images of `h`×`w` cut them into bands: rows of tiles
/// per band and bands per image, for `floats_per_tile` floats of buffers per tile.
#[derive(Clone, Copy)]
struct Banding {
    h: usize,
    w: usize,
    tiles_x: usize,
    tiles_y: usize,
    rows: usize,
    bands: usize,
}

impl Banding {
    /// Bands of about [`BAND_TILES`] tiles, fewer when the buffers would pass
    /// [`TILE_FLOATS`], and enough of them to keep every thread busy.
    fn new(batch: usize, h: usize, w: usize, floats_per_tile: usize) -> Self {
        let (tiles_y, tiles_x) = (h.div_ceil(2), w.div_ceil(2));
        let per_image = (2 * rayon::current_num_threads()).div_ceil(batch);
        let rows = BAND_TILES
            .div_ceil(tiles_x)
            .min(TILE_FLOATS / (floats_per_tile * tiles_x))
            .min(tiles_y.div_ceil(per_image))
            .clamp(1, tiles_y);
        Self {
            h,
            w,
            tiles_x,
            tiles_y,
            rows,
            bands: tiles_y.div_ceil(rows),
        }
    }

    /// Job `job`'s image and band.
    fn job(&self, job: usize) -> (usize, TileBand) {
        let ty0 = (job % self.bands) * self.rows;
        let band = TileBand {
            h: self.h,
            w: self.w,
            tiles_x: self.tiles_x,
            ty0,
            rows: self.rows.min(self.tiles_y - ty0),
        };
        (job / self.bands, band)
    }
}

/// The rows `band` writes of each of image `b`'s `c_out` planes in `output`
/// `(batch, c_out, h, w)`.
///
/// # Safety
/// `output` is valid for the whole tensor for as long as the slices live, and no one else
/// touches these rows meanwhile.
unsafe fn band_planes<'a>(
    output: Out,
    b: usize,
    c_out: usize,
    band: TileBand,
) -> Vec<&'a mut [f32]> {
    let TileBand {
        h, w, ty0, rows, ..
    } = band;
    let (y0, y1) = (2 * ty0, (2 * (ty0 + rows)).min(h));
    (0..c_out)
        .map(|co| {
            // SAFETY: as the caller promises; rows y0..y1 are contiguous within a plane.
            unsafe {
                std::slice::from_raw_parts_mut(
                    output.0.add(((b * c_out + co) * h + y0) * w),
                    (y1 - y0) * w,
                )
            }
        })
        .collect()
}

/// The products `m[k] = u[k]·v[k]` for the 16 elements, `u[k]` `(c_out, c_in)` and `v[k]` the
/// first `c_in` of `of` channels of `tiles` tiles.
fn winograd_products(u: &[f32], v: &[f32], m: &mut [f32], [c_out, c_in, of, tiles]: [usize; 4]) {
    for k in 0..16 {
        let dst = m[k * c_out * tiles..][..c_out * tiles].as_mut_ptr();
        // SAFETY: dst holds c_out×tiles floats of `m`, borrowed mutably here.
        unsafe {
            matmul_into(
                c_out,
                tiles,
                c_in,
                dst,
                tiles,
                &u[k * c_out * c_in..(k + 1) * c_out * c_in],
                &v[k * of * tiles..][..c_in * tiles],
            );
        }
    }
}

impl CustomOp2 for WinogradConv {
    fn name(&self) -> &'static str {
        "autonomy-winograd-conv3x3"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (input, weight, [batch, c_in, h, w], [c_out, _, kh, kw]) =
            conv_operands(s1, l1, s2, l2)?;
        if (kh, kw) != (3, 3) {
            candle_core::bail!("winograd conv2d: a 3×3 kernel is expected, got {kh}×{kw}");
        }
        let u = winograd_kernels(weight, c_out, c_in);
        let banding = Banding::new(batch, h, w, 16 * (c_in + c_out));
        let mut output = vec![0f32; batch * c_out * h * w];
        let out = Out(output.as_mut_ptr());
        (0..batch * banding.bands).into_par_iter().for_each(|job| {
            let (b, band) = banding.job(job);
            let tiles = band.rows * band.tiles_x;
            // SAFETY: `output` outlives every job, and this job alone writes its band's rows.
            let mut planes = unsafe { band_planes(out, b, c_out, band) };
            with_scratch(16 * c_in * tiles, 16 * c_out * tiles, |v, m| {
                let image = &input[b * c_in * h * w..(b + 1) * c_in * h * w];
                winograd_input(image, c_in, band, v, Channels { first: 0, of: c_in });
                winograd_products(&u, v, m, [c_out, c_in, c_in, tiles]);
                winograd_output(m, band, b, &self.epilogue, &mut planes);
            });
        });
        Ok((CpuStorage::F32(output), Shape::from((batch, c_out, h, w))))
    }
}

/// Buffers that the dense blocks of one forward pass share on the CPU (the transformed inputs
/// and an intermediate output), so that each block neither allocates nor zeroes them; freed
/// when dropped.
#[derive(Default)]
pub struct DenseBuffers(RefCell<[Vec<f32>; 2]>);

/// ESRGAN's dense block: five 3×3 convolutions (`convs`), each reading the block's input and
/// every earlier convolution's output (their concatenation), the outputs of all but the last
/// through a leaky ReLU of `slope`; returns the last one's output. On the CPU's f32 tensors
/// each of those inputs is transformed for Winograd once and kept for every later
/// convolution (in `buffers`), and nothing is concatenated; elsewhere (and for images too
/// small for Winograd) candle's `cat` and [`Conv2d::forward_leaky`].
pub fn dense_block(
    xs: &Tensor,
    convs: &[Conv2d],
    slope: f32,
    buffers: &DenseBuffers,
) -> Result<Tensor> {
    let (_, _, h, w) = xs.dims4()?;
    let mut winograd = xs.device().is_cpu() && xs.dtype() == DType::F32;
    for conv in convs {
        winograd &= conv.takes_winograd(h, w)?;
    }
    if winograd {
        return xs.contiguous()?.apply_op1_no_bwd(&DenseWinograd {
            convs,
            slope,
            buffers,
        });
    }
    let Some((last, earlier)) = convs.split_last() else {
        candle_core::bail!("dense block: no convolutions");
    };
    let mut seen = vec![xs.clone()];
    for conv in earlier {
        seen.push(conv.forward_leaky(&Tensor::cat(&seen, 1)?, &Slopes::Uniform(slope))?);
    }
    last.forward(&Tensor::cat(&seen, 1)?)
}

/// [`dense_block`] on the CPU.
struct DenseWinograd<'a> {
    convs: &'a [Conv2d],
    slope: f32,
    buffers: &'a DenseBuffers,
}

/// One convolution of a dense block: its Winograd kernels, epilogue and channels in and out.
struct DenseStage {
    u: Vec<f32>,
    epilogue: Epilogue,
    c_in: usize,
    c_out: usize,
}

impl CustomOp1 for DenseWinograd<'_> {
    fn name(&self) -> &'static str {
        "autonomy-dense-block"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let input = f32s(storage, layout, "dense block input")?;
        let (batch, c0, h, w) = layout.shape().dims4()?;
        let mut stages = Vec::with_capacity(self.convs.len());
        // Channels of the inputs so far: the block's, then each convolution's but the last.
        let mut seen = c0;
        for (j, conv) in self.convs.iter().enumerate() {
            let (c_out, c_in, _, _) = conv.weight.dims4()?;
            if c_in != seen {
                candle_core::bail!(
                    "dense block: convolution {} reads {c_in} channels, but {seen} come before it",
                    j + 1
                );
            }
            let last = j + 1 == self.convs.len();
            let weight = conv.weight.flatten_all()?.to_vec1::<f32>()?;
            stages.push(DenseStage {
                u: winograd_kernels(&weight, c_out, c_in),
                epilogue: Epilogue {
                    offsets: conv.offsets(batch, None)?,
                    slopes: (!last).then(|| vec![self.slope; c_out]),
                },
                c_in,
                c_out,
            });
            if !last {
                seen += c_out;
            }
        }
        let widest = stages.iter().map(|stage| stage.c_out).max().unwrap_or(0);
        let banding = Banding::new(batch, h, w, 16 * (seen + widest));
        // Every band's transformed inputs, kept for the whole block: 16 × seen × its tiles.
        let per_band = 16 * seen * banding.rows * banding.tiles_x;
        let mut own = <[Vec<f32>; 2]>::default();
        let mut borrowed = self.buffers.0.try_borrow_mut();
        let [v, part] = match borrowed.as_deref_mut() {
            Ok(kept) => kept,
            Err(_) => &mut own,
        };
        let v = grown(v, batch * banding.bands * per_band);
        let transform = |v: &mut [f32], image: &[f32], channels: usize, first: usize| {
            v.par_chunks_mut(per_band).enumerate().for_each(|(job, v)| {
                let (b, band) = banding.job(job);
                let image = &image[b * channels * h * w..(b + 1) * channels * h * w];
                winograd_input(image, channels, band, v, Channels { first, of: seen });
            });
        };
        transform(v, input, c0, 0);
        let mut first = c0;
        let mut output = Vec::new();
        for (j, stage) in stages.iter().enumerate() {
            let c_out = stage.c_out;
            let last = j + 1 == stages.len();
            // Earlier outputs live only until they are transformed: one reused buffer.
            let written = if last {
                output = vec![0f32; batch * c_out * h * w];
                &mut output[..]
            } else {
                grown(part, batch * c_out * h * w)
            };
            let out = Out(written.as_mut_ptr());
            v.par_chunks(per_band).enumerate().for_each(|(job, v)| {
                let (b, band) = banding.job(job);
                let tiles = band.rows * band.tiles_x;
                // SAFETY: `output` outlives every job, and this job alone writes its band's
                // rows.
                let mut planes = unsafe { band_planes(out, b, c_out, band) };
                with_scratch(0, 16 * c_out * tiles, |_, m| {
                    winograd_products(&stage.u, v, m, [c_out, stage.c_in, seen, tiles]);
                    winograd_output(m, band, b, &stage.epilogue, &mut planes);
                });
            });
            if !last {
                transform(v, part, c_out, first);
                first += c_out;
            }
        }
        let c_out = stages.last().map_or(0, |stage| stage.c_out);
        Ok((CpuStorage::F32(output), Shape::from((batch, c_out, h, w))))
    }
}

/// `softmax(q·kᵀ·scale)·v` for `(batch·heads, tokens, head_dim)` tensors.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if super::flash_attention::takes(q, k, v, 1) {
        return super::flash_attention::attention(q, k, v, 1, scale);
    }
    if q.device().is_cpu() && q.dtype() == DType::F32 {
        q.contiguous()?.apply_op3_no_bwd(
            &k.contiguous()?,
            &v.contiguous()?,
            &FusedAttention {
                scale: scale as f32,
                bias: None,
            },
        )
    } else {
        // In the model's dtype, as PyTorch's scaled-dot-product attention runs f16: the
        // products accumulate in f32 (cuBLAS) and so does the softmax (candle's kernel).
        let scores = (q * scale)?.matmul(&k.t()?)?;
        candle_nn::ops::softmax_last_dim(&scores)?.matmul(v)
    }
}

/// [`attention`] with `bias` `(p, tokens, key tokens)` added to the scaled scores, group `j`
/// of the `batch·heads` taking `bias[j % p]`: a window's relative position bias per head, or
/// that bias plus each window's mask of shifted windows (`p` = windows × heads).
pub fn attention_biased(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    bias: &Tensor,
) -> Result<Tensor> {
    if q.device().is_cpu() && q.dtype() == DType::F32 {
        return q.contiguous()?.apply_op3_no_bwd(
            &k.contiguous()?,
            &v.contiguous()?,
            &FusedAttention {
                scale: scale as f32,
                bias: Some(bias.to_dtype(DType::F32)?.contiguous()?),
            },
        );
    }
    let (groups, n, _) = q.dims3()?;
    let (p, _, m) = bias.dims3()?;
    let scores = (q * scale)?
        .matmul(&k.t()?)?
        .reshape((groups / p.max(1), p, n, m))?
        .broadcast_add(&bias.to_dtype(q.dtype())?.unsqueeze(0)?)?
        .reshape((groups, n, m))?;
    candle_nn::ops::softmax_last_dim(&scores)?.matmul(v)
}

struct FusedAttention {
    scale: f32,
    /// What [`attention_biased`] adds to the scores, `(p, n, m)`.
    bias: Option<Tensor>,
}

impl CustomOp3 for FusedAttention {
    fn name(&self) -> &'static str {
        "autonomy-fused-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let q = f32s(s1, l1, "attention queries")?;
        let k = f32s(s2, l2, "attention keys")?;
        let v = f32s(s3, l3, "attention values")?;
        let (heads, n, d) = l1.shape().dims3()?;
        let (k_heads, m, k_d) = l2.shape().dims3()?;
        let (v_heads, v_m, dv) = l3.shape().dims3()?;
        if (k_heads, k_d) != (heads, d) || (v_heads, v_m) != (heads, m) {
            candle_core::bail!(
                "attention: queries {:?}, keys {:?} and values {:?} do not fit",
                l1.dims(),
                l2.dims(),
                l3.dims()
            );
        }
        let guard = self.bias.as_ref().map(|bias| bias.storage_and_layout());
        let bias = match &guard {
            None => None,
            Some((storage, layout)) => {
                let candle_core::Storage::Cpu(storage) = &**storage else {
                    candle_core::bail!("attention: the bias is not on the CPU");
                };
                let (p, b_n, b_m) = layout.shape().dims3()?;
                if (b_n, b_m) != (n, m) || p == 0 || heads % p != 0 {
                    candle_core::bail!(
                        "attention: a bias {:?} does not fit {heads} groups of {n}×{m} scores",
                        layout.dims()
                    );
                }
                Some((f32s(storage, layout, "attention bias")?, p))
            }
        };
        let blocks = n.div_ceil(QUERY_BLOCK);
        let mut output = vec![0f32; heads * n * dv];
        let out = Out(output.as_mut_ptr());
        (0..heads * blocks).into_par_iter().for_each(|job| {
            let (head, block) = (job / blocks, job % blocks);
            let q0 = block * QUERY_BLOCK;
            let rows = QUERY_BLOCK.min(n - q0);
            let q = &q[(head * n + q0) * d..(head * n + q0 + rows) * d];
            let k = &k[head * m * d..(head + 1) * m * d];
            let v = &v[head * m * dv..(head + 1) * m * dv];
            let mut scores = match bias {
                Some((bias, p)) => {
                    let at = ((head % p) * n + q0) * m;
                    bias[at..at + rows * m].to_vec()
                }
                None => vec![0f32; rows * m],
            };
            // SAFETY: `scores` holds rows×m floats; q is rows×d and k m×d row-major slices.
            unsafe {
                gemm::gemm(
                    rows,
                    m,
                    d,
                    scores.as_mut_ptr(),
                    1,
                    m as isize,
                    bias.is_some(),
                    q.as_ptr(),
                    1,
                    d as isize,
                    k.as_ptr(),
                    d as isize,
                    1,
                    1.0,
                    self.scale,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            let mut sums = vec![0f32; rows];
            exp_rows(&mut scores, m, &mut sums);
            let dst = out;
            // SAFETY: this job alone writes output rows q0..q0+rows of `head` (rows×dv floats
            // at that offset inside `output`, alive until every job returns).
            unsafe {
                let at = dst.0.add((head * n + q0) * dv);
                gemm::gemm(
                    rows,
                    dv,
                    m,
                    at,
                    1,
                    dv as isize,
                    false,
                    scores.as_ptr(),
                    1,
                    m as isize,
                    v.as_ptr(),
                    1,
                    dv as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
                for (r, sum) in sums.iter().enumerate() {
                    let row = std::slice::from_raw_parts_mut(at.add(r * dv), dv);
                    row.iter_mut().for_each(|x| *x /= sum);
                }
            }
        });
        Ok((CpuStorage::F32(output), Shape::from((heads, n, dv))))
    }
}

/// The GEGLU gate of `h` `(…, 2·d)`: its first half times the exact (erf) GELU of its second
/// half, `(…, d)`.
pub fn geglu(h: &Tensor) -> Result<Tensor> {
    if h.device().is_cpu() && h.dtype() == DType::F32 {
        h.contiguous()?.apply_op1_no_bwd(&Geglu)
    } else {
        let half = h.dim(D::Minus1)? / 2;
        h.narrow(D::Minus1, 0, half)? * h.narrow(D::Minus1, half, half)?.gelu_erf()?
    }
}

struct Geglu;

impl CustomOp1 for Geglu {
    fn name(&self) -> &'static str {
        "autonomy-geglu"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let h = f32s(storage, layout, "geglu input")?;
        let mut dims = layout.dims().to_vec();
        let width = dims.last().copied().unwrap_or(0);
        if width % 2 != 0 {
            candle_core::bail!("geglu: the last dimension ({width}) is not even");
        }
        let half = width / 2;
        if let Some(last) = dims.last_mut() {
            *last = half;
        }
        let mut output = vec![0f32; h.len() / 2];
        if half > 0 {
            output
                .par_chunks_mut(half * 64)
                .zip(h.par_chunks(width * 64))
                .for_each(|(out, rows)| geglu_rows(rows, out, half));
        }
        Ok((CpuStorage::F32(output), Shape::from(dims)))
    }
}

on_widest_vectors! {
    /// [`Geglu`] on whole rows, on the widest vectors the CPU has.
    fn geglu_rows => geglu_rows_any(rows: &[f32], out: &mut [f32], half: usize)
}

#[inline(always)]
fn geglu_rows_any(rows: &[f32], out: &mut [f32], half: usize) {
    for (row, out) in rows.chunks_exact(2 * half).zip(out.chunks_exact_mut(half)) {
        let (a, b) = row.split_at(half);
        for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
            *o = a * 0.5 * b * (1.0 + fast_erf(b * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

/// The exact (erf) GELU of `xs`: on the CPU in f32 through a vectorised erf (within 1.5e-7;
/// several times faster than candle's, which takes one float at a time), candle's elsewhere.
pub fn gelu_erf(xs: &Tensor) -> Result<Tensor> {
    if xs.device().is_cpu() && xs.dtype() == DType::F32 {
        xs.contiguous()?.apply_op1_no_bwd(&Unary::GeluErf)
    } else {
        xs.gelu_erf()
    }
}

/// An element-wise function the CPU applies in one vectorised pass over f32 values.
#[derive(Clone, Copy)]
enum Unary {
    /// The exact GELU ([`gelu_erf`]).
    GeluErf,
    /// Mish ([`mish`]).
    Mish,
    /// SiLU ([`silu`]).
    Silu,
}

impl CustomOp1 for Unary {
    fn name(&self) -> &'static str {
        match self {
            Self::GeluErf => "autonomy-gelu-erf",
            Self::Mish => "autonomy-mish",
            Self::Silu => "autonomy-silu",
        }
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let xs = f32s(storage, layout, self.name())?;
        let mut output = vec![0f32; xs.len()];
        output
            .par_chunks_mut(1 << 14)
            .zip(xs.par_chunks(1 << 14))
            .for_each(|(out, xs)| match self {
                Self::GeluErf => gelu_rows(xs, out),
                Self::Mish => mish_rows(xs, out),
                Self::Silu => silu_rows(xs, out),
            });
        Ok((CpuStorage::F32(output), layout.shape().clone()))
    }
}

on_widest_vectors! {
    /// [`Unary::GeluErf`] on a slice, on the widest vectors the CPU has.
    fn gelu_rows => gelu_rows_any(xs: &[f32], out: &mut [f32])
}

#[inline(always)]
fn gelu_rows_any(xs: &[f32], out: &mut [f32]) {
    for (o, &x) in out.iter_mut().zip(xs) {
        *o = gelu_of(x);
    }
}

/// The exact GELU of `x` through [`fast_erf`].
#[inline(always)]
fn gelu_of(x: f32) -> f32 {
    x * 0.5 * (1.0 + fast_erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// Mish, `x·tanh(softplus(x))` (RealPLKSR's channel mixers): on the CPU in f32 one vectorised
/// pass through a polynomial exp (within 2e-6 relative), candle's operations elsewhere.
pub fn mish(xs: &Tensor) -> Result<Tensor> {
    if xs.device().is_cpu() && xs.dtype() == DType::F32 {
        return xs.contiguous()?.apply_op1_no_bwd(&Unary::Mish);
    }
    // tanh(ln(1 + n)) = n(n + 2) / (n(n + 2) + 2) with n = eˣ, exactly 1 in f32 past x = 20.
    let n = xs.minimum(20.0)?.exp()?;
    let p = (&n * (&n + 2.0)?)?;
    xs * (&p / (&p + 2.0)?)?
}

on_widest_vectors! {
    /// [`Unary::Mish`] on a slice, on the widest vectors the CPU has.
    fn mish_rows => mish_rows_any(xs: &[f32], out: &mut [f32])
}

#[inline(always)]
fn mish_rows_any(xs: &[f32], out: &mut [f32]) {
    for (o, &x) in out.iter_mut().zip(xs) {
        // With t = e^−|x|: tanh(softplus(x)) is (1 + 2t) / (1 + 2t + 2t²) for x ≥ 0 (n = 1/t
        // above) and t(t + 2) / (t(t + 2) + 2) below, neither overflowing.
        let t = fast_exp(-x.abs());
        let (top, rest) = if x >= 0.0 {
            (1.0 + 2.0 * t, 2.0 * t * t)
        } else {
            (t * (t + 2.0), 2.0)
        };
        *o = x * top / (top + rest);
    }
}

/// SiLU, `x·σ(x)` (SPAN's blocks): on the CPU in f32 one vectorised pass through a
/// polynomial exp, candle's elsewhere.
pub fn silu(xs: &Tensor) -> Result<Tensor> {
    if xs.device().is_cpu() && xs.dtype() == DType::F32 {
        return xs.contiguous()?.apply_op1_no_bwd(&Unary::Silu);
    }
    xs.silu()
}

on_widest_vectors! {
    /// [`Unary::Silu`] on a slice, on the widest vectors the CPU has.
    fn silu_rows => silu_rows_any(xs: &[f32], out: &mut [f32])
}

#[inline(always)]
fn silu_rows_any(xs: &[f32], out: &mut [f32]) {
    for (o, &x) in out.iter_mut().zip(xs) {
        *o = x * sigmoid_of(x);
    }
}

/// `xs·σ(gates)` for two tensors of one shape (RealPLKSR's element-wise attention): on the CPU
/// in f32 one vectorised pass through a polynomial exp, candle's operations elsewhere.
pub fn sigmoid_gate(xs: &Tensor, gates: &Tensor) -> Result<Tensor> {
    if let Some(xs) = fusable(xs, gates)? {
        return xs.apply_op2_no_bwd(&gates.contiguous()?, &Gate::Sigmoid);
    }
    xs * candle_nn::ops::sigmoid(gates)?
}

/// `(xs + gates)·(σ(gates) − ½)` for two tensors of one shape (SPAN's blocks, `gates` the
/// block's last convolution and `xs` its input): on the CPU in f32 one vectorised pass,
/// candle's operations elsewhere.
pub fn centred_gate(xs: &Tensor, gates: &Tensor) -> Result<Tensor> {
    if let Some(xs) = fusable(xs, gates)? {
        return xs.apply_op2_no_bwd(&gates.contiguous()?, &Gate::Centred);
    }
    (xs + gates)? * (candle_nn::ops::sigmoid(gates)? - 0.5)?
}

/// `xs` made contiguous when a [`Gate`] can take it with `gates`: both f32 CPU tensors of one
/// shape.
fn fusable(xs: &Tensor, gates: &Tensor) -> Result<Option<Tensor>> {
    if xs.device().is_cpu() && xs.dtype() == DType::F32 && xs.shape() == gates.shape() {
        return Ok(Some(xs.contiguous()?));
    }
    Ok(None)
}

/// A value gated by another through a sigmoid, in one vectorised pass on the CPU.
#[derive(Clone, Copy)]
enum Gate {
    /// [`sigmoid_gate`].
    Sigmoid,
    /// [`centred_gate`].
    Centred,
}

impl CustomOp2 for Gate {
    fn name(&self) -> &'static str {
        match self {
            Self::Sigmoid => "autonomy-sigmoid-gate",
            Self::Centred => "autonomy-centred-gate",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let xs = f32s(s1, l1, "gated input")?;
        let gates = f32s(s2, l2, "gates")?;
        if xs.len() != gates.len() {
            candle_core::bail!("sigmoid gate: {} values, {} gates", xs.len(), gates.len());
        }
        let mut output = vec![0f32; xs.len()];
        output
            .par_chunks_mut(1 << 14)
            .zip(xs.par_chunks(1 << 14).zip(gates.par_chunks(1 << 14)))
            .for_each(|(out, (xs, gates))| match self {
                Self::Sigmoid => gate_rows(xs, gates, out),
                Self::Centred => centred_gate_rows(xs, gates, out),
            });
        Ok((CpuStorage::F32(output), l1.shape().clone()))
    }
}

on_widest_vectors! {
    /// [`Gate::Sigmoid`] on slices, on the widest vectors the CPU has.
    fn gate_rows => gate_rows_any(xs: &[f32], gates: &[f32], out: &mut [f32])
}

#[inline(always)]
fn gate_rows_any(xs: &[f32], gates: &[f32], out: &mut [f32]) {
    for ((o, &x), &g) in out.iter_mut().zip(xs).zip(gates) {
        *o = x * sigmoid_of(g);
    }
}

on_widest_vectors! {
    /// [`Gate::Centred`] on slices, on the widest vectors the CPU has.
    fn centred_gate_rows => centred_gate_rows_any(xs: &[f32], gates: &[f32], out: &mut [f32])
}

#[inline(always)]
fn centred_gate_rows_any(xs: &[f32], gates: &[f32], out: &mut [f32]) {
    for ((o, &x), &g) in out.iter_mut().zip(xs).zip(gates) {
        *o = (x + g) * (sigmoid_of(g) - 0.5);
    }
}

/// The logistic σ(g) through [`fast_exp`], overflowing nowhere.
#[inline(always)]
pub(super) fn sigmoid_of(g: f32) -> f32 {
    // σ(g) = 1 / (1 + t) for g ≥ 0 and t / (1 + t) below, with t = e^−|g|.
    let t = fast_exp(-g.abs());
    let top = if g >= 0.0 { 1.0 } else { t };
    top / (1.0 + t)
}

/// A 3×3 depthwise convolution (zero padding 1, stride 1) of channels-last images `xs`
/// `(b, h, w, c)` with `taps` `(3, 3, c)` and `bias` `(c)`, then the exact GELU when `gelu`:
/// on the CPU in f32 one pass over each output row (every tap's channels in a vector), else
/// nine shifted products with candle's operations.
pub fn depthwise3x3(xs: &Tensor, taps: &Tensor, bias: &Tensor, gelu: bool) -> Result<Tensor> {
    if xs.device().is_cpu() && xs.dtype() == DType::F32 {
        return xs.contiguous()?.apply_op3_no_bwd(
            &taps.contiguous()?,
            &bias.contiguous()?,
            &Depthwise3x3 { gelu },
        );
    }
    let (_, h, w, _) = xs.dims4()?;
    let padded = xs.pad_with_zeros(1, 1, 1)?.pad_with_zeros(2, 1, 1)?;
    let mut out = bias.clone();
    for ky in 0..3 {
        let rows = padded.narrow(1, ky, h)?;
        for kx in 0..3 {
            let tap = taps.get(ky)?.get(kx)?;
            out = rows
                .narrow(2, kx, w)?
                .broadcast_mul(&tap)?
                .broadcast_add(&out)?;
        }
    }
    if gelu { out.gelu_erf() } else { Ok(out) }
}

struct Depthwise3x3 {
    gelu: bool,
}

impl CustomOp3 for Depthwise3x3 {
    fn name(&self) -> &'static str {
        "autonomy-depthwise-conv3x3"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let xs = f32s(s1, l1, "depthwise convolution input")?;
        let taps = f32s(s2, l2, "depthwise convolution taps")?;
        let bias = f32s(s3, l3, "depthwise convolution bias")?;
        let (b, h, w, c) = l1.shape().dims4()?;
        if taps.len() != 9 * c || bias.len() != c {
            candle_core::bail!(
                "depthwise convolution: taps {:?} and bias {:?} do not fit {c} channels",
                l2.dims(),
                l3.dims()
            );
        }
        let mut output = vec![0f32; b * h * w * c];
        if c > 0 && w > 0 {
            let image = (h * w * c).max(1);
            output
                .par_chunks_mut(w * c)
                .enumerate()
                .for_each(|(row, out)| {
                    let (n, y) = (row / h, row % h);
                    let rows = Rows {
                        image: &xs[n * image..(n + 1) * image],
                        h,
                        w,
                        c,
                    };
                    depthwise_row(rows, taps, bias, out, y, self.gelu);
                });
        }
        Ok((CpuStorage::F32(output), l1.shape().clone()))
    }
}

/// One channels-last image `(h, w, c)`.
#[derive(Clone, Copy)]
struct Rows<'a> {
    image: &'a [f32],
    h: usize,
    w: usize,
    c: usize,
}

on_widest_vectors! {
    /// Output row `y` of [`Depthwise3x3`], on the widest vectors the CPU has.
    fn depthwise_row => depthwise_row_any(
        rows: Rows<'_>, taps: &[f32], bias: &[f32], out: &mut [f32], y: usize, gelu: bool
    )
}

#[inline(always)]
fn depthwise_row_any(
    rows: Rows<'_>,
    taps: &[f32],
    bias: &[f32],
    out: &mut [f32],
    y: usize,
    gelu: bool,
) {
    let Rows { image, h, w, c } = rows;
    for pixel in out.chunks_exact_mut(c) {
        pixel.copy_from_slice(bias);
    }
    for ky in 0..3 {
        let Some(iy) = (y + ky).checked_sub(1).filter(|&iy| iy < h) else {
            continue;
        };
        let row = &image[iy * w * c..(iy + 1) * w * c];
        for kx in 0..3 {
            let tap = &taps[(ky * 3 + kx) * c..(ky * 3 + kx + 1) * c];
            // Output x reads input x + kx − 1.
            let (from, to) = (1usize.saturating_sub(kx), (w + 1 - kx).min(w));
            for x in from..to {
                let input = &row[(x + kx - 1) * c..(x + kx) * c];
                let pixel = &mut out[x * c..(x + 1) * c];
                for ((o, &i), &t) in pixel.iter_mut().zip(input).zip(tap) {
                    *o += i * t;
                }
            }
        }
    }
    if gelu {
        for o in out.iter_mut() {
            *o = gelu_of(*o);
        }
    }
}

/// erf(x) within 1.5e-7 (Abramowitz & Stegun 7.1.26), branch-free so that loops over it
/// vectorise.
#[inline(always)]
fn fast_erf(x: f32) -> f32 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let magnitude = 1.0 - poly * fast_exp(-z * z);
    magnitude.copysign(x)
}

on_widest_vectors! {
    /// Replaces each row of `scores` (rows of `m`) by `exp(x − max(row))` and writes the row's
    /// sum to `sums`: softmax without its division, on the widest vectors the CPU has.
    fn exp_rows => exp_rows_any(scores: &mut [f32], m: usize, sums: &mut [f32])
}

/// [`exp_rows`] written so that it vectorises for whatever target features it is inlined
/// into: maxima and sums in 16 independent lanes, and no libm call or saturating cast.
#[inline(always)]
fn exp_rows_any(scores: &mut [f32], m: usize, sums: &mut [f32]) {
    const LANES: usize = 16;
    let larger = |a: f32, b: f32| if b > a { b } else { a };
    for (row, sum) in scores.chunks_exact_mut(m).zip(sums.iter_mut()) {
        let mut lanes = [f32::NEG_INFINITY; LANES];
        let mut chunks = row.chunks_exact(LANES);
        for chunk in &mut chunks {
            for (lane, &x) in lanes.iter_mut().zip(chunk) {
                *lane = larger(*lane, x);
            }
        }
        let max = chunks
            .remainder()
            .iter()
            .chain(&lanes)
            .fold(f32::NEG_INFINITY, |a, &b| larger(a, b));
        let mut totals = [0f32; LANES];
        let mut chunks = row.chunks_exact_mut(LANES);
        for chunk in &mut chunks {
            for (total, x) in totals.iter_mut().zip(chunk) {
                *x = fast_exp(*x - max);
                *total += *x;
            }
        }
        let mut rest = 0.0;
        for x in chunks.into_remainder() {
            *x = fast_exp(*x - max);
            rest += *x;
        }
        *sum = rest + totals.iter().sum::<f32>();
    }
}

/// `eˣ` for −87 ≤ x ≤ 0 within 1e-6 relative (below −87, e⁻⁸⁷), branch-free so that loops
/// over it vectorise: 2ⁿ built in the exponent bits times a degree-7 polynomial of the
/// remainder.
#[inline(always)]
fn fast_exp(x: f32) -> f32 {
    // Adding 1.5·2²³ rounds to the nearest integer in plain arithmetic (no libm `round`
    // call, so the loop vectorises on baseline x86-64).
    const ROUND: f32 = 12_582_912.0;
    let x = if x > -87.0 { x } else { -87.0 };
    let n = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    // ln 2 in two parts (Cody–Waite), so that n·ln 2 is exact enough for large n.
    let r = (x - n * 0.693_145_75) - n * 1.428_606_8e-6;
    // Horner form of Σ rᵏ/k!, k = 0..7.
    let poly = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r / 5040.0))))));
    // n + 127 lands in the low mantissa bits of 2²³ + n + 127 (1 ≤ n + 127 ≤ 127 here);
    // shifted up it is the exponent of 2ⁿ — an integer shift, where `n as i32` would be a
    // scalar saturating conversion.
    let biased = (n + (127.0 + 8_388_608.0)).to_bits();
    f32::from_bits(biased << 23) * poly
}

#[cfg(test)]
mod tests {
    use super::super::max_abs_diff as max_diff;
    use super::*;
    use candle_core::Device;

    #[test]
    fn a_linear_layer_is_candles() {
        let device = Device::Cpu;
        for (dims, biased) in [
            (vec![77, 24], true),
            (vec![2, 5, 24], true),
            (vec![1, 24], false),
        ] {
            let weight = Tensor::randn(0f32, 1.0, (40, 24), &device).unwrap();
            let bias = Tensor::randn(0f32, 1.0, 40, &device).unwrap();
            let mut tensors =
                std::collections::HashMap::from([("weight".to_string(), weight.clone())]);
            if biased {
                tensors.insert("bias".to_string(), bias.clone());
            }
            let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
            let ours = Linear::new(vb, 24, 40, biased).unwrap();
            let theirs = candle_nn::Linear::new(weight, biased.then_some(bias));
            let xs = Tensor::randn(0f32, 1.0, dims.clone(), &device).unwrap();
            let (a, b) = (ours.forward(&xs).unwrap(), theirs.forward(&xs).unwrap());
            assert_eq!(a.dims(), b.dims(), "{dims:?}");
            assert!(max_diff(&a, &b) < 1e-5, "{dims:?}");
            let residual = Tensor::randn(0f32, 1.0, b.dims(), &device).unwrap();
            let summed = ours.forward_residual(&xs, &residual).unwrap();
            assert!(
                max_diff(&summed, &(b + residual).unwrap()) < 1e-5,
                "{dims:?}"
            );
        }
        let vb = VarBuilder::from_tensors(
            std::collections::HashMap::from([(
                "weight".to_string(),
                Tensor::zeros((40, 24), DType::F32, &device).unwrap(),
            )]),
            DType::F32,
            &device,
        );
        let layer = Linear::new(vb, 24, 40, false).unwrap();
        let wrong = Tensor::zeros((3, 23), DType::F32, &device).unwrap();
        assert!(layer.forward(&wrong).is_err());
    }

    /// `op` on random `(batch, c_in, h, w)` images and `(c_out, c_in, kh, kw)` weights gives
    /// candle's convolution at `stride` and `padding`, within 1e-4 (or 2e-6 of the largest
    /// output, for sums of many taps).
    fn convolves_as_candle(
        op: &impl CustomOp2,
        image: (usize, usize, usize, usize),
        kernel: (usize, usize, usize, usize),
        stride: usize,
        padding: usize,
    ) {
        let device = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, image, &device).unwrap();
        let weight = Tensor::randn(0f32, 1.0, kernel, &device).unwrap();
        let ours = x.apply_op2_no_bwd(&weight, op).unwrap();
        let theirs = x.conv2d(&weight, padding, stride, 1, 1).unwrap();
        assert_eq!(ours.dims(), theirs.dims());
        let diff = max_diff(&ours, &theirs);
        let largest = theirs.abs().unwrap().max_all().unwrap();
        let largest = largest.to_scalar::<f32>().unwrap();
        assert!(
            diff < 1e-4f32.max(2e-6 * largest),
            "{image:?} by {kernel:?}, stride {stride}, padding {padding}: {diff}"
        );
    }

    #[test]
    fn banded_convolution_equals_candles() {
        for (batch, c_in, c_out, h, w, k, stride, padding) in [
            (2, 5, 7, 9, 11, 3, 1, 1),
            (1, 3, 4, 8, 8, 3, 2, 1),
            (1, 4, 6, 9, 9, 3, 2, 0),
            (2, 6, 3, 5, 7, 1, 1, 0),
            (1, 2, 2, 64, 3, 3, 1, 1),
        ] {
            let op = BandedConv {
                stride,
                padding,
                epilogue: Epilogue::default(),
            };
            convolves_as_candle(
                &op,
                (batch, c_in, h, w),
                (c_out, c_in, k, k),
                stride,
                padding,
            );
        }
    }

    #[test]
    fn large_kernel_convolutions_equal_candles() {
        for (batch, c_in, c_out, h, w, kh, kw, padding) in [
            (2, 4, 6, 21, 19, 17, 17, 8),
            (1, 3, 5, 9, 12, 5, 7, 0),
            (1, 2, 3, 6, 5, 7, 7, 3),
            (2, 5, 2, 11, 8, 5, 5, 4),
            // Several FFT tiles each way, the last ones cut short; no padding.
            (1, 3, 5, 150, 97, 17, 17, 8),
            (1, 2, 3, 120, 130, 17, 17, 0),
            (2, 5, 2, 30, 28, 9, 13, 4),
            // Narrower than the padding: some taps (and frames) read nothing but zeros.
            (1, 2, 3, 1, 2, 17, 17, 8),
        ] {
            let (image, kernel) = ((batch, c_in, h, w), (c_out, c_in, kh, kw));
            let rows = RowConv {
                padding,
                epilogue: Epilogue::default(),
            };
            convolves_as_candle(&rows, image, kernel, 1, padding);
            let fft = fft_conv::FftConv {
                padding,
                epilogue: Epilogue::default(),
            };
            convolves_as_candle(&fft, image, kernel, 1, padding);
        }
    }

    #[test]
    fn conv2d_finishes_large_kernels_with_the_bias_and_slopes() {
        // 7×7 unrolled by rows, 17×17 through FFTs.
        let device = Device::Cpu;
        for k in [7, 17] {
            let weight = Tensor::randn(0f32, 0.1, (4, 3, k, k), &device).unwrap();
            let bias = Tensor::randn(0f32, 1.0, 4, &device).unwrap();
            let conv = Conv2d::from_weights(weight.clone(), bias.clone(), k / 2);
            let x = Tensor::randn(0f32, 1.0, (2, 3, 20, 24), &device).unwrap();
            let theirs = x
                .conv2d(&weight, k / 2, 1, 1, 1)
                .unwrap()
                .broadcast_add(&bias.reshape((1, 4, 1, 1)).unwrap())
                .unwrap();
            let leaky = Slopes::Uniform(0.2);
            let ours = conv.forward_leaky(&x, &leaky).unwrap();
            let diff = max_diff(&ours, &leaky.apply(&theirs).unwrap());
            assert!(diff < 1e-4, "{k}×{k}: {diff}");
        }
    }

    #[test]
    fn winograd_convolution_equals_candles() {
        for (batch, c_in, c_out, h, w) in [
            (2, 5, 7, 9, 11),
            (1, 3, 4, 8, 8),
            (1, 16, 8, 1, 1),
            (2, 6, 3, 5, 7),
            (1, 2, 2, 64, 3),
            (1, 40, 24, 33, 20),
        ] {
            let op = WinogradConv {
                epilogue: Epilogue::default(),
            };
            convolves_as_candle(&op, (batch, c_in, h, w), (c_out, c_in, 3, 3), 1, 1);
        }
    }

    #[test]
    fn bias_shift_and_leaky_relu_are_candle_s_operations_in_the_convolution_s_pass() {
        let device = Device::Cpu;
        // Winograd's path, then the banded one (small images).
        for (c_in, c_out, h, w) in [(16, 24, 33, 34), (5, 6, 9, 7)] {
            let weight = Tensor::randn(0f32, 0.3, (c_out, c_in, 3, 3), &device).unwrap();
            let bias = Tensor::randn(0f32, 1.0, c_out, &device).unwrap();
            let conv = Conv2d {
                weight: weight.clone(),
                bias: Some(bias.clone()),
                stride: 1,
                padding: 1,
            };
            let x = Tensor::randn(0f32, 1.0, (2, c_in, h, w), &device).unwrap();
            let shift = Tensor::randn(0f32, 1.0, (2, c_out), &device).unwrap();
            let biased = x
                .conv2d(&weight, 1, 1, 1, 1)
                .unwrap()
                .broadcast_add(&bias.reshape((1, c_out, 1, 1)).unwrap())
                .unwrap();
            let shifted = biased
                .broadcast_add(&shift.reshape((2, c_out, 1, 1)).unwrap())
                .unwrap();
            let ours = conv.forward_shifted(&x, &shift).unwrap();
            assert!(max_diff(&ours, &shifted) < 1e-4, "{h}×{w} shifted");
            let three = Tensor::zeros((3, c_out), DType::F32, &device).unwrap();
            assert!(conv.forward_shifted(&x, &three).is_err(), "{h}×{w}");
            // Slopes below zero, between 0 and 1 and above 1.
            let slopes = Tensor::arange(0u32, c_out as u32, &device)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
                .affine(0.1, -0.5)
                .unwrap();
            let below = biased.minimum(0f32).unwrap();
            let leaky = (biased.relu().unwrap()
                + below
                    .broadcast_mul(&slopes.reshape((1, c_out, 1, 1)).unwrap())
                    .unwrap())
            .unwrap();
            let per_channel = Slopes::PerChannel(slopes);
            for (what, got) in [
                ("fused", conv.forward_leaky(&x, &per_channel).unwrap()),
                ("candle", per_channel.apply(&biased).unwrap()),
            ] {
                assert!(max_diff(&got, &leaky) < 1e-4, "{h}×{w} PReLU, {what}");
            }
            let esrgan = (biased.relu().unwrap() + (&below * 0.2).unwrap()).unwrap();
            for (what, got) in [
                (
                    "fused",
                    conv.forward_leaky(&x, &Slopes::Uniform(0.2)).unwrap(),
                ),
                ("candle", Slopes::Uniform(0.2).apply(&biased).unwrap()),
            ] {
                assert!(max_diff(&got, &esrgan) < 1e-4, "{h}×{w} leaky, {what}");
            }
            let steep = (biased.relu().unwrap() + (&below * 1.5).unwrap()).unwrap();
            let ours = Slopes::Uniform(1.5).apply(&biased).unwrap();
            assert!(max_diff(&ours, &steep) < 1e-5, "{h}×{w} slope 1.5");
            let wrong = Slopes::PerChannel(Tensor::ones(c_out + 1, DType::F32, &device).unwrap());
            let error = conv.forward_leaky(&x, &wrong).unwrap_err().to_string();
            assert!(error.contains(&format!("for {c_out} channels")), "{error}");
        }
    }

    #[test]
    fn the_dense_block_is_its_convolutions_over_every_earlier_output() {
        let device = Device::Cpu;
        let (features, growth) = (24, 16);
        let convs: Vec<Conv2d> = (0..5)
            .map(|j| {
                let c_out = if j == 4 { features } else { growth };
                let c_in = features + j * growth;
                Conv2d {
                    weight: Tensor::randn(0f32, 0.2, (c_out, c_in, 3, 3), &device).unwrap(),
                    bias: Some(Tensor::randn(0f32, 0.5, c_out, &device).unwrap()),
                    stride: 1,
                    padding: 1,
                }
            })
            .collect();
        // Winograd's path (two images, an odd width), then the small-image one.
        for (batch, h, w) in [(2, 34, 37), (1, 9, 12)] {
            let x = Tensor::randn(0f32, 1.0, (batch, features, h, w), &device).unwrap();
            let mut seen = vec![x.clone()];
            for (j, conv) in convs.iter().enumerate() {
                let y = Tensor::cat(&seen, 1)
                    .unwrap()
                    .conv2d(&conv.weight, 1, 1, 1, 1)
                    .unwrap()
                    .broadcast_add(&conv.bias.as_ref().unwrap().reshape((1, (), 1, 1)).unwrap())
                    .unwrap();
                let y = if j < 4 {
                    y.maximum(&(&y * 0.2).unwrap()).unwrap()
                } else {
                    y
                };
                seen.push(y);
            }
            let ours = dense_block(&x, &convs, 0.2, &DenseBuffers::default()).unwrap();
            let theirs = &seen[5];
            // Winograd's rounding grows with the outputs (tens here), as in PyTorch's.
            let largest = theirs
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let diff = max_diff(&ours, theirs);
            assert!(
                diff < 1e-5 * largest,
                "{batch}×{h}×{w}: {diff} of {largest}"
            );
        }
        let error = dense_block(
            &Tensor::zeros((1, features + 1, 32, 32), DType::F32, &device).unwrap(),
            &convs,
            0.2,
            &DenseBuffers::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("convolution 1 reads 24 channels, but 25"),
            "{error}"
        );
    }

    #[test]
    fn f16_attention_follows_the_f32_result_within_f16_rounding() {
        // The path GPUs take (the model's dtype throughout), run here on f16 CPU tensors.
        let device = Device::Cpu;
        let (heads, n, m, d) = (2, 96, 77, 40);
        let q = Tensor::randn(0f32, 1.0, (heads, n, d), &device).unwrap();
        let k = Tensor::randn(0f32, 1.0, (heads, m, d), &device).unwrap();
        let v = Tensor::randn(0f32, 1.0, (heads, m, d), &device).unwrap();
        let scale = 1.0 / (d as f64).sqrt();
        let half = |t: &Tensor| t.to_dtype(DType::F16).unwrap();
        let ours = attention(&half(&q), &half(&k), &half(&v), scale).unwrap();
        assert_eq!(ours.dtype(), DType::F16);
        let exact = attention(&q, &k, &v, scale).unwrap();
        let diff = max_diff(&ours.to_dtype(DType::F32).unwrap(), &exact);
        assert!(diff < 1e-2, "f16 attention strays by {diff}");
    }

    #[test]
    fn fused_attention_equals_the_plain_formula() {
        let device = Device::Cpu;
        for (heads, n, m, d) in [(3, 70, 77, 8), (2, 130, 130, 16), (1, 5, 300, 4)] {
            let q = Tensor::randn(0f32, 1.0, (heads, n, d), &device).unwrap();
            let k = Tensor::randn(0f32, 1.0, (heads, m, d), &device).unwrap();
            let v = Tensor::randn(0f32, 1.0, (heads, m, d), &device).unwrap();
            let scale = 1.0 / (d as f64).sqrt();
            let ours = attention(&q, &k, &v, scale).unwrap();
            let scores = ((&q * scale).unwrap()).matmul(&k.t().unwrap()).unwrap();
            let theirs = candle_nn::ops::softmax_last_dim(&scores)
                .unwrap()
                .matmul(&v)
                .unwrap();
            let diff = max_diff(&ours, &theirs);
            assert!(diff < 1e-5, "{heads}×{n}×{m}×{d}: {diff}");
        }
    }

    #[test]
    fn biased_attention_adds_each_group_s_bias_before_the_softmax() {
        let device = Device::Cpu;
        // Six groups (two windows × three heads) sharing three biases, or one each.
        for (groups, p, n, m, d) in [(6, 3, 70, 70, 8), (6, 6, 16, 36, 4), (4, 1, 130, 5, 2)] {
            let q = Tensor::randn(0f32, 1.0, (groups, n, d), &device).unwrap();
            let k = Tensor::randn(0f32, 1.0, (groups, m, d), &device).unwrap();
            let v = Tensor::randn(0f32, 1.0, (groups, m, d), &device).unwrap();
            let bias = Tensor::randn(0f32, 3.0, (p, n, m), &device).unwrap();
            let scale = 1.0 / (d as f64).sqrt();
            let ours = attention_biased(&q, &k, &v, scale, &bias).unwrap();
            let repeated = Tensor::cat(&vec![&bias; groups / p], 0).unwrap();
            let scores =
                ((&q * scale).unwrap().matmul(&k.t().unwrap()).unwrap() + repeated).unwrap();
            let theirs = candle_nn::ops::softmax_last_dim(&scores)
                .unwrap()
                .matmul(&v)
                .unwrap();
            let diff = max_diff(&ours, &theirs);
            assert!(diff < 1e-5, "{groups}/{p}×{n}×{m}×{d}: {diff}");
            // The path other devices take, run here in f64.
            let f64s = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
            let generic = attention_biased(&f64s(&q), &f64s(&k), &f64s(&v), scale, &f64s(&bias))
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap();
            assert!(max_diff(&generic, &theirs) < 1e-5);
        }
        let q = Tensor::zeros((4, 2, 2), DType::F32, &device).unwrap();
        let bias = Tensor::zeros((3, 2, 2), DType::F32, &device).unwrap();
        let err = attention_biased(&q, &q, &q, 1.0, &bias).unwrap_err();
        assert!(err.to_string().contains("does not fit 4 groups"), "{err}");
    }

    #[test]
    fn exp_rows_match_exp_on_every_path_and_row_length() {
        for m in [1, 15, 16, 17, 100] {
            let rows = 3;
            let scores: Vec<f32> = (0..rows * m)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.3)
                .collect();
            let mut expected = scores.clone();
            let mut expected_sums = vec![0f32; rows];
            for (row, sum) in expected.chunks_exact_mut(m).zip(&mut expected_sums) {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                row.iter_mut().for_each(|x| *x = (*x - max).exp());
                *sum = row.iter().sum();
            }
            let mut dispatched = (scores.clone(), vec![0f32; rows]);
            exp_rows(&mut dispatched.0, m, &mut dispatched.1);
            let mut portable = (scores, vec![0f32; rows]);
            exp_rows_any(&mut portable.0, m, &mut portable.1);
            for (values, sums) in [dispatched, portable] {
                for (ours, exact) in values
                    .iter()
                    .chain(&sums)
                    .zip(expected.iter().chain(&expected_sums))
                {
                    assert!(
                        (ours - exact).abs() <= 1e-6 * exact.max(1.0),
                        "m {m}: {ours} vs {exact}"
                    );
                }
            }
        }
    }

    #[test]
    fn geglu_is_the_first_half_times_the_gelu_of_the_second() {
        let device = Device::Cpu;
        for shape in [(2, 5, 16), (1, 3, 2), (3, 70, 40)] {
            let h = (Tensor::randn(0f32, 1.0, shape, &device).unwrap() * 3.0).unwrap();
            let half = shape.2 / 2;
            let theirs = (h.narrow(D::Minus1, 0, half).unwrap()
                * h.narrow(D::Minus1, half, half).unwrap().gelu_erf().unwrap())
            .unwrap();
            let ours = geglu(&h).unwrap();
            assert_eq!(ours.dims(), theirs.dims());
            // Relative to the value (at least 1): products reach ~100, where an f32 ulp is 8e-6.
            let diff = ((&ours - &theirs).unwrap().abs().unwrap()
                / theirs.abs().unwrap().maximum(1f32).unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
            assert!(diff < 5e-6, "{shape:?}: {diff}");
            // The portable path (what CPUs without AVX2 run) gives the same.
            let rows: Vec<f32> = h.flatten_all().unwrap().to_vec1().unwrap();
            let mut portable = vec![0f32; rows.len() / 2];
            geglu_rows_any(&rows, &mut portable, half);
            let ours: Vec<f32> = ours.flatten_all().unwrap().to_vec1().unwrap();
            assert!(
                portable
                    .iter()
                    .zip(&ours)
                    .all(|(a, b)| (a - b).abs() < 1e-6)
            );
        }
        let odd = Tensor::zeros((2, 3), DType::F32, &device).unwrap();
        assert!(geglu(&odd).unwrap_err().to_string().contains("not even"));
    }

    #[test]
    fn fast_gelu_is_candle_s_exact_gelu() {
        let xs = Tensor::randn(0f32, 3.0, (7, 1000), &Device::Cpu).unwrap();
        let diff = max_diff(&gelu_erf(&xs).unwrap(), &xs.gelu_erf().unwrap());
        assert!(diff < 2e-6, "{diff}");
    }

    #[test]
    fn the_depthwise_kernel_is_candle_s_grouped_convolution_channels_last() {
        let dev = Device::Cpu;
        for (c, h, w) in [(5, 7, 6), (16, 1, 9), (3, 4, 1)] {
            let weight = Tensor::randn(0f32, 1.0, (c, 1, 3, 3), &dev).unwrap();
            let bias = Tensor::randn(0f32, 1.0, c, &dev).unwrap();
            let image = Tensor::randn(0f32, 1.0, (2, c, h, w), &dev).unwrap();
            let grouped = image
                .conv2d(&weight, 1, 1, 1, c)
                .unwrap()
                .broadcast_add(&bias.reshape((1, c, 1, 1)).unwrap())
                .unwrap()
                .permute((0, 2, 3, 1))
                .unwrap();
            let taps = weight
                .reshape((c, 9))
                .unwrap()
                .t()
                .unwrap()
                .reshape((3, 3, c))
                .unwrap();
            let channels_last = image.permute((0, 2, 3, 1)).unwrap();
            for gelu in [false, true] {
                let expected = if gelu {
                    grouped.gelu_erf().unwrap()
                } else {
                    grouped.clone()
                };
                let ours = depthwise3x3(&channels_last, &taps, &bias, gelu).unwrap();
                // The path other devices take, run here on the CPU in f64.
                let generic = depthwise3x3(
                    &channels_last.to_dtype(DType::F64).unwrap(),
                    &taps.to_dtype(DType::F64).unwrap(),
                    &bias.to_dtype(DType::F64).unwrap(),
                    gelu,
                )
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap();
                for (what, got) in [("kernel", ours), ("generic", generic)] {
                    let diff = max_diff(&got, &expected);
                    assert!(diff < 1e-5, "{what} {c}×{h}×{w} gelu {gelu}: {diff}");
                }
            }
        }
    }

    #[test]
    fn fast_erf_is_close_to_erf() {
        let xs: Vec<f32> = (-400..=400).map(|i| i as f32 * 0.01).collect();
        let exact: Vec<f32> = Tensor::new(xs.as_slice(), &Device::Cpu)
            .and_then(|t| t.erf())
            .and_then(|t| t.to_vec1())
            .unwrap();
        for (x, exact) in xs.into_iter().zip(exact) {
            assert!(
                (fast_erf(x) - exact).abs() < 3e-7,
                "{x}: {} vs {exact}",
                fast_erf(x)
            );
        }
    }

    /// One element-wise operation of a value and a gate, and its formula.
    type Elementwise = (
        &'static str,
        fn(&Tensor, &Tensor) -> Result<Tensor>,
        fn(f64, f64) -> f64,
    );

    fn sigmoid(g: f64) -> f64 {
        1.0 / (1.0 + (-g).exp())
    }

    #[test]
    fn the_activations_and_gates_are_their_formulas_on_every_path() {
        let values: Vec<f32> = (-400..400)
            .map(|i| i as f32 * 0.23)
            .chain([-1000.0, -88.0, 0.0, 88.0, 1000.0])
            .collect();
        let xs = Tensor::new(values.as_slice(), &Device::Cpu).unwrap();
        let gates = xs.flip(&[0]).unwrap();
        let gate_values: Vec<f32> = gates.to_vec1().unwrap();
        let cases: [Elementwise; 4] = [
            ("mish", |x, _| mish(x), |x, _| x * x.exp().ln_1p().tanh()),
            ("silu", |x, _| silu(x), |x, _| x * sigmoid(x)),
            ("sigmoid gate", sigmoid_gate, |x, g| x * sigmoid(g)),
            ("centred gate", centred_gate, |x, g| {
                (x + g) * (sigmoid(g) - 0.5)
            }),
        ];
        // The CPU's kernels (f32), then candle's operations (as on other devices, in f64).
        for (name, op, formula) in cases {
            for dtype in [DType::F32, DType::F64] {
                let (x, g) = (xs.to_dtype(dtype).unwrap(), gates.to_dtype(dtype).unwrap());
                let out: Vec<f64> = op(&x, &g)
                    .and_then(|out| out.to_dtype(DType::F64))
                    .and_then(|out| out.to_vec1())
                    .unwrap();
                for ((&x, &g), out) in values.iter().zip(&gate_values).zip(out) {
                    let (x, g) = (f64::from(x), f64::from(g));
                    let want = formula(x, g);
                    // σ(g) − ½ in f32 is off by up to an ulp of ½, times x + g.
                    let slack = 2e-6 * want.abs().max(1e-3) + 6e-8 * (x + g).abs();
                    assert!(
                        (out - want).abs() <= slack,
                        "{name} in {dtype:?} of {x}, {g}: {out} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn fast_exp_is_close_to_exp() {
        for i in 0..1740 {
            let x = -(i as f32) * 0.05;
            let (ours, exact) = (fast_exp(x), x.exp());
            assert!(
                (ours - exact).abs() <= 1e-6 * exact + 1e-38,
                "{x}: {ours} vs {exact}"
            );
        }
        assert_eq!(fast_exp(-1000.0), fast_exp(-87.0));
    }
}
