//! Building a decoder from a checkpoint: every tensor found under the checkpoint's layout,
//! the selection as `Var`s, the vision path for vision-language models.

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};

use super::layer::{Layer, Projections};
use super::source::WeightSource;
use super::Decoder;
use crate::model::config::ModelConfig;
use crate::model::fused;
use crate::model::grad_sink::GradSink;
use crate::model::linear::Linear;
use crate::model::lora::{DropoutSwitch, LoraPlan};
use crate::model::names::TensorLayout;
use crate::model::vlm::VisionPath;
use crate::model::weights::WeightStore;

impl Decoder {
    /// Builds the decoder from `store`; names in `trainable` become `Var`s.
    pub fn load(
        config: &ModelConfig,
        store: &WeightStore,
        trainable: &HashSet<String>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        Self::load_with_lora(config, store, trainable, None, dtype, device)
    }

    /// As [`Decoder::load`], with fresh LoRA adapters (trainable `A`/`B` `Var`s named as PEFT
    /// names them) on the linear layers `lora` names; every named module must exist.
    pub fn load_with_lora(
        config: &ModelConfig,
        store: &WeightStore,
        trainable: &HashSet<String>,
        lora: Option<&LoraPlan>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let c = config;
        let mut src = WeightSource::new(store, trainable, dtype, device);
        let switch = lora.map(|plan| {
            let seed = crate::model::lora::adapter::mix(plan.init_seed, 0x6c6f7261);
            Arc::new(DropoutSwitch::new(seed))
        });
        src.lora = lora.zip(switch.clone());
        let layout = TensorLayout::detect(c, store)?;
        let pre = layout.text.as_str();
        let embed = src.param(
            &format!("{pre}embed_tokens.weight"),
            &[c.vocab_size, c.hidden_size],
        )?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = format!("{pre}layers.{i}");
            let h = c.hidden_size;
            layers.push(Layer {
                input_norm: src.param(&format!("{p}.input_layernorm.weight"), &[h])?,
                qkv: if c.fused_projections {
                    let widths = vec![c.q_dim(), c.kv_dim(), c.kv_dim()];
                    let rows: usize = widths.iter().sum();
                    let name = format!("{p}.self_attn.qkv_proj.weight");
                    let parts = fused::parts(c, &name).context("qkv_proj parts")?;
                    let weight = src.fused_param(&name, &[rows, h], &parts)?;
                    Projections::Fused(Linear::new(weight, None), widths)
                } else {
                    Projections::Separate(vec![
                        src.linear(&format!("{p}.self_attn.q_proj"), h, c.q_dim(), c.qkv_bias)?,
                        src.linear(&format!("{p}.self_attn.k_proj"), h, c.kv_dim(), c.qkv_bias)?,
                        src.linear(&format!("{p}.self_attn.v_proj"), h, c.kv_dim(), c.qkv_bias)?,
                    ])
                },
                o: src.linear(&format!("{p}.self_attn.o_proj"), c.q_dim(), h, c.o_bias)?,
                q_norm: c
                    .qk_norm
                    .then(|| src.param(&format!("{p}.self_attn.q_norm.weight"), &[c.head_dim]))
                    .transpose()?,
                k_norm: c
                    .qk_norm
                    .then(|| src.param(&format!("{p}.self_attn.k_norm.weight"), &[c.head_dim]))
                    .transpose()?,
                rope: c.layer_has_rope(i),
                sliding: c.layer_is_sliding(i),
                pre_ff_norm: c
                    .gemma
                    .sandwich_norms
                    .then(|| src.param(&format!("{p}.pre_feedforward_layernorm.weight"), &[h]))
                    .transpose()?,
                post_ff_norm: c
                    .gemma
                    .sandwich_norms
                    .then(|| src.param(&format!("{p}.post_feedforward_layernorm.weight"), &[h]))
                    .transpose()?,
                post_norm: src.param(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
                gate_up: if c.fused_projections {
                    let i = c.intermediate_size;
                    let name = format!("{p}.mlp.gate_up_proj.weight");
                    let parts = fused::parts(c, &name).context("gate_up_proj parts")?;
                    let weight = src.fused_param(&name, &[2 * i, h], &parts)?;
                    Projections::Fused(Linear::new(weight, None), vec![i, i])
                } else {
                    Projections::Separate(vec![
                        src.linear(
                            &format!("{p}.mlp.gate_proj"),
                            h,
                            c.intermediate_size,
                            c.mlp_bias,
                        )?,
                        src.linear(
                            &format!("{p}.mlp.up_proj"),
                            h,
                            c.intermediate_size,
                            c.mlp_bias,
                        )?,
                    ])
                },
                down: src.linear(
                    &format!("{p}.mlp.down_proj"),
                    c.intermediate_size,
                    h,
                    c.mlp_bias,
                )?,
            });
        }
        let norm = src.param(&format!("{pre}norm.weight"), &[c.hidden_size])?;
        let head = layout.lm_head.as_str();
        let has_lm_head = store.info(&format!("{head}.weight")).is_some();
        let lm_head = if c.tie_word_embeddings || !has_lm_head {
            if !c.tie_word_embeddings {
                tracing::warn!("lm_head.weight is absent; tying it to the embeddings");
            }
            Linear::new(embed.clone(), None)
        } else {
            src.linear(head, c.hidden_size, c.vocab_size, false)?
        };
        let (vision, unused) = match &c.vision {
            Some(vc) => {
                let (path, unused) = VisionPath::load(vc, &layout, c.hidden_size, &mut src)?;
                (Some(path), unused)
            }
            None => (None, Default::default()),
        };
        let idle: Vec<&str> = unused
            .iter()
            .filter(|n| trainable.contains(*n))
            .map(String::as_str)
            .collect();
        if !idle.is_empty() {
            tracing::warn!(
                "these selected vision-tower tensors stay frozen: they come after vision_feature_layer and never reach the language model: {}",
                idle.join(", ")
            );
        }
        let unknown: Vec<&String> = trainable
            .iter()
            .filter(|name| {
                !src.vars.contains_key(*name)
                    && !unused.contains(*name)
                    && !src.covered.contains(*name)
            })
            .collect();
        if !unknown.is_empty() {
            bail!(
                "trainable set names parameters the decoder does not use: {}",
                unknown
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if let Some(plan) = lora {
            let missing: Vec<&str> = plan
                .modules
                .iter()
                .filter(|m| !src.adapted.contains(*m))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                bail!(
                    "these LoRA target modules are not linear layers of the decoder: {}",
                    missing.join(", ")
                );
            }
        }
        let inv_freq = Tensor::new(config.rope_inv_freq(), device)?;
        let grads = Arc::new(GradSink::new());
        for layer in &mut layers {
            layer.hand_weight_grads_to(&grads);
        }
        Ok(Self {
            config: config.clone(),
            embed,
            layers,
            norm,
            lm_head,
            vision,
            inv_freq,
            vars: src.vars,
            params: src.params,
            row_masks: src.row_masks,
            lora_dropout: switch,
            checkpoint: None,
            grads,
            dtype,
            device: device.clone(),
        })
    }
}
