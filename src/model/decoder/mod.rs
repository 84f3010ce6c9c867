//! The differentiable decoder (Llama, Mistral, Qwen2/3, SmolLM3, Gemma 2/3, Phi-3, and the
//! language side of LLaVA-family and Qwen2.5-VL models): our own forward pass built only from
//! ops that have a backward, with trainable weights as `Var`s and frozen ones as plain tensors.
//!
//! - [`source`]: parameters by name; [`load`]: the decoder from a checkpoint;
//! - [`embed`]: input embeddings with image features; [`context`] and [`rope`]: masks and rotary
//!   tables; [`layer`]: the layer forward; [`cache`]: KV-cached decoding;
//! - [`Inputs`]: what a forward takes (ids, padding mask, images).

mod cache;
mod checkpoint;
mod context;
mod embed;
mod head_loss;
mod inputs;
mod kv_store;
mod layer;
mod load;
mod rope;
mod source;

pub use cache::KvCache;
pub use checkpoint::Checkpointing;
pub use head_loss::{head_block_rows, HeadPath};
pub use inputs::Inputs;
pub use source::WeightSource;

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};

use crate::model::config::ModelConfig;
use crate::model::grad_sink::GradSink;
use crate::model::linear::{Linear, Param};
use crate::model::vlm::VisionPath;
use context::{positions_from_valid, LayerContext};
use layer::Layer;

/// Each layer's attention and MLP contributions to the residual stream, `(B, T, H)` each.
pub type BlockOutputs = Vec<(Tensor, Tensor)>;

/// Training mode of a decoder while it lives (see [`Decoder::training`]).
pub struct TrainingGuard<'a> {
    decoder: &'a Decoder,
}

impl Drop for TrainingGuard<'_> {
    fn drop(&mut self) {
        if let Some(switch) = &self.decoder.lora_dropout {
            switch.end();
        }
    }
}

/// A decoder whose trainable parameters are `Var`s.
pub struct Decoder {
    config: ModelConfig,
    embed: Param,
    layers: Vec<Layer>,
    norm: Param,
    lm_head: Linear,
    /// Vision tower and projector of a LLaVA model.
    vision: Option<VisionPath>,
    inv_freq: Tensor,
    vars: BTreeMap<String, Var>,
    params: BTreeMap<String, Param>,
    /// Fused tensors of which only some parts train: 1 on their rows (see [`Decoder::row_masks`]).
    row_masks: BTreeMap<String, Tensor>,
    /// Turns LoRA dropout on during training forwards (see [`Decoder::training`]).
    lora_dropout: Option<std::sync::Arc<crate::model::lora::DropoutSwitch>>,
    /// Activation checkpointing, when on (see [`Decoder::set_activation_checkpointing`]).
    checkpoint: Option<std::sync::Arc<Checkpointing>>,
    /// Parameter gradients that ops leave beside the `GradStore` (see [`GradSink`]).
    grads: std::sync::Arc<GradSink>,
    dtype: DType,
    device: Device,
}

impl Decoder {
    /// The model configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Fused tensors (Phi-3) of which only some parts train, with a `(rows, 1)` mask that is 1 on
    /// the trained rows: the trainer zeroes the other rows' gradients, so they stay bit-identical.
    pub fn row_masks(&self) -> &BTreeMap<String, Tensor> {
        &self.row_masks
    }

    /// Marks the forwards until the guard drops as the training forward of micro-batch `micro`
    /// of optimizer step `step`: LoRA dropout applies, with masks seeded by both. Without
    /// adapters (or with dropout 0) it changes nothing.
    pub fn training(&self, step: usize, micro: usize) -> TrainingGuard<'_> {
        if let Some(switch) = &self.lora_dropout {
            switch.begin(step, micro);
        }
        TrainingGuard { decoder: self }
    }

    /// Turns activation checkpointing on or off: with it, training forwards keep each layer's
    /// input only and backward recomputes the layer (one more forward per layer, far less
    /// memory). Gradients are read through [`Decoder::trainable_grads`] either way.
    pub fn set_activation_checkpointing(&mut self, on: bool) {
        self.checkpoint = on.then(|| {
            std::sync::Arc::new(Checkpointing::new(
                &self.config,
                self.lora_dropout.clone(),
                self.grads.clone(),
            ))
        });
    }

    /// Whether activation checkpointing is on.
    pub fn activation_checkpointing(&self) -> bool {
        self.checkpoint.is_some()
    }

    /// Each trainable parameter's gradient from the backward that gave `store`, which must
    /// follow the decoder's last forward: the store's, plus what ops left beside it in the
    /// decoder's [`GradSink`] (the layers' linear weights, checkpointed layers, the blocked
    /// head). The sink is emptied, so the next backward starts afresh. Parameters the backward
    /// did not reach are absent. Reading a layer weight's gradient from `store` alone finds
    /// nothing.
    pub fn trainable_grads(&self, store: &GradStore) -> Result<BTreeMap<String, Tensor>> {
        let mut aside = self.grads.take();
        let mut grads = BTreeMap::new();
        for (name, var) in &self.vars {
            let grad = match (store.get(var.as_tensor()), aside.remove(&var.id())) {
                // The sink's tensor is ours alone; the store's is left as it is.
                (Some(a), Some(b)) => crate::model::ops::add_in_place(b, a)?,
                (Some(a), None) => a.clone(),
                (None, Some(b)) => b,
                (None, None) => continue,
            };
            grads.insert(name.clone(), grad);
        }
        Ok(grads)
    }

    /// The trainable parameters by name.
    pub fn vars(&self) -> &BTreeMap<String, Var> {
        &self.vars
    }

    /// A copy in which every parameter is frozen, holding the current values of the trainable
    /// ones (copied, so later updates do not reach it); frozen tensors are shared, not copied.
    pub fn frozen_snapshot(&self) -> Result<Decoder> {
        let freeze = |p: &Param| -> Result<Param> {
            Ok(match p {
                Param::Trainable(var) => Param::Frozen(var.as_tensor().copy()?),
                Param::Frozen(t) => Param::Frozen(t.clone()),
            })
        };
        let mut copies: std::collections::HashMap<candle_core::TensorId, Param> =
            Default::default();
        let mut memo = |p: &Param| -> Result<Param> {
            let id = p.tensor().id();
            if let Some(done) = copies.get(&id) {
                return Ok(done.clone());
            }
            let frozen = freeze(p)?;
            copies.insert(id, frozen.clone());
            Ok(frozen)
        };
        // Shared parameters (tied embeddings) stay shared in the copy.
        let embed = memo(&self.embed)?;
        let norm = memo(&self.norm)?;
        let lm_head = self.lm_head.map(&mut memo)?;
        let vision = self.vision.as_ref().map(|v| v.map(&mut memo)).transpose()?;
        let cell = std::cell::RefCell::new(memo);
        let layers = self
            .layers
            .iter()
            .map(|l| l.map(&|p: &Param| (cell.borrow_mut())(p)))
            .collect::<Result<Vec<_>>>()?;
        let params = self
            .params
            .iter()
            .map(|(name, p)| Ok((name.clone(), (cell.borrow_mut())(p)?)))
            .collect::<Result<BTreeMap<_, _>>>()?;
        Ok(Decoder {
            config: self.config.clone(),
            embed,
            layers,
            norm,
            lm_head,
            vision,
            inv_freq: self.inv_freq.clone(),
            vars: BTreeMap::new(),
            params,
            row_masks: BTreeMap::new(),
            lora_dropout: None,
            checkpoint: None,
            grads: Default::default(),
            dtype: self.dtype,
            device: self.device.clone(),
        })
    }

    /// The unembedding matrix `W_U` `(V, H)` (the embeddings when tied).
    pub fn unembedding(&self) -> &Tensor {
        self.lm_head.weight.tensor()
    }

    /// Every parameter the decoder uses, by Hugging Face name.
    pub fn params(&self) -> &BTreeMap<String, Param> {
        &self.params
    }

    /// Compute dtype of activations and weights.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Device the model lives on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Fails naming every trainable parameter without a gradient in `grads` (from
    /// [`Decoder::trainable_grads`]).
    pub fn check_all_trainable_have_grads(&self, grads: &BTreeMap<String, Tensor>) -> Result<()> {
        let missing: Vec<&str> = self
            .vars
            .keys()
            .filter(|name| !grads.contains_key(*name))
            .map(String::as_str)
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            bail!(
                "these trainable parameters received no gradient (the graph is cut before them): {}",
                missing.join(", ")
            )
        }
    }

    /// The vision tower and projector, for a LLaVA model.
    pub fn vision(&self) -> Option<&VisionPath> {
        self.vision.as_ref()
    }

    /// Projects hidden states `(..., H)` to f32 logits `(..., V)`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.logits_with(hidden, false)
    }

    /// [`Decoder::logits`]; `inference`: no graph, few-row product (decoding).
    fn logits_with(&self, hidden: &Tensor, inference: bool) -> Result<Tensor> {
        let logits = self
            .lm_head
            .apply(hidden, inference)?
            .to_dtype(DType::F32)?;
        Ok(match self.config.gemma.final_logit_softcapping {
            Some(cap) => ((logits / cap)?.tanh()? * cap)?,
            None => logits,
        })
    }

    /// Every layer's attention and MLP residual contributions for a full sequence.
    pub fn block_outputs(&self, inputs: &Inputs) -> Result<BlockOutputs> {
        let ctx = self.full_sequence_context(inputs.ids, inputs.mask, inputs.images)?;
        let mut x = self.embed_inputs(inputs.ids, inputs.images)?;
        let mut outputs = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let (next, attn, mlp) =
                self.layer_parts(layer, &x, ctx.for_layer(layer.sliding), None)?;
            outputs.push((attn, mlp));
            x = next;
        }
        Ok(outputs)
    }

    /// Final hidden states `(B, T, H)` for a full sequence (training / scoring mode, no cache).
    /// The mask is `(B, T)` with 1 for real tokens and 0 for padding (left or right); images
    /// come in the order their image-token runs appear (row by row), and the embeddings at
    /// image-token positions are replaced by the projected image features.
    ///
    /// A forward starts a new gradient record: gradients left in the sink by a backward whose
    /// [`Decoder::trainable_grads`] was never read are dropped.
    pub fn hidden_states(&self, inputs: &Inputs) -> Result<Tensor> {
        self.grads.clear();
        let ctx = self.full_sequence_context(inputs.ids, inputs.mask, inputs.images)?;
        let x = self.embed_inputs(inputs.ids, inputs.images)?;
        let x = self.run_layers(x, &ctx, None)?;
        self.norm(&x, &self.norm)
    }

    /// Logits `(B, T, V)` in f32 for a full sequence.
    pub fn forward(&self, inputs: &Inputs) -> Result<Tensor> {
        let hidden = self.hidden_states(inputs)?;
        self.logits(&hidden)
    }
}
