//! Attention without a score tensor on CUDA (the `cuda` feature): one kernel of
//! Autonomy's, compiled once by NVRTC, computes `softmax(q·kᵀ·scale)·v` for f16 and bf16 in the
//! manner of FlashAttention-2. Each block takes 64 queries of one head (16 per warp, held in
//! registers), walks the keys in tiles of 64 staged through shared memory, multiplies on the
//! tensor cores (`mma.sync` m16n8k16, f32 accumulators) and keeps a running maximum and sum per
//! query, so the `(heads, queries, keys)` scores never reach the GPU's memory. candle's
//! operations write them, soften them and read them back: at SD 1.5's 64×64 latents that is
//! 512 MB per attention layer, the largest single cost of a UNet step on an H100.
//!
//! The kernel reads each head where the projections wrote it, `(batch, tokens, heads · width)`,
//! and writes the result the same way, so no copies split the heads apart or merge them back.
//! Head widths up to [`WIDEST`] run here (SD 1.5's 40, 80 and 160, SD 2.x's and SDXL's 64),
//! padded with zeros to a multiple of 16; wider heads (the VAE's single 512-wide head) and f32
//! tensors take candle's operations.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{CudaStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};

use super::nvrtc::Kernels;

static KERNELS: Kernels = Kernels::new("the attention kernel", SOURCE, false);

/// The widest head the kernel takes.
pub const WIDEST: usize = 160;
/// The padded head widths the kernel is instantiated for.
const WIDTHS: [usize; 8] = [16, 32, 48, 64, 80, 96, 128, 160];
/// Queries per block (16 per warp).
const QUERIES: u32 = 64;

/// The kernel, one instantiation per padded width and 16-bit type. Values travel as their 16
/// bits; `cvt` packs pairs of f32 into f16x2/bf16x2, so no header is needed.
const SOURCE: &str = r#"
#define KEYS 64
#define NEG_INF __int_as_float(0xff800000)
#define WARPS 4

template <bool BF> __device__ __forceinline__ unsigned pack(float lo, float hi) {
    unsigned r;
    if (BF) asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    else asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

// c (16×8, f32) += a (16×16) · b (16×8), in the fragment layouts of PTX's m16n8k16.
template <bool BF> __device__ __forceinline__ void mma(float* c, const unsigned* a, unsigned b0,
                                                       unsigned b1) {
    if (BF)
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
                     "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    else
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, "
                     "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Elements (row, col) and (row, col + 1) of a rows×width matrix whose rows lie `stride`
// apart, zero outside it.
__device__ __forceinline__ unsigned load_pair(const unsigned short* p, int rows, long stride,
                                              int width, int row, int col) {
    unsigned lo = 0, hi = 0;
    if (row < rows) {
        const unsigned short* r = p + (long)row * stride;
        if (col < width) lo = r[col];
        if (col + 1 < width) hi = r[col + 1];
    }
    return lo | (hi << 16);
}

// grid (⌈n / 64⌉, batch · heads), 128 threads: queries [64·x, 64·x + 64) of head y mod heads
// of sample y / heads. q and o (batch, n, heads · d), k and v (batch, m, heads · d): each
// token's heads side by side, as the projections write them; scale is the softmax's scale
// times log2(e).
template <int D, bool BF>
__device__ void attention(const unsigned short* q, const unsigned short* k,
                          const unsigned short* v, unsigned short* o, int n, int m, int d,
                          int heads, float scale) {
    __shared__ unsigned short keys[KEYS][D + 8];
    __shared__ unsigned short values[D][KEYS + 8];  // transposed: values[dim][key]
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int row = blockIdx.x * (16 * WARPS) + warp * 16 + g;
    const long stride = (long)heads * d, sample = blockIdx.y / heads;
    const int head = blockIdx.y % heads;
    q += (sample * n) * stride + head * d; o += (sample * n) * stride + head * d;
    k += (sample * m) * stride + head * d; v += (sample * m) * stride + head * d;

    unsigned qa[D / 16][4];
    for (int s = 0; s < D / 16; s++) {
        int col = s * 16 + 2 * t;
        qa[s][0] = load_pair(q, n, stride, d, row, col);
        qa[s][1] = load_pair(q, n, stride, d, row + 8, col);
        qa[s][2] = load_pair(q, n, stride, d, row, col + 8);
        qa[s][3] = load_pair(q, n, stride, d, row + 8, col + 8);
    }
    float acc[D / 8][4];
    for (int j = 0; j < D / 8; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
    float top[2] = {NEG_INF, NEG_INF}, sum[2] = {0.f, 0.f};

    for (int k0 = 0; k0 < m; k0 += KEYS) {
        __syncthreads();
        for (int i = threadIdx.x; i < KEYS * D; i += 32 * WARPS) {
            int key = i / D, col = i % D;
            unsigned short kv = 0, vv = 0;
            if (k0 + key < m && col < d) {
                kv = k[(long)(k0 + key) * stride + col];
                vv = v[(long)(k0 + key) * stride + col];
            }
            keys[key][col] = kv;
            values[col][key] = vv;
        }
        __syncthreads();

        float s[KEYS / 8][4];
        for (int j = 0; j < KEYS / 8; j++) {
            s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
            for (int c = 0; c < D / 16; c++) {
                const unsigned short* kr = &keys[j * 8 + g][c * 16 + 2 * t];
                mma<BF>(s[j], qa[c], *(const unsigned*)kr, *(const unsigned*)(kr + 8));
            }
        }
        float most[2] = {NEG_INF, NEG_INF};
        for (int j = 0; j < KEYS / 8; j++)
            for (int e = 0; e < 4; e++) {
                int key = k0 + j * 8 + 2 * t + (e & 1);
                s[j][e] = key < m ? s[j][e] * scale : NEG_INF;
                most[e >> 1] = fmaxf(most[e >> 1], s[j][e]);
            }
        float alpha[2];
        for (int r = 0; r < 2; r++) {
            most[r] = fmaxf(most[r], __shfl_xor_sync(0xffffffffu, most[r], 1));
            most[r] = fmaxf(most[r], __shfl_xor_sync(0xffffffffu, most[r], 2));
            float next = fmaxf(top[r], most[r]);
            alpha[r] = exp2f(top[r] - next);
            top[r] = next;
            sum[r] *= alpha[r];
        }
        for (int j = 0; j < KEYS / 8; j++)
            for (int e = 0; e < 4; e++) {
                s[j][e] = exp2f(s[j][e] - top[e >> 1]);
                sum[e >> 1] += s[j][e];
            }
        for (int j = 0; j < D / 8; j++) {
            acc[j][0] *= alpha[0]; acc[j][1] *= alpha[0];
            acc[j][2] *= alpha[1]; acc[j][3] *= alpha[1];
        }
        for (int c = 0; c < KEYS / 16; c++) {
            unsigned pa[4] = {pack<BF>(s[2 * c][0], s[2 * c][1]),
                              pack<BF>(s[2 * c][2], s[2 * c][3]),
                              pack<BF>(s[2 * c + 1][0], s[2 * c + 1][1]),
                              pack<BF>(s[2 * c + 1][2], s[2 * c + 1][3])};
            for (int j = 0; j < D / 8; j++) {
                const unsigned short* vr = &values[j * 8 + g][c * 16 + 2 * t];
                mma<BF>(acc[j], pa, *(const unsigned*)vr, *(const unsigned*)(vr + 8));
            }
        }
    }

    for (int r = 0; r < 2; r++) {
        sum[r] += __shfl_xor_sync(0xffffffffu, sum[r], 1);
        sum[r] += __shfl_xor_sync(0xffffffffu, sum[r], 2);
    }
    for (int j = 0; j < D / 8; j++) {
        int col = j * 8 + 2 * t;
        for (int r = 0; r < 2; r++) {
            int at = row + 8 * r;
            if (at >= n) continue;
            unsigned packed = pack<BF>(acc[j][2 * r] / sum[r], acc[j][2 * r + 1] / sum[r]);
            if (col < d) o[(long)at * stride + col] = (unsigned short)(packed & 0xffffu);
            if (col + 1 < d) o[(long)at * stride + col + 1] = (unsigned short)(packed >> 16);
        }
    }
}

#define INSTANCE(D)                                                                         \
extern "C" __global__ void __launch_bounds__(128) flash_attention_f16_##D(                 \
        const unsigned short* q, const unsigned short* k, const unsigned short* v,          \
        unsigned short* o, int n, int m, int d, int heads, float scale) {                   \
    attention<D, false>(q, k, v, o, n, m, d, heads, scale);                                 \
}                                                                                           \
extern "C" __global__ void __launch_bounds__(128) flash_attention_bf16_##D(                \
        const unsigned short* q, const unsigned short* k, const unsigned short* v,          \
        unsigned short* o, int n, int m, int d, int heads, float scale) {                   \
    attention<D, true>(q, k, v, o, n, m, d, heads, scale);                                  \
}

INSTANCE(16) INSTANCE(32) INSTANCE(48) INSTANCE(64) INSTANCE(80) INSTANCE(96) INSTANCE(128)
INSTANCE(160)
"#;

/// Whether [`attention`] runs `q`, `k` and `v` split into `heads` on the kernel: CUDA f16 or
/// bf16 `(batch, tokens, heads · width)` tensors of one width no wider than [`WIDEST`].
pub fn takes(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> bool {
    let dim = |t: &Tensor| t.dims().last().copied();
    q.device().is_cuda()
        && matches!(q.dtype(), DType::F16 | DType::BF16)
        && q.rank() == 3
        && heads > 0
        && dim(q).is_some_and(|dim| dim.is_multiple_of(heads) && dim / heads <= WIDEST)
        && dim(q) == dim(k)
        && dim(q) == dim(v)
}

/// `softmax(q·kᵀ·scale)·v` of each of `heads` heads, for `(batch, tokens, heads · width)` CUDA
/// tensors that [`takes`] accepts; the result is laid out as `q`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, scale: f64) -> Result<Tensor> {
    q.contiguous()?.apply_op3_no_bwd(
        &k.contiguous()?,
        &v.contiguous()?,
        &FlashAttention {
            heads,
            scale: scale as f32,
        },
    )
}

struct FlashAttention {
    heads: usize,
    scale: f32,
}

impl FlashAttention {
    fn run<T: CudaDType + DeviceRepr>(
        &self,
        suffix: &str,
        (q, q_layout): (&CudaStorage, &Layout),
        (k, k_layout): (&CudaStorage, &Layout),
        (v, v_layout): (&CudaStorage, &Layout),
    ) -> Result<(CudaStorage, Shape)> {
        let (batch, n, dim) = q_layout.shape().dims3()?;
        let (k_batch, m, k_dim) = k_layout.shape().dims3()?;
        let (v_batch, v_m, v_dim) = v_layout.shape().dims3()?;
        let heads = self.heads;
        if (k_batch, k_dim) != (batch, dim)
            || (v_batch, v_m, v_dim) != (batch, m, dim)
            || m == 0
            || heads == 0
            || !dim.is_multiple_of(heads)
        {
            candle_core::bail!(
                "attention: queries {:?}, keys {:?} and values {:?} do not fit {heads} heads",
                q_layout.dims(),
                k_layout.dims(),
                v_layout.dims()
            );
        }
        let d = dim / heads;
        let Some(&width) = WIDTHS.iter().find(|&&w| w >= d) else {
            candle_core::bail!("attention: heads {d} wide are wider than {WIDEST}");
        };
        let (Some((q0, q1)), Some((k0, k1)), Some((v0, v1))) = (
            q_layout.contiguous_offsets(),
            k_layout.contiguous_offsets(),
            v_layout.contiguous_offsets(),
        ) else {
            candle_core::bail!("attention: the tensors must be contiguous");
        };
        let too_large = || candle_core::Error::Msg("attention: too large".into());
        let device = q.device().clone();
        let q_view = q.as_cuda_slice::<T>()?.slice(q0..q1);
        let k_view = k.as_cuda_slice::<T>()?.slice(k0..k1);
        let v_view = v.as_cuda_slice::<T>()?.slice(v0..v1);
        // SAFETY: the kernel writes every element of `o`: each of the n rows of each head.
        let mut o: CudaSlice<T> = unsafe { device.alloc::<T>(batch * n * dim)? };
        let config = LaunchConfig {
            grid_dim: (
                u32::try_from(n.div_ceil(QUERIES as usize)).map_err(|_| too_large())?,
                u32::try_from(batch * heads).map_err(|_| too_large())?,
                1,
            ),
            block_dim: (QUERIES * 2, 1, 1),
            shared_mem_bytes: 0,
        };
        let as_i32 = |x: usize| i32::try_from(x).map_err(|_| too_large());
        let (n, m, d, heads) = (as_i32(n)?, as_i32(m)?, as_i32(d)?, as_i32(heads)?);
        let scale = self.scale * std::f32::consts::LOG2_E;
        let kernel = device.get_or_load_custom_func(
            &format!("flash_attention_{suffix}_{width}"),
            "autonomy_flash_attention",
            KERNELS.ptx()?,
        )?;
        let mut launch = kernel.builder();
        launch.arg(&q_view);
        launch.arg(&k_view);
        launch.arg(&v_view);
        launch.arg(&mut o);
        launch.arg(&n);
        launch.arg(&m);
        launch.arg(&d);
        launch.arg(&heads);
        launch.arg(&scale);
        // SAFETY: the arguments match the kernel's; the grid covers every query of every head
        // in blocks of 64 (four warps of 16), and the views hold batch·n·dim (queries) and
        // batch·m·dim (keys, values) elements as checked above.
        unsafe { launch.launch(config) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(o, device),
            q_layout.shape().clone(),
        ))
    }
}

impl CustomOp3 for FlashAttention {
    fn name(&self) -> &'static str {
        "autonomy-flash-attention"
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
        candle_core::bail!("the flash attention kernel runs on CUDA tensors only")
    }

    fn cuda_fwd(
        &self,
        q: &CudaStorage,
        q_layout: &Layout,
        k: &CudaStorage,
        k_layout: &Layout,
        v: &CudaStorage,
        v_layout: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (q, k, v) = ((q, q_layout), (k, k_layout), (v, v_layout));
        match q.0.dtype() {
            DType::F16 => self.run::<half::f16>("f16", q, k, v),
            DType::BF16 => self.run::<half::bf16>("bf16", q, k, v),
            other => {
                candle_core::bail!("the flash attention kernel takes f16 or bf16, not {other:?}")
            }
        }
    }
}
