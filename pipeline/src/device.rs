//! Choosing where models run: the CPU always; CUDA when built with the `cuda` feature, Metal
//! (macOS) with the `metal` feature.

use candle_core::Device;

/// Resolves a device name (`cpu`, `cuda`, `cuda:N`, `metal`, `metal:N`).
pub fn select(name: &str) -> Result<Device, candle_core::Error> {
    let ordinal = |prefix: &str| -> Result<Option<usize>, candle_core::Error> {
        if name == prefix {
            return Ok(Some(0));
        }
        name.strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(|n| {
                n.parse::<usize>().map_err(|_| {
                    candle_core::Error::Msg(format!("device `{name}`: `{n}` is not a GPU index"))
                })
            })
            .transpose()
    };
    if name == "cpu" {
        Ok(Device::Cpu)
    } else if let Some(gpu) = ordinal("cuda")? {
        Device::new_cuda(gpu)
    } else if let Some(gpu) = ordinal("metal")? {
        Device::new_metal(gpu)
    } else {
        Err(candle_core::Error::Msg(format!(
            "unknown device `{name}`: use cpu, cuda, cuda:N, metal or metal:N"
        )))
    }
}

/// How manifests, cache keys and model cards name a device: `cuda:0`, `metal:0`, and the CPU
/// by what decides its floating-point results bit for bit — the vector extensions the matrix
/// products and kernels pick at run time, and the cache sizes the products block their loops
/// by: `cpu (x86-64-v4, caches 48K/2048K/36864K)`. Pixels made on another kind of CPU can
/// differ in their last bits, so `verify --reproduce` compares them by PSNR rather than bit for
/// bit.
pub fn name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => {
            let caches: Vec<String> = gemm_common::cache::CACHE_INFO
                .iter()
                .map(|cache| format!("{}K", cache.cache_bytes / 1024))
                .collect();
            format!("cpu ({}, caches {})", vector_level(), caches.join("/"))
        }
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// The widest vector extensions this CPU runs the products and kernels with: gemm's x86-64-v4
/// needs AVX-512 F, BW, CD, DQ and VL; the attention and convolution kernels take AVX-512F alone.
fn vector_level() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        let v3 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        let avx512f = is_x86_feature_detected!("avx512f");
        let v4 = v3
            && avx512f
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512cd")
            && is_x86_feature_detected!("avx512dq")
            && is_x86_feature_detected!("avx512vl");
        match (v4, avx512f, v3) {
            (true, _, _) => "x86-64-v4",
            (false, true, _) => "x86-64 with AVX-512F",
            (false, false, true) => "x86-64-v3",
            _ => "x86-64",
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::env::consts::ARCH
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_always_works_and_unknown_names_are_refused() {
        assert!(select("cpu").unwrap().is_cpu());
        assert!(select("tpu").unwrap_err().to_string().contains("tpu"));
        assert!(select("cuda:x").is_err());
        assert!(select("cudax").is_err());
        // Without the features the GPU backends say they are not compiled in.
        #[cfg(not(feature = "metal"))]
        assert!(select("metal").is_err());
        let cpu = name(&Device::Cpu);
        assert!(
            cpu.starts_with("cpu (") && cpu.contains(", caches "),
            "{cpu}"
        );
        assert_eq!(cpu, name(&Device::Cpu), "the same machine, the same name");
    }
}
