//! Shared helpers for integration tests: seeded tiny models in temporary directories.
#![allow(dead_code)]

pub mod looper;

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

/// Checks the analytic gradient `grad` of `var` against central finite differences of
/// `loss` (step 1e-2) at the `samples` entries with the largest gradients; fails above a
/// relative error of `tolerance`, printing each comparison.
#[allow(dead_code)]
pub fn check_gradient(
    var: &candle_core::Var,
    grad: Option<&candle_core::Tensor>,
    loss: &dyn Fn() -> f64,
    samples: usize,
    tolerance: f64,
    label: &str,
) {
    let grad: Vec<f32> = grad
        .unwrap_or_else(|| panic!("{label} has no gradient"))
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let original = var.as_tensor().copy().unwrap();
    let values: Vec<f32> = original.flatten_all().unwrap().to_vec1().unwrap();
    let mut order: Vec<usize> = (0..grad.len()).collect();
    order.sort_by(|&a, &b| grad[b].abs().total_cmp(&grad[a].abs()));
    for &index in order.iter().take(samples) {
        let eps = 1e-2f32;
        let eval = |delta: f32| -> f64 {
            let mut x = values.clone();
            x[index] += delta;
            var.set(
                &candle_core::Tensor::from_vec(x, original.shape(), original.device()).unwrap(),
            )
            .unwrap();
            loss()
        };
        let numeric = (eval(eps) - eval(-eps)) / (2.0 * eps as f64);
        var.set(&original).unwrap();
        let analytic = grad[index] as f64;
        let rel = (numeric - analytic).abs() / analytic.abs().max(1e-6);
        println!("{label}[{index}]: analytic {analytic:.5e} numeric {numeric:.5e} rel {rel:.1e}");
        assert!(rel <= tolerance, "{label}[{index}]: relative error {rel}");
    }
}

/// A small counting data set of `records` lines, "how many X : X X X" → "3", in `dir`.
pub fn write_counting_data(dir: &Path, records: usize) -> PathBuf {
    let words = ["apple", "red", "circle", "banana", "blue"];
    let mut text = String::new();
    for i in 0..records {
        let word = words[i % words.len()];
        let n = 1 + (i * 7) % 6;
        let items = vec![word; n].join(" ");
        text.push_str(&serde_json::json!({"prompt": format!("how many {word} : {items}"), "response": n.to_string()}).to_string());
        text.push('\n');
    }
    let path = dir.join("count.jsonl");
    std::fs::write(&path, text).unwrap();
    path
}
