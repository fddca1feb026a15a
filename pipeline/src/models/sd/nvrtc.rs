//! What Autonomy's own CUDA kernels (the `cuda` feature) share: the conversions between
//! f32 and the 16-bit types their CUDA C++ uses, and compiling a kernel source to PTX with NVRTC
//! once per process, for compute capability 8.0 and up.

use std::sync::OnceLock;

use candle_core::Result;
use candle_core::cuda_backend::cudarc::nvrtc::{CompileOptions, compile_ptx_with_opts};

/// CUDA C++ that loads f32, f16 and bf16 values as f32 and stores f32 as them (`load_f16`,
/// `store_bf16`, …): the 16-bit types travel as their bits and PTX instructions convert them,
/// so that no header is needed.
pub(super) const CONVERSIONS: &str = r#"
__device__ __forceinline__ float load_f32(const float* p, long i) { return p[i]; }
__device__ __forceinline__ void store_f32(float* p, long i, float v) { p[i] = v; }
__device__ __forceinline__ float load_f16(const unsigned short* p, long i) {
    float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(p[i])); return f;
}
__device__ __forceinline__ void store_f16(unsigned short* p, long i, float v) {
    unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v)); p[i] = h;
}
__device__ __forceinline__ float load_bf16(const unsigned short* p, long i) {
    return __uint_as_float(((unsigned int)p[i]) << 16);
}
__device__ __forceinline__ void store_bf16(unsigned short* p, long i, float v) {
    unsigned short h; asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(v)); p[i] = h;
}
"#;

/// A kernel source, compiled on first use and kept.
pub(super) struct Kernels {
    what: &'static str,
    source: &'static str,
    conversions: bool,
    ptx: OnceLock<std::result::Result<String, String>>,
}

impl Kernels {
    /// `source` (named `what` in errors), after [`CONVERSIONS`] when `conversions`.
    pub(super) const fn new(what: &'static str, source: &'static str, conversions: bool) -> Self {
        Self {
            what,
            source,
            conversions,
            ptx: OnceLock::new(),
        }
    }

    /// The PTX, compiled on the first call.
    pub(super) fn ptx(&'static self) -> Result<&'static str> {
        self.ptx
            .get_or_init(|| {
                let options = CompileOptions {
                    arch: Some("compute_80"),
                    ..CompileOptions::default()
                };
                let source = if self.conversions {
                    format!("{CONVERSIONS}{}", self.source)
                } else {
                    self.source.to_string()
                };
                compile_ptx_with_opts(source, options)
                    .map(|ptx| ptx.to_src())
                    .map_err(|error| format!("compiling {}: {error:?}", self.what))
            })
            .as_deref()
            .map_err(|error| candle_core::Error::Msg(error.clone()))
    }
}
