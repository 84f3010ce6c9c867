//! A recipe's `lora:` section: train low-rank adapters on the linears that `trainable` selects
//! instead of the weights themselves.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::model::lora::LoraSettings;

/// LoRA settings (`lora:`); `r`, `alpha` and `lr` have no default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraSpec {
    /// Rank of each adapter.
    pub r: usize,
    /// `lora_alpha`: the update is scaled by `alpha / r`.
    pub alpha: f64,
    /// Dropout on the adapters' input while training (PEFT's `lora_dropout`); default 0.
    #[serde(default)]
    pub dropout: f64,
    /// The adapters' learning rate (it replaces `optimizer.lr`, which then has no effect).
    pub lr: f64,
    /// rsLoRA: scale by `alpha / √r`; default false.
    #[serde(default)]
    pub use_rslora: bool,
    /// Seed of the adapters' initialisation; `null`: the recipe's `seed`.
    #[serde(default)]
    pub init_seed: Option<u64>,
}

impl LoraSpec {
    /// The adapter settings.
    pub fn settings(&self) -> LoraSettings {
        LoraSettings {
            r: self.r,
            alpha: self.alpha,
            dropout: self.dropout,
            use_rslora: self.use_rslora,
        }
    }

    /// Checks values that parse but cannot work, naming the key.
    pub fn validate(&self) -> Result<()> {
        if self.r == 0 {
            bail!("lora.r must be at least 1");
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            bail!("lora.alpha must be a positive number");
        }
        if !(0.0..1.0).contains(&self.dropout) {
            bail!("lora.dropout must be in [0, 1)");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("lora.lr must be a positive number");
        }
        Ok(())
    }
}
