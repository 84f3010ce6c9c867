//! Rotary frequencies from parsed rope settings, as transformers' `modeling_rope_utils.py`
//! computes them (in f32 where it does): default, linear, dynamic NTK, llama3 and YaRN.

use std::f64::consts::PI;

use super::rope_types::RopeScaling;

/// The default inverse frequencies `1 / θ^(2i/d)`, computed in f32 as transformers does.
fn default_inv_freq(theta: f64, head_dim: usize) -> Vec<f64> {
    (0..head_dim)
        .step_by(2)
        .map(|i| {
            let exponent = (i as f32) / (head_dim as f32);
            (1.0f32 / (theta as f32).powf(exponent)) as f64
        })
        .collect()
}

impl RopeScaling {
    /// The rope type's name as in `config.json`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Linear { .. } => "linear",
            Self::Dynamic { .. } => "dynamic",
            Self::Llama3(_) => "llama3",
            Self::Yarn(_) => "yarn",
        }
    }
}

/// Inverse frequencies for a sequence whose largest position is `seq_len - 1`
/// (only dynamic scaling depends on the length).
pub fn inv_freq(
    theta: f64,
    scaling: Option<&RopeScaling>,
    head_dim: usize,
    seq_len: usize,
) -> Vec<f32> {
    let d = head_dim as f64;
    let freqs: Vec<f64> = match scaling {
        None => default_inv_freq(theta, head_dim),
        Some(RopeScaling::Linear { factor }) => default_inv_freq(theta, head_dim)
            .into_iter()
            .map(|f| f / factor)
            .collect(),
        Some(RopeScaling::Dynamic {
            factor,
            max_position_embeddings,
        }) => {
            let max = *max_position_embeddings as f64;
            let len = (seq_len as f64).max(max);
            let base = theta * ((factor * len / max) - (factor - 1.0)).powf(d / (d - 2.0));
            default_inv_freq(base, head_dim)
        }
        Some(RopeScaling::Llama3(rs)) => {
            let original = rs.original_max_position_embeddings as f64;
            let low_wavelen = original / rs.low_freq_factor;
            let high_wavelen = original / rs.high_freq_factor;
            default_inv_freq(theta, head_dim)
                .into_iter()
                .map(|freq| {
                    let wavelen = 2.0 * PI / freq;
                    if wavelen < high_wavelen {
                        freq
                    } else if wavelen > low_wavelen {
                        freq / rs.factor
                    } else {
                        let smooth = (original / wavelen - rs.low_freq_factor)
                            / (rs.high_freq_factor - rs.low_freq_factor);
                        (1.0 - smooth) * freq / rs.factor + smooth * freq
                    }
                })
                .collect()
        }
        Some(RopeScaling::Yarn(y)) => {
            let correction_dim = |rotations: f64| {
                d * (y.original_max_position_embeddings as f64 / (rotations * 2.0 * PI)).ln()
                    / (2.0 * theta.ln())
            };
            let (mut low, mut high) = (correction_dim(y.beta_fast), correction_dim(y.beta_slow));
            if y.truncate {
                low = low.floor();
                high = high.ceil();
            }
            let low = low.max(0.0);
            let high = high.min(d - 1.0);
            let high = if low == high { high + 0.001 } else { high };
            default_inv_freq(theta, head_dim)
                .into_iter()
                .enumerate()
                .map(|(i, extrapolation)| {
                    let interpolation = extrapolation / y.factor;
                    let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                    let extrapolation_share = 1.0 - ramp;
                    interpolation * (1.0 - extrapolation_share)
                        + extrapolation * extrapolation_share
                })
                .collect()
        }
    };
    freqs.into_iter().map(|f| f as f32).collect()
}

/// The factor cos and sin are multiplied by (yarn's attention factor; 1 otherwise).
pub fn attention_scaling(scaling: Option<&RopeScaling>) -> f64 {
    match scaling {
        Some(RopeScaling::Yarn(y)) => y.attention_factor,
        _ => 1.0,
    }
}
