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

/// How manifests, cache keys and model cards name a device: `cpu`, `cuda:0`, `metal:0`.
pub fn name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
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
        assert_eq!(name(&Device::Cpu), "cpu");
    }
}
