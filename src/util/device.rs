//! Parsing device and dtype names.

use anyhow::{bail, Result};
use candle_core::{DType, Device};

/// `cpu`, `cuda`, `cuda:N` or `metal`.
pub fn parse_device(name: &str) -> Result<Device> {
    let name = name.trim();
    if name == "cpu" {
        return Ok(Device::Cpu);
    }
    if name == "metal" {
        return Ok(Device::new_metal(0)?);
    }
    if let Some(rest) = name.strip_prefix("cuda") {
        let ordinal = match rest.strip_prefix(':') {
            Some(n) => n
                .parse::<usize>()
                .map_err(|_| anyhow::anyhow!("device `{name}`: expected cuda:N"))?,
            None if rest.is_empty() => 0,
            None => bail!("device `{name}`: expected cuda:N"),
        };
        if !candle_core::utils::cuda_is_available() {
            bail!("device `{name}` requested but this build has no CUDA support; rebuild with --features cuda");
        }
        return Ok(Device::new_cuda(ordinal)?);
    }
    bail!("unknown device `{name}`; expected cpu, cuda:N or metal")
}

/// `f32`, `bf16` or `f16`.
pub fn parse_dtype(name: &str) -> Result<DType> {
    match name.trim() {
        "f32" | "float32" => Ok(DType::F32),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        "f16" | "float16" => Ok(DType::F16),
        other => bail!("unknown dtype `{other}`; expected f32 or bf16"),
    }
}
