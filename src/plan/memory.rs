//! A rough memory estimate for a training step: weights, gradients and AdamW state for the
//! trainable part only, and activations kept for backward above the lowest trainable layer
//! (with activation checkpointing: each such layer's input, plus one layer's activations).

use serde::Serialize;

use crate::model::decoder::head_block_rows;
use crate::model::ops::linear_cross_entropy::block_rows;
use crate::model::weights::file_dtype;
use crate::model::{ModelConfig, ModuleMap};
use crate::recipe::Recipe;
use crate::select::Selection;

/// What a step's memory depends on besides the model and the selection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepShape {
    /// Sequences per micro-batch.
    pub batch: usize,
    /// Tokens per sequence.
    pub seq: usize,
    /// Bytes per weight and activation element (4 for f32, 2 for bf16).
    pub dtype_bytes: usize,
    /// Whether layers are recomputed in the backward.
    pub activation_checkpointing: bool,
    /// Whether the fused CPU kernels run (the CPU): attention then keeps one log-sum-exp per
    /// head instead of the `(B, H, T, T)` scores (not with Gemma 2's score softcapping), and
    /// SwiGLU no SiLU output (not Gemma's GELU gating).
    pub fused_ops: bool,
    /// Whether the loss head runs fused, a block of rows at a time with its gradients formed at
    /// once (f32 on the CPU, without LwF; see `HeadPath`).
    pub fused_head: bool,
}

impl StepShape {
    /// The shape a recipe trains with.
    pub fn of(recipe: &Recipe) -> Self {
        Self {
            batch: recipe.batch_size,
            seq: recipe.max_length,
            dtype_bytes: if recipe.dtype == "bf16" { 2 } else { 4 },
            activation_checkpointing: recipe.activation_checkpointing,
            fused_ops: recipe.device == "cpu",
            // LwF keeps the whole logits for its KL.
            fused_head: recipe.device == "cpu"
                && recipe.dtype == "f32"
                && recipe.regularize.is_none(),
        }
    }
}

/// Estimated bytes by category.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryEstimate {
    pub weights: u64,
    /// The weight files, memory-mapped while the model is open: their pages, once read, count
    /// in the resident set (file-backed; the kernel may drop them under pressure).
    pub mapped_files: u64,
    pub gradients: u64,
    pub optimizer: u64,
    pub activations: u64,
    pub total: u64,
}

/// Estimates one training step's memory for a step of `shape`.
pub fn estimate(
    config: &ModelConfig,
    map: &ModuleMap,
    selection: &Selection,
    shape: StepShape,
) -> MemoryEstimate {
    let StepShape {
        batch,
        seq,
        dtype_bytes,
        activation_checkpointing,
        fused_ops,
        fused_head,
    } = shape;
    let total_params = map.total() as u64;
    let trainable = selection.trainable_numel(map) as u64;
    let weights = total_params * dtype_bytes as u64;
    let mapped_files = map
        .params
        .iter()
        .map(|p| {
            let bytes = file_dtype(&p.dtype).map_or(4, |d| d.size_in_bytes());
            (p.numel * bytes) as u64
        })
        .sum::<u64>();
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
    // Scores, probabilities and their gradient per head and key; the fused kernel keeps one
    // log-sum-exp per head instead.
    let fused_scores = fused_ops && config.gemma.attn_logit_softcapping.is_none();
    let scores = if fused_scores {
        heads
    } else {
        3 * heads * seq as u64
    };
    // Gate, up and their product; the composed SwiGLU and GELU gating keep the activation too.
    let intermediates = if fused_ops && !config.gemma.gelu_tanh {
        3
    } else {
        4
    };
    let per_token_per_layer = 6 * h + 4 * q + 4 * kv + intermediates * i + scores;
    let layer_activations = if trainable == 0 {
        0
    } else if activation_checkpointing {
        // Each layer's input is kept, and the fused attention's output and log-sum-exp (f32) for
        // the recomputation; while a layer's backward runs, its recomputed activations live,
        // and about as much again in the gradients that backward forms (measured: 16 × 512
        // tokens of SmolLM2, README "Memory").
        let attention_kept = if fused_scores { (q + heads) * 4 } else { 0 };
        (layers_with_graph * h + 2 * per_token_per_layer) * tokens * dtype_bytes as u64
            + layers_with_graph * tokens * attention_kept
    } else {
        layers_with_graph * tokens * per_token_per_layer * dtype_bytes as u64
    };
    // The head at labelled positions (at most every token), f32. Whole: the logits, their
    // gradient and the buffer backward adds it into. Fused: one block of logits, turned into
    // their gradient in place, and the rows' gradient. In blocks of a graph (checkpointing
    // elsewhere): a block's three, and the rows' gradient.
    let vocab = config.vocab_size as u64;
    let rows_grad = tokens * h * 4;
    let head_activations = if fused_head {
        let block = block_rows(config.vocab_size, tokens as usize) as u64;
        block * vocab * 4 + rows_grad
    } else if activation_checkpointing {
        let block = head_block_rows(config.vocab_size, tokens as usize) as u64;
        block * vocab * 4 * 3 + rows_grad
    } else {
        tokens * vocab * 4 * 3
    };
    let activations = layer_activations + head_activations;
    MemoryEstimate {
        weights,
        mapped_files,
        gradients,
        optimizer,
        activations,
        total: weights + mapped_files + gradients + optimizer + activations,
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
            mapped_files: self.mapped_files,
            gradients,
            optimizer,
            activations: self.activations,
            total: weights + self.mapped_files + gradients + optimizer + self.activations,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::{RegularizeMethod, RegularizeSpec};

    #[test]
    fn the_fused_head_is_planned_only_where_it_runs() {
        let mut recipe = Recipe::default();
        assert!(StepShape::of(&recipe).fused_head && StepShape::of(&recipe).fused_ops);
        recipe.dtype = "bf16".into();
        assert!(!StepShape::of(&recipe).fused_head);
        recipe.dtype = "f32".into();
        recipe.regularize = Some(RegularizeSpec {
            method: RegularizeMethod::Lwf,
            lambda: 1.0,
            temperature: 2.0,
        });
        assert!(!StepShape::of(&recipe).fused_head);
        recipe.regularize = None;
        recipe.device = "cuda".into();
        let shape = StepShape::of(&recipe);
        assert!(!shape.fused_head && !shape.fused_ops);
    }
}
