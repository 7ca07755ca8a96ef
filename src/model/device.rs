//! Device choice: `cpu` (default) or `cuda[:N]`, the latter only in builds with the
//! `cuda` feature.

use anyhow::{bail, Result};
use candle_core::Device;

/// Parse a `--device` value into a candle device.
pub fn parse_device(spec: &str) -> Result<Device> {
    let spec = spec.trim().to_ascii_lowercase();
    if spec == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = match spec.as_str() {
        "cuda" | "gpu" => Some(0),
        s => s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok()),
    };
    let Some(ordinal) = ordinal else {
        bail!("unknown device '{spec}': use cpu, cuda or cuda:N");
    };
    if !cfg!(feature = "cuda") {
        bail!(
            "device '{spec}' needs CUDA, but this binary was built without it: rebuild with \
             `cargo build --release --features cuda` (needs nvcc and the CUDA libraries)"
        );
    }
    Ok(Device::new_cuda(ordinal)?)
}

/// A short name for a device, for reports and `/info`.
pub fn device_name(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".to_string(),
        Device::Cuda(_) => "cuda".to_string(),
        Device::Metal(_) => "metal".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_parses_and_garbage_is_rejected() {
        assert!(matches!(parse_device("cpu"), Ok(Device::Cpu)));
        assert!(matches!(parse_device(" CPU "), Ok(Device::Cpu)));
        let err = parse_device("tpu").unwrap_err().to_string();
        assert!(err.contains("unknown device"), "{err}");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_feature_names_the_fix() {
        let err = parse_device("cuda").unwrap_err().to_string();
        assert!(err.contains("--features cuda"), "{err}");
    }
}
