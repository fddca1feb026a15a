//! The element-wise passes around the UNet's convolutions and matrix products, fused on CUDA
//! (the `cuda` feature): three kernels of Autonomy's, compiled once by NVRTC, each one
//! read of its inputs and one write, summing in f32 and rounding once.
//!
//! - [`channel_bias`]: a convolution's bias, with a ResNet block's time embedding when given,
//!   added to each `(sample, channel)` plane of an `(n, channels, h, w)` output;
//! - [`row_bias`]: a linear layer's bias, with the residual after it when given, added to each
//!   row of a `(…, channels)` output;
//! - [`geglu`]: the feed-forward's first bias and its GEGLU gate, `(a + b_a) · GELU(g + b_g)`.
//!
//! candle's operations make a strided broadcast pass per term (and GEGLU four passes): with the
//! residuals they took two fifths of an SD 1.5 UNet step on an H100 once attention, group norm
//! and the convolutions were fused.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{CudaStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};

use super::nvrtc::Kernels;

static KERNELS: Kernels = Kernels::new("the element-wise kernels", SOURCE, true);

/// The kernels for f32, f16 and bf16 (after `nvrtc::CONVERSIONS`).
const SOURCE: &str = r#"
// grid (n · channels, chunks): block (p, c) adds to elements [c·chunk, (c+1)·chunk) of plane p
// (sample p / channels, channel p mod channels) the channel's bias and, when `extra`, the
// sample's shift of it (shift is (n, channels)).
#define CHANNEL(NAME, T, LOAD, STORE)                                                       \
extern "C" __global__ void NAME(const T* x, const T* bias, const T* shift, T* y,           \
        long plane, long chunk, int channels, int extra) {                                 \
    long p = blockIdx.x;                                                                   \
    float add = LOAD(bias, p % channels);                                                  \
    if (extra) add += LOAD(shift, p);                                                      \
    long base = p * plane, start = (long)blockIdx.y * chunk;                               \
    long end = start + chunk < plane ? start + chunk : plane;                              \
    for (long i = start + threadIdx.x; i < end; i += blockDim.x)                           \
        STORE(y, base + i, LOAD(x, base + i) + add);                                       \
}

// grid (rows): block r adds to row r of x (rows, channels) the bias and, when `extra`, row r
// of the residual (rows, channels).
#define ROW(NAME, T, LOAD, STORE)                                                           \
extern "C" __global__ void NAME(const T* x, const T* bias, const T* residual, T* y,        \
        int channels, int extra) {                                                         \
    long base = (long)blockIdx.x * channels;                                               \
    for (int c = threadIdx.x; c < channels; c += blockDim.x) {                             \
        float v = LOAD(x, base + c) + LOAD(bias, c);                                       \
        if (extra) v += LOAD(residual, base + c);                                          \
        STORE(y, base + c, v);                                                             \
    }                                                                                      \
}

// grid (rows): row r of y (rows, half) is (a + bias_a) · GELU(g + bias_g), a and g the two
// halves of row r of h (rows, 2·half), GELU the exact (erf) one.
#define GEGLU(NAME, T, LOAD, STORE)                                                         \
extern "C" __global__ void NAME(const T* h, const T* bias, const T* unused, T* y,          \
        int half, int _extra) {                                                            \
    long in = (long)blockIdx.x * 2 * half, out = (long)blockIdx.x * half;                  \
    for (int c = threadIdx.x; c < half; c += blockDim.x) {                                 \
        float a = LOAD(h, in + c) + LOAD(bias, c);                                         \
        float g = LOAD(h, in + half + c) + LOAD(bias, half + c);                           \
        STORE(y, out + c, a * 0.5f * g * (1.0f + erff(g * 0.70710678118654752f)));         \
    }                                                                                      \
}

CHANNEL(channel_bias_f32, float, load_f32, store_f32)
CHANNEL(channel_bias_f16, unsigned short, load_f16, store_f16)
CHANNEL(channel_bias_bf16, unsigned short, load_bf16, store_bf16)
ROW(row_bias_f32, float, load_f32, store_f32)
ROW(row_bias_f16, unsigned short, load_f16, store_f16)
ROW(row_bias_bf16, unsigned short, load_bf16, store_bf16)
GEGLU(geglu_f32, float, load_f32, store_f32)
GEGLU(geglu_f16, unsigned short, load_f16, store_f16)
GEGLU(geglu_bf16, unsigned short, load_bf16, store_bf16)
"#;

/// Threads per block.
const THREADS: u32 = 256;
/// Elements each thread takes per block of [`channel_bias`].
const PER_THREAD: usize = 8;

/// `xs (n, channels, …) + bias (channels)`, plus `shift (n, channels)` when given, for CUDA
/// tensors of one dtype (f32, f16 or bf16).
pub fn channel_bias(xs: &Tensor, bias: &Tensor, shift: Option<&Tensor>) -> Result<Tensor> {
    apply(Pass::Channel, xs, bias, shift)
}

/// `xs (…, channels) + bias (channels)`, plus `residual` (shaped as `xs`) when given, for CUDA
/// tensors of one dtype.
pub fn row_bias(xs: &Tensor, bias: &Tensor, residual: Option<&Tensor>) -> Result<Tensor> {
    apply(Pass::Row, xs, bias, residual)
}

/// The GEGLU gate of `h + bias` (`h` `(…, 2·d)`, `bias` `(2·d)`): its first half times the exact
/// GELU of its second half, `(…, d)`, for CUDA tensors of one dtype.
pub fn geglu(h: &Tensor, bias: &Tensor) -> Result<Tensor> {
    apply(Pass::Geglu, h, bias, None)
}

fn apply(pass: Pass, xs: &Tensor, bias: &Tensor, extra: Option<&Tensor>) -> Result<Tensor> {
    let op = Elementwise {
        pass,
        extra: extra.is_some(),
    };
    // Without an extra operand the kernels never read their third pointer: the bias stands in.
    xs.contiguous()?.apply_op3_no_bwd(
        &bias.contiguous()?,
        &extra.unwrap_or(bias).contiguous()?,
        &op,
    )
}

/// Which kernel.
#[derive(Clone, Copy, PartialEq)]
enum Pass {
    Channel,
    Row,
    Geglu,
}

impl Pass {
    fn name(self) -> &'static str {
        match self {
            Pass::Channel => "channel_bias",
            Pass::Row => "row_bias",
            Pass::Geglu => "geglu",
        }
    }
}

struct Elementwise {
    pass: Pass,
    extra: bool,
}

/// A CUDA tensor's storage with its layout.
type Operand<'a> = (&'a CudaStorage, &'a Layout);

impl Elementwise {
    fn run<T: CudaDType + DeviceRepr>(
        &self,
        suffix: &str,
        (x, x_layout): Operand,
        (bias, bias_layout): Operand,
        (extra, extra_layout): Operand,
    ) -> Result<(CudaStorage, Shape)> {
        let name = self.pass.name();
        let dims = x_layout.dims();
        let elements = x_layout.shape().elem_count();
        // The bias's width, the shape of the output and the extra operand's element count.
        let (width, out_shape, extra_count) = match self.pass {
            Pass::Channel => {
                let (Some(&n), Some(&channels)) = (dims.first(), dims.get(1)) else {
                    candle_core::bail!("{name} of a {dims:?} tensor");
                };
                (channels, x_layout.shape().clone(), n * channels)
            }
            Pass::Row => {
                let channels = dims.last().copied().unwrap_or(0);
                (channels, x_layout.shape().clone(), elements)
            }
            Pass::Geglu => {
                let width = dims.last().copied().unwrap_or(0);
                if width % 2 != 0 {
                    candle_core::bail!("geglu: the last dimension ({width}) is not even");
                }
                let mut out = dims.to_vec();
                if let Some(last) = out.last_mut() {
                    *last = width / 2;
                }
                (width, Shape::from(out), 0)
            }
        };
        if bias_layout.shape().elem_count() != width
            || (self.extra && extra_layout.shape().elem_count() != extra_count)
        {
            candle_core::bail!(
                "{name}: a bias {:?} and operand {:?} do not fit a {dims:?} tensor",
                bias_layout.dims(),
                extra_layout.dims()
            );
        }
        let (Some((x0, x1)), Some((b0, b1)), Some((e0, e1))) = (
            x_layout.contiguous_offsets(),
            bias_layout.contiguous_offsets(),
            extra_layout.contiguous_offsets(),
        ) else {
            candle_core::bail!("{name}: the tensors must be contiguous");
        };
        let too_large = || candle_core::Error::Msg(format!("{name}: too large"));
        let as_u32 = |n: usize| u32::try_from(n.max(1)).map_err(|_| too_large());
        let device = x.device().clone();
        let x_view = x.as_cuda_slice::<T>()?.slice(x0..x1);
        let b_view = bias.as_cuda_slice::<T>()?.slice(b0..b1);
        let e_view = extra.as_cuda_slice::<T>()?.slice(e0..e1);
        // SAFETY: the kernel writes every element of `y` (each plane's chunks, each row).
        let mut y: CudaSlice<T> = unsafe { device.alloc::<T>(out_shape.elem_count().max(1))? };
        let kernel = device.get_or_load_custom_func(
            &format!("{name}_{suffix}"),
            "autonomy_elementwise",
            KERNELS.ptx()?,
        )?;
        let mut launch = kernel.builder();
        launch.arg(&x_view);
        launch.arg(&b_view);
        launch.arg(&e_view);
        launch.arg(&mut y);
        let extra_flag = i32::from(self.extra);
        let width_i32 = i32::try_from(width).map_err(|_| too_large())?;
        let half = width_i32 / 2;
        // The channel pass's plane: each of its n·channels (`extra_count`) planes' elements.
        let (plane, chunk) = (
            (elements / (extra_count.max(1))) as i64,
            (THREADS as usize * PER_THREAD) as i64,
        );
        let config = match self.pass {
            Pass::Channel => {
                launch.arg(&plane);
                launch.arg(&chunk);
                launch.arg(&width_i32);
                launch.arg(&extra_flag);
                LaunchConfig {
                    grid_dim: (
                        as_u32(extra_count)?,
                        as_u32((plane as usize).div_ceil(chunk as usize))?,
                        1,
                    ),
                    block_dim: (THREADS, 1, 1),
                    shared_mem_bytes: 0,
                }
            }
            Pass::Row | Pass::Geglu => {
                launch.arg(if self.pass == Pass::Row {
                    &width_i32
                } else {
                    &half
                });
                launch.arg(&extra_flag);
                LaunchConfig {
                    grid_dim: (as_u32(elements / width.max(1))?, 1, 1),
                    block_dim: (THREADS, 1, 1),
                    shared_mem_bytes: 0,
                }
            }
        };
        if elements > 0 {
            // SAFETY: the arguments match the kernel's; the grid covers every plane's chunks
            // (every row), the bias holds `width` values and the extra operand (read only when
            // given) the count checked above.
            unsafe { launch.launch(config) }.w()?;
        }
        Ok((CudaStorage::wrap_cuda_slice(y, device), out_shape))
    }
}

impl CustomOp3 for Elementwise {
    fn name(&self) -> &'static str {
        "autonomy-elementwise"
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> Result<(candle_core::CpuStorage, Shape)> {
        candle_core::bail!("the element-wise kernels run on CUDA tensors only")
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        x_layout: &Layout,
        bias: &CudaStorage,
        bias_layout: &Layout,
        extra: &CudaStorage,
        extra_layout: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (x, b, e) = ((x, x_layout), (bias, bias_layout), (extra, extra_layout));
        match x.0.dtype() {
            DType::F32 => self.run::<f32>("f32", x, b, e),
            DType::F16 => self.run::<half::f16>("f16", x, b, e),
            DType::BF16 => self.run::<half::bf16>("bf16", x, b, e),
            other => candle_core::bail!("{} of {other:?} tensors", self.pass.name()),
        }
    }
}
