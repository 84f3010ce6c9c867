//! PyTorch's figures for the same step (written by `scripts/bench-pytorch.py`), read so that
//! `tunescope bench --pytorch FILE` prints the ratio beside each recipe.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// One recipe's PyTorch measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PytorchRecipe {
    pub tokens_per_s: f64,
    pub step_s: f64,
    pub peak_rss_bytes: u64,
}

/// What `scripts/bench-pytorch.py` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PytorchReference {
    /// `torch.__version__`.
    pub torch: String,
    pub threads: usize,
    pub batch: usize,
    pub seq: usize,
    pub recipes: BTreeMap<String, PytorchRecipe>,
}

impl PytorchReference {
    /// Reads `path`, which must have been measured at `batch` × `seq`.
    pub fn read(path: &Path, batch: usize, seq: usize) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the PyTorch figures {}", path.display()))?;
        let reference: Self = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not the JSON scripts/bench-pytorch.py writes",
                path.display()
            )
        })?;
        if (reference.batch, reference.seq) != (batch, seq) {
            bail!(
                "{} was measured at batch {} × seq {}, this bench runs {batch} × {seq}; \
                 rerun one of them with the other's --batch and --seq",
                path.display(),
                reference.batch,
                reference.seq
            );
        }
        Ok(reference)
    }

    /// PyTorch's tokens/s for `recipe`, when measured.
    pub fn tokens_per_s(&self, recipe: &str) -> Option<f64> {
        self.recipes.get(recipe).map(|r| r.tokens_per_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{"torch": "2.15.0", "threads": 2, "batch": 4, "seq": 128, "steps": 10,
        "warmup": 3, "recipes": {"sa-proj": {"tokens_per_s": 320.5, "step_s": 1.6,
        "peak_rss_bytes": 3000000000, "trainable": 26542080}}}"#;

    #[test]
    fn reads_the_scripts_output_and_refuses_another_shape() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pytorch.json");
        std::fs::write(&path, SAMPLE).unwrap();
        let reference = PytorchReference::read(&path, 4, 128).unwrap();
        assert_eq!(reference.tokens_per_s("sa-proj"), Some(320.5));
        assert_eq!(reference.tokens_per_s("mlp"), None);
        let err = PytorchReference::read(&path, 16, 512)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("batch 4 × seq 128") && err.contains("16 × 512"),
            "{err}"
        );
    }
}
