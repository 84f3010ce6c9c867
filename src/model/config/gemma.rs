//! What sets Gemma 2 and Gemma 3 apart from the Llama computation, and how their keys are read.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::keys::KeyReader;
use super::{Architecture, RopeScaling};

/// The rope of sliding-window layers (Gemma 3's local base).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlidingRope {
    pub theta: f64,
    pub scaling: Option<RopeScaling>,
}

/// Gemma's departures from the Llama computation.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GemmaStyle {
    /// RMSNorm multiplies by (1 + w) instead of w.
    pub norm_plus_one: bool,
    /// Embeddings multiplied by √hidden_size.
    pub scaled_embeddings: bool,
    /// Norms after attention and after the MLP, and a pre-feedforward norm.
    pub sandwich_norms: bool,
    /// GELU (tanh approximation) gating instead of SiLU.
    pub gelu_tanh: bool,
    /// Attention scale `query_pre_attn_scalar^-0.5` instead of `head_dim^-0.5`.
    pub query_pre_attn_scalar: Option<f64>,
    /// `tanh(s / c) · c` on attention scores before the mask.
    pub attn_logit_softcapping: Option<f64>,
    /// `tanh(z / c) · c` on the final logits.
    pub final_logit_softcapping: Option<f64>,
}

/// Gemma's computation switches, read from its keys (defaults of Gemma2Config /
/// Gemma3TextConfig); other families keep none of them, and those keys are then refused.
pub(super) fn gemma_style(r: &KeyReader, architecture: Architecture) -> Result<GemmaStyle> {
    if architecture != Architecture::Gemma {
        return Ok(GemmaStyle::default());
    }
    let gemma3 = r.object().get("model_type").and_then(Value::as_str) == Some("gemma3_text");
    let activation = r.str_or("hidden_activation", "gelu_pytorch_tanh")?;
    if let Some(act) = r.get("hidden_act").and_then(Value::as_str) {
        if act != activation {
            bail!("keys `hidden_act` ({act}) and `hidden_activation` ({activation}) disagree; Gemma uses `hidden_activation`");
        }
    }
    if !matches!(activation.as_str(), "gelu_pytorch_tanh" | "gelu_tanh") {
        bail!("key `hidden_activation` is `{activation}`; tunescope computes Gemma's gelu_pytorch_tanh gating only");
    }
    if r.get("use_bidirectional_attention")
        .is_some_and(|v| v != &Value::Bool(false))
    {
        bail!("key `use_bidirectional_attention` is set: bidirectional attention is not computed by tunescope's decoder");
    }
    let scalar = r.f64_or("query_pre_attn_scalar", 256.0)?;
    let softcap = |key: &str, default: Option<f64>| -> Result<Option<f64>> {
        Ok(match r.object().get(key) {
            None => {
                r.mark(&[key]);
                if let Some(d) = default {
                    r.record(key, d, "default of transformers' Gemma2Config", true);
                }
                default
            }
            Some(Value::Null) => {
                r.mark(&[key]);
                None
            }
            Some(_) => Some(r.f64_or(key, 0.0)?),
        })
    };
    let attn = softcap("attn_logit_softcapping", (!gemma3).then_some(50.0))?;
    let final_ = softcap("final_logit_softcapping", (!gemma3).then_some(30.0))?;
    for cap in [attn, final_].into_iter().flatten() {
        if cap <= 0.0 {
            bail!("logit softcapping must be positive, got {cap}");
        }
    }
    Ok(GemmaStyle {
        norm_plus_one: true,
        scaled_embeddings: true,
        sandwich_norms: true,
        gelu_tanh: true,
        query_pre_attn_scalar: Some(scalar),
        attn_logit_softcapping: attn,
        final_logit_softcapping: final_,
    })
}
