//! Shared helpers for integration tests: seeded tiny models in temporary directories.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use tunescope::model::tiny::{make_tiny, TinySpec};
use tunescope::model::Architecture;

/// A tiny model written into a fresh temporary directory (kept alive by the returned guard).
pub struct TinyModel {
    pub dir: tempfile::TempDir,
}

impl TinyModel {
    pub fn new(arch: Architecture, seed: u64) -> Self {
        Self::with_spec(TinySpec::new(arch, seed))
    }

    pub fn with_spec(spec: TinySpec) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        make_tiny(&spec, dir.path()).expect("make tiny model");
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn path_buf(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub fn spec_str(&self) -> String {
        self.dir.path().to_string_lossy().into_owned()
    }
}

/// Largest absolute difference between two tensors of equal shape.
pub fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Every tensor of a safetensors file, on the CPU.
pub fn load_tensors(
    path: &std::path::Path,
) -> std::collections::HashMap<String, candle_core::Tensor> {
    candle_core::safetensors::load(path, &candle_core::Device::Cpu).unwrap()
}

/// The f32 bytes of a tensor, for bit-identity checks.
pub fn bytes_of(t: &candle_core::Tensor) -> Vec<u8> {
    let values: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A `(B, T)` attention mask as rows of booleans (true for real tokens).
pub fn valid_rows(mask: &candle_core::Tensor) -> Vec<Vec<bool>> {
    mask.to_vec2::<u32>()
        .unwrap()
        .into_iter()
        .map(|r| r.into_iter().map(|v| v == 1).collect())
        .collect()
}
