//! Group normalisation, alone or followed by SiLU (as every ResNet block of the UNet and the
//! VAE, and both networks' output heads, use it). Everywhere but CUDA it is candle's
//! `GroupNorm` (then candle's SiLU). On CUDA (the `cuda` feature) it is two kernels of
//! Autonomy's (compiled once by NVRTC): each block of a group sums its part of the
//! group and its squares in f64, then each block reads the group's sums and writes its part
//! normalised, scaled, shifted and (when asked) through SiLU — two reads and one write of the
//! activations, where candle's operations make about eight passes in f32 and SiLU two more.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// A group norm over `(n, channels, …)` tensors with a per-channel scale and shift.
#[derive(Clone, Debug)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    /// Reads `weight` and `bias` (`channels` each) from `vb`.
    pub fn new(groups: usize, channels: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            candle_core::bail!("group norm: {channels} channels do not split into {groups} groups");
        }
        Ok(Self {
            weight: vb.get(channels, "weight")?,
            bias: vb.get(channels, "bias")?,
            groups,
            eps,
        })
    }

    /// candle's group norm.
    fn candle(&self, xs: &Tensor) -> Result<Tensor> {
        candle_nn::GroupNorm::new(
            self.weight.clone(),
            self.bias.clone(),
            self.weight.dim(0)?,
            self.groups,
            self.eps,
        )?
        .forward(xs)
    }

    /// The group norm followed by SiLU.
    pub fn forward_silu(&self, xs: &Tensor) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if xs.device().is_cuda() {
            return self.fused(xs, true);
        }
        candle_nn::ops::silu(&self.candle(xs)?)
    }

    /// The fused kernels' group norm of a CUDA tensor, through SiLU when `silu`.
    #[cfg(feature = "cuda")]
    fn fused(&self, xs: &Tensor, silu: bool) -> Result<Tensor> {
        xs.contiguous()?.apply_op3_no_bwd(
            &self.weight.to_dtype(xs.dtype())?,
            &self.bias.to_dtype(xs.dtype())?,
            &cuda::FusedGroupNorm {
                groups: self.groups,
                eps: self.eps,
                silu,
            },
        )
    }
}

impl Module for GroupNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if xs.device().is_cuda() {
            return self.fused(xs, false);
        }
        self.candle(xs)
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{
        CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg,
    };
    use candle_core::cuda_backend::{CudaDType, WrapErr};
    use candle_core::{CudaStorage, CustomOp3, DType, Layout, Result, Shape, WithDType};

    use crate::models::sd::nvrtc::Kernels;

    static KERNELS: Kernels = Kernels::new("the group-norm kernels", SOURCE, true);

    /// The kernels, for f32, f16 and bf16 (after `nvrtc::CONVERSIONS`). `stats` holds two doubles
    /// per block: the sum of its elements and of their squares.
    const SOURCE: &str = r#"
// The sum of `v` over the block (every thread gets it); `shared` holds 32 doubles.
__device__ double block_sum(double v, double* shared) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    int warps = (blockDim.x + 31) >> 5;
    if (warp == 0) {
        v = lane < warps ? shared[lane] : 0.0;
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0) shared[0] = v;
    }
    __syncthreads();
    double total = shared[0];
    __syncthreads();
    return total;
}

// grid (chunks, groups · batch): block (c, g) sums elements [c·chunk, (c+1)·chunk) of group g.
#define STATS(NAME, T, LOAD)                                                                \
extern "C" __global__ void NAME(const T* x, double* stats, long group_len, long chunk) {  \
    __shared__ double shared[32];                                                          \
    long base = (long)blockIdx.y * group_len;                                              \
    long start = (long)blockIdx.x * chunk;                                                 \
    long end = start + chunk < group_len ? start + chunk : group_len;                      \
    double sum = 0.0, squares = 0.0;                                                       \
    for (long i = start + threadIdx.x; i < end; i += blockDim.x) {                         \
        double v = LOAD(x, base + i);                                                      \
        sum += v; squares += v * v;                                                        \
    }                                                                                      \
    sum = block_sum(sum, shared);                                                          \
    squares = block_sum(squares, shared);                                                  \
    if (threadIdx.x == 0) {                                                                \
        long at = ((long)blockIdx.y * gridDim.x + blockIdx.x) * 2;                         \
        stats[at] = sum; stats[at + 1] = squares;                                          \
    }                                                                                      \
}

// grid (chunks, groups · batch): block (c, g) normalises its part of group g, each element's
// channel being (g mod groups) · per_group + i / spatial.
#define APPLY(NAME, T, LOAD, STORE)                                                         \
extern "C" __global__ void NAME(const T* x, T* y, const T* weight, const T* bias,         \
        const double* stats, long group_len, long chunk, long spatial, int groups,         \
        int per_group, float eps, int silu) {                                              \
    __shared__ float moments[2];                                                           \
    if (threadIdx.x == 0) {                                                                \
        double sum = 0.0, squares = 0.0;                                                   \
        const double* s = stats + (long)blockIdx.y * gridDim.x * 2;                        \
        for (unsigned c = 0; c < gridDim.x; c++) { sum += s[2 * c]; squares += s[2 * c + 1]; } \
        double mean = sum / (double)group_len;                                             \
        double var = squares / (double)group_len - mean * mean;                            \
        if (var < 0.0) var = 0.0;                                                          \
        moments[0] = (float)mean;                                                          \
        moments[1] = (float)(1.0 / sqrt(var + (double)eps));                               \
    }                                                                                      \
    __syncthreads();                                                                       \
    float mean = moments[0], rstd = moments[1];                                            \
    long base = (long)blockIdx.y * group_len;                                              \
    int first = (int)(blockIdx.y % groups) * per_group;                                    \
    long start = (long)blockIdx.x * chunk;                                                 \
    long end = start + chunk < group_len ? start + chunk : group_len;                      \
    for (long i = start + threadIdx.x; i < end; i += blockDim.x) {                         \
        int c = first + (int)(i / spatial);                                                \
        float v = (LOAD(x, base + i) - mean) * rstd * LOAD(weight, c) + LOAD(bias, c);     \
        if (silu) v = v / (1.0f + __expf(-v));                                             \
        STORE(y, base + i, v);                                                             \
    }                                                                                      \
}

STATS(group_norm_stats_f32, float, load_f32)
STATS(group_norm_stats_f16, unsigned short, load_f16)
STATS(group_norm_stats_bf16, unsigned short, load_bf16)
APPLY(group_norm_apply_f32, float, load_f32, store_f32)
APPLY(group_norm_apply_f16, unsigned short, load_f16, store_f16)
APPLY(group_norm_apply_bf16, unsigned short, load_bf16, store_bf16)
"#;

    /// Threads per block.
    const THREADS: u32 = 512;
    /// Elements each thread takes per block (a block's chunk is `THREADS · PER_THREAD`).
    const PER_THREAD: usize = 16;

    /// `x (n, channels, …)`, `weight` and `bias (channels)` of the same dtype.
    pub(super) struct FusedGroupNorm {
        pub(super) groups: usize,
        pub(super) eps: f64,
        pub(super) silu: bool,
    }

    /// The op's three tensors with their layouts.
    struct Inputs<'a> {
        x: (&'a CudaStorage, &'a Layout),
        weight: (&'a CudaStorage, &'a Layout),
        bias: (&'a CudaStorage, &'a Layout),
    }

    impl FusedGroupNorm {
        fn run<T: CudaDType + DeviceRepr + WithDType>(
            &self,
            suffix: &str,
            inputs: &Inputs,
        ) -> Result<(CudaStorage, Shape)> {
            let Inputs {
                x: (x, x_layout),
                weight: (weight, weight_layout),
                bias: (bias, bias_layout),
            } = *inputs;
            let dims = x_layout.dims();
            let (Some(&batch), Some(&channels)) = (dims.first(), dims.get(1)) else {
                candle_core::bail!("group norm of a {dims:?} tensor");
            };
            // `GroupNorm::new` checked that the scale's width splits into the groups.
            if weight_layout.shape().elem_count() != channels
                || bias_layout.shape().elem_count() != channels
            {
                candle_core::bail!("group norm: the scale and shift are not {channels} wide");
            }
            let (Some((x0, x1)), Some((w0, w1)), Some((b0, b1))) = (
                x_layout.contiguous_offsets(),
                weight_layout.contiguous_offsets(),
                bias_layout.contiguous_offsets(),
            ) else {
                candle_core::bail!("group norm: the tensors must be contiguous");
            };
            let spatial: usize = dims[2..].iter().product();
            let per_group = channels / self.groups;
            let group_len = per_group * spatial;
            let elements = batch * channels * spatial;
            let chunk = THREADS as usize * PER_THREAD;
            let chunks = group_len.div_ceil(chunk).max(1);
            let rows = batch * self.groups;
            let device = x.device().clone();
            let x_view = x.as_cuda_slice::<T>()?.slice(x0..x1);
            let w_view = weight.as_cuda_slice::<T>()?.slice(w0..w1);
            let b_view = bias.as_cuda_slice::<T>()?.slice(b0..b1);
            // SAFETY: the stats kernel writes all of `stats`, the apply kernel all of `y`.
            let mut stats: CudaSlice<f64> = unsafe { device.alloc::<f64>(2 * chunks * rows)? };
            let mut y: CudaSlice<T> = unsafe { device.alloc::<T>(elements)? };
            let as_u32 = |n: usize| {
                u32::try_from(n)
                    .map_err(|_| candle_core::Error::Msg("group norm: too large".into()))
            };
            let config = LaunchConfig {
                grid_dim: (as_u32(chunks)?, as_u32(rows)?, 1),
                block_dim: (THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            let (group_len, chunk, spatial) = (group_len as i64, chunk as i64, spatial as i64);
            let stats_kernel = device.get_or_load_custom_func(
                &format!("group_norm_stats_{suffix}"),
                "autonomy_group_norm",
                KERNELS.ptx()?,
            )?;
            let mut launch = stats_kernel.builder();
            launch.arg(&x_view);
            launch.arg(&mut stats);
            launch.arg(&group_len);
            launch.arg(&chunk);
            // SAFETY: the arguments match the kernel's; the grid covers every chunk of every
            // group, and `stats` holds two doubles per block.
            unsafe { launch.launch(config) }.w()?;
            let apply_kernel = device.get_or_load_custom_func(
                &format!("group_norm_apply_{suffix}"),
                "autonomy_group_norm",
                KERNELS.ptx()?,
            )?;
            let (groups, per_group) = (self.groups as i32, per_group as i32);
            let (eps, silu) = (self.eps as f32, i32::from(self.silu));
            let mut launch = apply_kernel.builder();
            launch.arg(&x_view);
            launch.arg(&mut y);
            launch.arg(&w_view);
            launch.arg(&b_view);
            launch.arg(&stats);
            launch.arg(&group_len);
            launch.arg(&chunk);
            launch.arg(&spatial);
            launch.arg(&groups);
            launch.arg(&per_group);
            launch.arg(&eps);
            launch.arg(&silu);
            // SAFETY: as above; `y` holds every element of `x`.
            unsafe { launch.launch(config) }.w()?;
            Ok((
                CudaStorage::wrap_cuda_slice(y, device),
                x_layout.shape().clone(),
            ))
        }
    }

    impl CustomOp3 for FusedGroupNorm {
        fn name(&self) -> &'static str {
            "autonomy-group-norm"
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
            candle_core::bail!("the fused group norm runs on CUDA tensors only")
        }

        fn cuda_fwd(
            &self,
            x: &CudaStorage,
            x_layout: &Layout,
            weight: &CudaStorage,
            weight_layout: &Layout,
            bias: &CudaStorage,
            bias_layout: &Layout,
        ) -> Result<(CudaStorage, Shape)> {
            let inputs = Inputs {
                x: (x, x_layout),
                weight: (weight, weight_layout),
                bias: (bias, bias_layout),
            };
            match x.dtype() {
                DType::F32 => self.run::<f32>("f32", &inputs),
                DType::F16 => self.run::<half::f16>("f16", &inputs),
                DType::BF16 => self.run::<half::bf16>("bf16", &inputs),
                other => candle_core::bail!("group norm of {other:?} tensors"),
            }
        }
    }
}
