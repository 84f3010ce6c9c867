//! A rough memory estimate for a training step: weights, gradients and AdamW state for the
//! trainable part only, and activations kept for backward above the lowest trainable layer.

use serde::Serialize;

use crate::model::{ModelConfig, ModuleMap};
use crate::select::Selection;

/// Estimated bytes by category.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryEstimate {
    pub weights: u64,
    pub gradients: u64,
    pub optimizer: u64,
    pub activations: u64,
    pub total: u64,
}

/// Estimates one training step's memory with `batch` sequences of `seq` tokens in `dtype_bytes`.
pub fn estimate(
    config: &ModelConfig,
    map: &ModuleMap,
    selection: &Selection,
    batch: usize,
    seq: usize,
    dtype_bytes: usize,
) -> MemoryEstimate {
    let total_params = map.total() as u64;
    let trainable = selection.trainable_numel(map) as u64;
    let weights = total_params * dtype_bytes as u64;
    // Gradients are accumulated in f32; AdamW keeps two f32 moments (+ an f32 master copy below f32).
    let gradients = trainable * 4;
    let master = if dtype_bytes < 4 { trainable * 4 } else { 0 };
    let optimizer = trainable * 8 + master;
    let layers_with_graph = match selection.lowest_layer(map) {
        Some(lowest) => config.num_hidden_layers.saturating_sub(lowest),
        None => config.num_hidden_layers,
    } as u64;
    let (h, i) = (config.hidden_size as u64, config.intermediate_size as u64);
    let (q, kv) = (config.q_dim() as u64, config.kv_dim() as u64);
    let heads = config.num_attention_heads as u64;
    let tokens = (batch * seq) as u64;
    let per_token_per_layer = 6 * h + 4 * q + 4 * kv + 4 * i + 3 * heads * seq as u64;
    let layer_activations = if trainable > 0 {
        layers_with_graph * tokens * per_token_per_layer * dtype_bytes as u64
    } else {
        0
    };
    // Logits, log-probabilities and their gradient at labelled positions (at most every token), f32.
    let head_activations = tokens * config.vocab_size as u64 * 4 * 3;
    let activations = layer_activations + head_activations;
    MemoryEstimate {
        weights,
        gradients,
        optimizer,
        activations,
        total: weights + gradients + optimizer + activations,
    }
}

impl MemoryEstimate {
    /// The estimate when `adapter` LoRA parameters (in `dtype_bytes`) train instead of the
    /// selection: the frozen weights plus the adapters, and gradients and AdamW state for the
    /// adapters only. Activations are as estimated for the selection.
    pub fn with_adapters(&self, adapter: usize, dtype_bytes: usize) -> Self {
        let adapter = adapter as u64;
        let weights = self.weights + adapter * dtype_bytes as u64;
        let gradients = adapter * 4;
        let master = if dtype_bytes < 4 { adapter * 4 } else { 0 };
        let optimizer = adapter * 8 + master;
        Self {
            weights,
            gradients,
            optimizer,
            activations: self.activations,
            total: weights + gradients + optimizer + self.activations,
        }
    }
}
