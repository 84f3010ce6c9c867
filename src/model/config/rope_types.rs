//! The rope settings' types: the scaling variants and the keys each rope type may hold.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Llama-3 style frequency scaling of rotary embeddings (`rope_type: llama3`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Llama3RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

/// YaRN scaling (`rope_type: yarn`), with the attention factor already resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct YarnRopeScaling {
    pub factor: f64,
    pub original_max_position_embeddings: usize,
    pub beta_fast: f64,
    pub beta_slow: f64,
    /// Multiplies cos and sin (transformers' `attention_scaling`).
    pub attention_factor: f64,
    /// Whether the correction range is rounded outwards to whole dimensions.
    pub truncate: bool,
}

/// A rope scaling type other than the default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rope_type", rename_all = "lowercase")]
pub enum RopeScaling {
    /// Positions divided by `factor` (inverse frequencies divided by it).
    Linear {
        factor: f64,
    },
    /// Dynamic NTK: past `max_position_embeddings` the base grows with the sequence length.
    Dynamic {
        factor: f64,
        max_position_embeddings: usize,
    },
    Llama3(Llama3RopeScaling),
    Yarn(YarnRopeScaling),
}

/// Rope types tunescope computes.
pub const ROPE_TYPES: &[&str] = &["default", "linear", "dynamic", "llama3", "yarn"];

/// Keys every rope parameter set may hold.
pub(super) const COMMON_KEYS: &[&str] =
    &["rope_type", "type", "rope_theta", "partial_rotary_factor"];
pub(super) const FACTOR_KEYS: &[&str] = &["factor"];
pub(super) const LLAMA3_KEYS: &[&str] = &[
    "factor",
    "low_freq_factor",
    "high_freq_factor",
    "original_max_position_embeddings",
];
pub(super) const YARN_KEYS: &[&str] = &[
    "factor",
    "original_max_position_embeddings",
    "beta_fast",
    "beta_slow",
    "attention_factor",
    "mscale",
    "mscale_all_dim",
    "truncate",
];

pub(super) fn number(v: &Value, key: &str) -> Result<f64> {
    v.as_f64()
        .with_context(|| format!("key `{key}` must be a number, got {v}"))
}

/// One resolved scaling parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeParam {
    pub name: &'static str,
    pub value: String,
    /// The key it was read from, or how transformers derives or defaults it.
    pub source: String,
    /// True when no key gave it.
    pub fallback: bool,
}
