//! The floating-point work of a training step, from the matmul weights it touches.

use serde::{Deserialize, Serialize};

use crate::model::module_map::{ModuleMap, ParamKind};
use crate::model::ModelConfig;
use crate::select::Selection;

/// Floating-point work of one training step, in FLOPs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepFlops {
    /// `2·N·T`: every matmul weight (the lm_head included) once per token.
    pub forward: f64,
    /// `2·N_above·T`: activation gradients of the matmuls at or above the lowest trainable layer.
    pub backward_activations: f64,
    /// `2·N_trainable·T`: weight gradients of the trainable matmul weights.
    pub backward_weights: f64,
}

impl StepFlops {
    /// Everything together.
    pub fn total(&self) -> f64 {
        self.forward + self.backward_activations + self.backward_weights
    }
}

/// Matmul weight counts that determine the work of a step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MatmulParams {
    /// `N`: every matmul weight, the lm_head counted once (tied embeddings count as lm_head).
    pub total: usize,
    /// Matmul weights whose activation gradient backward computes.
    pub above_lowest: usize,
    /// Trainable matmul weights.
    pub trainable: usize,
}

impl MatmulParams {
    /// Counts for `selection` on a model with `config` and module map `map`.
    pub fn count(config: &ModelConfig, map: &ModuleMap, selection: &Selection) -> Self {
        let lm_head = config.vocab_size * config.hidden_size;
        let weights = || {
            map.params
                .iter()
                .filter(|p| !p.is_bias && p.layer.is_some() && p.kind.is_layer_linear())
        };
        let total = weights().map(|p| p.numel).sum::<usize>() + lm_head;
        let has_lm_head = map.params.iter().any(|p| p.kind == ParamKind::LmHead);
        let tied = config.tie_word_embeddings || !has_lm_head;
        let mut reaches_bottom = false;
        let mut lm_head_trains = false;
        for p in map.params.iter().filter(|p| selection.contains(&p.name)) {
            match p.kind {
                ParamKind::Embed => {
                    reaches_bottom = true;
                    lm_head_trains |= tied && !p.is_bias;
                }
                ParamKind::LmHead => lm_head_trains |= !p.is_bias,
                ParamKind::Vision | ParamKind::Projector => reaches_bottom = true,
                _ => {}
            }
        }
        let above_lowest = if reaches_bottom {
            total
        } else {
            match selection.lowest_layer(map) {
                Some(lowest) => {
                    weights()
                        .filter(|p| p.layer.is_some_and(|l| l >= lowest))
                        .map(|p| p.numel)
                        .sum::<usize>()
                        + lm_head
                }
                None => lm_head,
            }
        };
        let trainable = weights()
            .filter(|p| selection.contains(&p.name))
            .map(|p| p.numel)
            .sum::<usize>()
            + if lm_head_trains { lm_head } else { 0 };
        Self {
            total,
            above_lowest,
            trainable,
        }
    }

    /// The FLOPs of one step over `tokens` tokens.
    pub fn flops(&self, tokens: usize) -> StepFlops {
        let t = tokens as f64;
        StepFlops {
            forward: 2.0 * self.total as f64 * t,
            backward_activations: 2.0 * self.above_lowest as f64 * t,
            backward_weights: 2.0 * self.trainable as f64 * t,
        }
    }
}
