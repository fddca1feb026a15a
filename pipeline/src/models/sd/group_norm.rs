//! Group normalisation, alone or followed by SiLU (as every ResNet block of the UNet and the
//! VAE, and both networks' output heads, use it), as one fused operation: the group's mean and
//! variance in one read, then each element normalised, scaled, shifted and (when asked) through
//! SiLU in a second read and one write — where candle's operations make about eight passes in
//! f32 and SiLU two more.
//!
//! - **CPU, f32**: each group is summed in chunks of 4096 values on the widest vectors
//!   the CPU has (a chunk's mean, then its squared deviations from it while the chunk is in
//!   cache), the chunks combined in f64 (Chan et al.'s pairwise update, so a large mean costs
//!   no precision), and each channel plane then written in one vectorised pass.
//! - **CUDA** (the `cuda` feature): two kernels of Autonomy's (compiled once by NVRTC): each
//!   block of a group sums its part of the group and its squares in f64, then each block reads
//!   the group's sums and writes its part.
//! - Elsewhere (f16 on the CPU, Metal) candle's `GroupNorm`, then candle's SiLU.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Module, Result, Shape, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use super::kernels::{f32s, on_widest_vectors, sigmoid_of};

/// Values per chunk of a group whose moments the CPU takes in one go (16 KiB: in L1 for the
/// second pass over it).
const CHUNK: usize = 1 << 12;

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

    /// The group norm followed by SiLU.
    pub fn forward_silu(&self, xs: &Tensor) -> Result<Tensor> {
        self.normalise(xs, true)
    }

    /// The group norm of `xs`, through SiLU when `silu`: fused on the CPU in f32 and on CUDA,
    /// candle's operations elsewhere.
    fn normalise(&self, xs: &Tensor, silu: bool) -> Result<Tensor> {
        let fused = (xs.device().is_cpu() && xs.dtype() == DType::F32)
            || (cfg!(feature = "cuda") && xs.device().is_cuda());
        if fused {
            return xs.contiguous()?.apply_op3_no_bwd(
                &self.weight.to_dtype(xs.dtype())?,
                &self.bias.to_dtype(xs.dtype())?,
                &FusedGroupNorm {
                    groups: self.groups,
                    eps: self.eps,
                    silu,
                },
            );
        }
        let normed = candle_nn::GroupNorm::new(
            self.weight.clone(),
            self.bias.clone(),
            self.weight.dim(0)?,
            self.groups,
            self.eps,
        )?
        .forward(xs)?;
        if silu {
            candle_nn::ops::silu(&normed)
        } else {
            Ok(normed)
        }
    }
}

impl Module for GroupNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.normalise(xs, false)
    }
}

/// The fused group norm of `x (n, channels, …)` with `weight` and `bias (channels)` of its
/// dtype, through SiLU when `silu`.
struct FusedGroupNorm {
    groups: usize,
    eps: f64,
    silu: bool,
}

/// The sizes a group norm of a `dims` tensor works in, checked against its scale's and
/// shift's lengths.
#[derive(Clone, Copy)]
struct Sizes {
    /// Images × groups.
    rows: usize,
    /// Channels per group.
    per_group: usize,
    /// Values per channel plane.
    spatial: usize,
}

impl FusedGroupNorm {
    fn sizes(&self, dims: &[usize], weight: usize, bias: usize) -> Result<Sizes> {
        let (Some(&batch), Some(&channels)) = (dims.first(), dims.get(1)) else {
            candle_core::bail!("group norm of a {dims:?} tensor");
        };
        if weight != channels || bias != channels {
            candle_core::bail!(
                "group norm: the scale ({weight}) and shift ({bias}) are not {channels} wide"
            );
        }
        if self.groups == 0 || !channels.is_multiple_of(self.groups) {
            candle_core::bail!(
                "group norm: {channels} channels do not split into {} groups",
                self.groups
            );
        }
        Ok(Sizes {
            rows: batch * self.groups,
            per_group: channels / self.groups,
            spatial: dims[2..].iter().product(),
        })
    }
}

impl CustomOp3 for FusedGroupNorm {
    fn name(&self) -> &'static str {
        "autonomy-group-norm"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        weight: &CpuStorage,
        weight_layout: &Layout,
        bias: &CpuStorage,
        bias_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let xs = f32s(x, x_layout, "group norm input")?;
        let weight = f32s(weight, weight_layout, "group norm scale")?;
        let bias = f32s(bias, bias_layout, "group norm shift")?;
        let sizes = self.sizes(x_layout.dims(), weight.len(), bias.len())?;
        let Sizes {
            rows,
            per_group,
            spatial,
        } = sizes;
        let group_len = per_group * spatial;
        let chunks = group_len.div_ceil(CHUNK).max(1);
        // Each chunk's (values, mean, squared deviations), every group's chunks in turn.
        let parts: Vec<(f64, f64, f64)> = (0..rows * chunks)
            .into_par_iter()
            .map(|job| {
                let (row, chunk) = (job / chunks, job % chunks);
                let start = row * group_len + chunk * CHUNK;
                let end = (start + CHUNK).min((row + 1) * group_len);
                let values = &xs[start..end];
                let (origin, offset, squares) = chunk_moments(values);
                let mean = f64::from(origin) + f64::from(offset);
                (values.len() as f64, mean, f64::from(squares))
            })
            .collect();
        // Per image and group: the scale and shift each of its channels' values take.
        let moments: Vec<(f64, f64)> = parts
            .chunks(chunks)
            .map(|parts| {
                let (mut count, mut mean, mut squares) = (0.0, 0.0, 0.0);
                for &(n, m, s) in parts {
                    // Chan et al.: the merged squared deviations gain the means' gap.
                    let total = count + n;
                    let gap = m - mean;
                    mean += gap * n / total;
                    squares += s + gap * gap * count * n / total;
                    count = total;
                }
                (mean, 1.0 / (squares / count + self.eps).sqrt())
            })
            .collect();
        let mut output = vec![0f32; xs.len()];
        let channels = self.groups * per_group;
        output
            .par_chunks_mut(spatial.max(1))
            .zip(xs.par_chunks(spatial.max(1)))
            .enumerate()
            .for_each(|(plane, (out, values))| {
                let channel = plane % channels;
                let (mean, rstd) = moments[plane / per_group];
                let scale = (rstd * f64::from(weight[channel])) as f32;
                // The mean in two parts, so that values near it keep their digits.
                let high = mean as f32;
                let mean = [high, (mean - f64::from(high)) as f32];
                normalise_plane(values, out, mean, scale, bias[channel], self.silu);
            });
        Ok((CpuStorage::F32(output), x_layout.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        x_layout: &Layout,
        weight: &candle_core::CudaStorage,
        weight_layout: &Layout,
        bias: &candle_core::CudaStorage,
        bias_layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        let sizes = self.sizes(
            x_layout.dims(),
            weight_layout.shape().elem_count(),
            bias_layout.shape().elem_count(),
        )?;
        let inputs = cuda::Inputs {
            x: (x, x_layout),
            weight: (weight, weight_layout),
            bias: (bias, bias_layout),
            sizes,
        };
        match x.dtype() {
            DType::F32 => self.run::<f32>("f32", &inputs),
            DType::F16 => self.run::<half::f16>("f16", &inputs),
            DType::BF16 => self.run::<half::bf16>("bf16", &inputs),
            other => candle_core::bail!("group norm of {other:?} tensors"),
        }
    }
}

on_widest_vectors! {
    /// The moments of `values`, on the widest vectors the CPU has: its first value, the mean's
    /// offset from it (summed from it, so that a large mean loses no digits) and the sum of the
    /// squared deviations from the mean.
    fn chunk_moments => chunk_moments_any(values: &[f32]) -> (f32, f32, f32)
}

#[inline(always)]
fn chunk_moments_any(values: &[f32]) -> (f32, f32, f32) {
    /// Independent sums, so that the loops vectorise (one AVX-512 register's worth).
    const LANES: usize = 16;
    let origin = values.first().copied().unwrap_or(0.0);
    let lanes = values.chunks_exact(LANES);
    let rest = lanes.remainder();
    let mut sums = [0f32; LANES];
    for lane in lanes.clone() {
        for (sum, &v) in sums.iter_mut().zip(lane) {
            *sum += v - origin;
        }
    }
    let total = sums.iter().sum::<f32>() + rest.iter().map(|&v| v - origin).sum::<f32>();
    let offset = total / values.len().max(1) as f32;
    let deviation = |v: f32| (v - origin) - offset;
    let mut squares = [0f32; LANES];
    for lane in lanes {
        for (square, &v) in squares.iter_mut().zip(lane) {
            *square += deviation(v) * deviation(v);
        }
    }
    let rest_squares: f32 = rest.iter().map(|&v| deviation(v) * deviation(v)).sum();
    (origin, offset, squares.iter().sum::<f32>() + rest_squares)
}

on_widest_vectors! {
    /// `(values − mean)·scale + shift` into `out`, through SiLU when `silu`, on the widest
    /// vectors the CPU has; `mean` is in two parts, the second the first's rounding error
    /// (taken off in turn, so that values near the mean keep their digits).
    fn normalise_plane => normalise_plane_any(
        values: &[f32],
        out: &mut [f32],
        mean: [f32; 2],
        scale: f32,
        shift: f32,
        silu: bool
    )
}

#[inline(always)]
fn normalise_plane_any(
    values: &[f32],
    out: &mut [f32],
    [high, low]: [f32; 2],
    scale: f32,
    shift: f32,
    silu: bool,
) {
    if silu {
        for (o, &v) in out.iter_mut().zip(values) {
            let y = ((v - high) - low) * scale + shift;
            *o = y * sigmoid_of(y);
        }
    } else {
        for (o, &v) in out.iter_mut().zip(values) {
            *o = ((v - high) - low) * scale + shift;
        }
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{
        CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg,
    };
    use candle_core::cuda_backend::{CudaDType, WrapErr};
    use candle_core::{CudaStorage, Layout, Result, Shape, WithDType};

    use super::{FusedGroupNorm, Sizes};
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

    /// The op's three tensors with their layouts, and the sizes it works in.
    pub(super) struct Inputs<'a> {
        pub(super) x: (&'a CudaStorage, &'a Layout),
        pub(super) weight: (&'a CudaStorage, &'a Layout),
        pub(super) bias: (&'a CudaStorage, &'a Layout),
        pub(super) sizes: Sizes,
    }

    impl FusedGroupNorm {
        /// The two kernels for `T` (named with `suffix`) over `inputs`.
        pub(super) fn run<T: CudaDType + DeviceRepr + WithDType>(
            &self,
            suffix: &str,
            inputs: &Inputs,
        ) -> Result<(CudaStorage, Shape)> {
            let Inputs {
                x: (x, x_layout),
                weight: (weight, weight_layout),
                bias: (bias, bias_layout),
                sizes:
                    Sizes {
                        rows,
                        per_group,
                        spatial,
                    },
            } = *inputs;
            let (Some((x0, x1)), Some((w0, w1)), Some((b0, b1))) = (
                x_layout.contiguous_offsets(),
                weight_layout.contiguous_offsets(),
                bias_layout.contiguous_offsets(),
            ) else {
                candle_core::bail!("group norm: the tensors must be contiguous");
            };
            let group_len = per_group * spatial;
            let elements = rows * group_len;
            let chunk = THREADS as usize * PER_THREAD;
            let chunks = group_len.div_ceil(chunk).max(1);
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
}

#[cfg(test)]
mod tests {
    use super::super::max_abs_diff;
    use super::*;
    use candle_core::Device;

    /// A group norm of `channels` with a random scale and shift, and candle's own of the same
    /// in f64 (whose f32 one loses digits to a large mean).
    fn norms(groups: usize, channels: usize, eps: f64) -> (GroupNorm, candle_nn::GroupNorm) {
        let cpu = &Device::Cpu;
        let weight = Tensor::rand(0.5f32, 1.5, channels, cpu).unwrap();
        let bias = Tensor::rand(-0.5f32, 0.5, channels, cpu).unwrap();
        let f64s = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
        let reference =
            candle_nn::GroupNorm::new(f64s(&weight), f64s(&bias), channels, groups, eps).unwrap();
        let vb = VarBuilder::from_tensors(
            [("weight".to_string(), weight), ("bias".to_string(), bias)].into(),
            DType::F32,
            cpu,
        );
        (
            GroupNorm::new(groups, channels, eps, vb).unwrap(),
            reference,
        )
    }

    #[test]
    fn the_fused_cpu_norm_is_candles_group_norm_and_silu() {
        // Planes smaller than a vector, one not a multiple of it, groups longer than a chunk
        // (several chunks with a remainder), a batch, and a large mean over a small spread.
        for (dims, groups, mean, spread) in [
            (vec![1, 8, 3, 1], 4, 0.0, 1.0),
            (vec![2, 6, 7, 5], 3, 0.5, 2.0),
            (vec![1, 64, 33, 31], 4, -1.0, 3.0),
            (vec![2, 32, 20, 20], 32, 0.0, 1.0),
            (vec![1, 16, 40, 40], 2, 1000.0, 0.01),
            (vec![1, 4, 9], 2, 0.0, 1.0),
        ] {
            let channels = dims[1];
            let (norm, reference) = norms(groups, channels, 1e-5);
            let xs = Tensor::randn(mean as f32, spread as f32, dims.clone(), &Device::Cpu).unwrap();
            let expected = reference
                .forward(&xs.to_dtype(DType::F64).unwrap())
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap();
            let normed = norm.forward(&xs).unwrap();
            assert_eq!(normed.dims(), &dims[..]);
            let err = max_abs_diff(&normed, &expected);
            assert!(err < 2e-5, "{dims:?}, {groups} groups: off by {err}");
            let expected = candle_nn::ops::silu(&expected).unwrap();
            let err = max_abs_diff(&norm.forward_silu(&xs).unwrap(), &expected);
            assert!(err < 2e-5, "{dims:?}, {groups} groups, SiLU: off by {err}");
        }
    }

    #[test]
    fn a_constant_group_is_its_shift_and_bad_sizes_are_refused() {
        let (norm, _) = norms(2, 4, 1e-6);
        let xs = Tensor::full(3f32, (1, 4, 5, 5), &Device::Cpu).unwrap();
        let shifts = norm.bias.to_vec1::<f32>().unwrap();
        let planes = norm.forward(&xs).unwrap().flatten_from(2).unwrap();
        for (plane, shift) in planes
            .get(0)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap()
            .iter()
            .zip(shifts)
        {
            assert!(plane.iter().all(|&v| (v - shift).abs() < 1e-6), "{plane:?}");
        }
        let err = norm.forward(&Tensor::zeros((1, 6, 2, 2), DType::F32, &Device::Cpu).unwrap());
        let message = err.unwrap_err().to_string();
        assert!(message.contains("not 6 wide"), "{message}");
    }
}
