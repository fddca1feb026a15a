//! Choosing where models run: the CPU always; CUDA when built with the `cuda` feature.

use candle_core::Device;

/// Resolves a device name (`cpu`, `cuda`, `cuda:N`).
pub fn select(name: &str) -> Result<Device, candle_core::Error> {
    match name {
        "cpu" => Ok(Device::Cpu),
        cuda if cuda == "cuda" || cuda.starts_with("cuda:") => {
            let ordinal = cuda
                .strip_prefix("cuda:")
                .map(|n| {
                    n.parse::<usize>().map_err(|_| {
                        candle_core::Error::Msg(format!(
                            "device `{name}`: `{n}` is not a GPU index"
                        ))
                    })
                })
                .transpose()?
                .unwrap_or(0);
            Device::new_cuda(ordinal)
        }
        other => Err(candle_core::Error::Msg(format!(
            "unknown device `{other}`: use cpu, cuda or cuda:N"
        ))),
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
        assert_eq!(name(&Device::Cpu), "cpu");
    }
}
