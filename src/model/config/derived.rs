//! Values derived from a read config: projection widths, rotary dimension and frequencies,
//! which layers slide or skip rope, the attention scale.

use super::{rope_freq, ModelConfig, RopeScaling};

impl ModelConfig {
    /// Whether the model takes images (LLaVA).
    pub fn is_vision_language(&self) -> bool {
        self.vision.is_some()
    }

    /// Dimensions of each head that rope turns (the first ones).
    pub fn rotary_dim(&self) -> usize {
        if self.rotary_dim == 0 {
            self.head_dim
        } else {
            self.rotary_dim
        }
    }

    /// Whether layer `i` attends through the sliding window.
    pub fn layer_is_sliding(&self, i: usize) -> bool {
        match self.layer_sliding.get(i) {
            Some(&sliding) => sliding,
            None => self.sliding_window.is_some(),
        }
    }

    /// The attention scale: `query_pre_attn_scalar^-0.5` (Gemma) or `head_dim^-0.5`.
    pub fn attention_scale(&self) -> f64 {
        let d = self
            .gemma
            .query_pre_attn_scalar
            .unwrap_or(self.head_dim as f64);
        1.0 / d.sqrt()
    }

    /// Whether layer `i` applies rotary embeddings.
    pub fn layer_has_rope(&self, i: usize) -> bool {
        self.rope_layers.get(i).copied().unwrap_or(true)
    }

    /// Width of the query projection output.
    pub fn q_dim(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }

    /// Width of the key/value projection outputs.
    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }

    /// Rotary inverse frequencies for positions below `seq_len` (only dynamic scaling depends
    /// on the length).
    pub fn rope_inv_freq_for_len(&self, seq_len: usize) -> Vec<f32> {
        rope_freq::inv_freq(
            self.rope_theta,
            self.rope_scaling.as_ref(),
            self.rotary_dim(),
            seq_len,
        )
    }

    /// Rotary inverse frequencies at the configured context length.
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        self.rope_inv_freq_for_len(self.max_position_embeddings)
    }

    /// Whether the rotary frequencies change with the sequence length (dynamic NTK).
    pub fn rope_depends_on_length(&self) -> bool {
        matches!(self.rope_scaling, Some(RopeScaling::Dynamic { .. }))
    }

    /// The factor cos and sin are multiplied by (YaRN's attention factor, else 1).
    pub fn rope_attention_scaling(&self) -> f64 {
        rope_freq::attention_scaling(self.rope_scaling.as_ref())
    }
}
