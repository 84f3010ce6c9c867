//! One decoder layer and its forward: norms, attention (grouped-query, rotary, optional
//! window and softcapping), the gated MLP; fused (Phi-3) or separate projections.

use std::sync::Arc;

use anyhow::Result;
use candle_core::{Tensor, Var, D};

use super::cache::KvCache;
use super::context::AttentionInputs;
use super::kv_store::LayerKv;
use super::{Decoder, LayerContext};
use crate::model::config::ModelConfig;
use crate::model::grad_sink::GradSink;
use crate::model::linear::{Linear, Param};
use crate::model::ops;

/// Projections that read the same input: separate linears (q, k, v / gate, up), or Phi-3's one
/// fused linear whose output is split into parts of the given widths.
#[derive(Debug, Clone)]
pub(super) enum Projections {
    Separate(Vec<Linear>),
    Fused(Linear, Vec<usize>),
}

impl Projections {
    /// Each part's output, in order; `inference`: no graph, few-row products (decoding).
    pub(super) fn forward(&self, h: &Tensor, inference: bool) -> Result<Vec<Tensor>> {
        match self {
            Self::Separate(linears) => linears.iter().map(|l| l.apply(h, inference)).collect(),
            Self::Fused(linear, widths) => {
                let out = linear.apply(h, inference)?;
                let mut start = 0;
                widths
                    .iter()
                    .map(|&w| {
                        let part = out.narrow(D::Minus1, start, w)?;
                        start += w;
                        Ok(part)
                    })
                    .collect()
            }
        }
    }

    /// Every linear, for changes in place.
    fn linears_mut(&mut self) -> Vec<&mut Linear> {
        match self {
            Self::Separate(linears) => linears.iter_mut().collect(),
            Self::Fused(linear, _) => vec![linear],
        }
    }

    pub(super) fn map(&self, lin: &impl Fn(&Linear) -> Result<Linear>) -> Result<Self> {
        Ok(match self {
            Self::Separate(linears) => {
                Self::Separate(linears.iter().map(lin).collect::<Result<_>>()?)
            }
            Self::Fused(linear, widths) => Self::Fused(lin(linear)?, widths.clone()),
        })
    }
}

/// One decoder layer.
#[derive(Debug, Clone)]
pub(super) struct Layer {
    pub(super) input_norm: Param,
    /// q, k, v (Phi-3: one `qkv_proj`).
    pub(super) qkv: Projections,
    pub(super) o: Linear,
    /// Per-head RMSNorm of queries and keys before rope (Qwen3).
    pub(super) q_norm: Option<Param>,
    pub(super) k_norm: Option<Param>,
    /// Whether the layer applies rotary embeddings (SmolLM3 skips some).
    pub(super) rope: bool,
    /// Whether the layer attends through the sliding window (Gemma's local layers).
    pub(super) sliding: bool,
    pub(super) post_norm: Param,
    /// Gemma's norms before and after the MLP (`post_norm` then follows attention).
    pub(super) pre_ff_norm: Option<Param>,
    pub(super) post_ff_norm: Option<Param>,
    /// gate, up (Phi-3: one `gate_up_proj`).
    pub(super) gate_up: Projections,
    pub(super) down: Linear,
}

impl Layer {
    /// The layer's trainable parameters, adapter tensors included.
    pub(super) fn trainable_vars(&self) -> Vec<Var> {
        let found = std::cell::RefCell::new(Vec::new());
        // `map` visits every parameter; the copy it builds is dropped.
        let _ = self.map(&|p: &Param| {
            if let Param::Trainable(var) = p {
                found.borrow_mut().push(var.clone());
            }
            Ok(p.clone())
        });
        found.into_inner()
    }

    /// Makes the layer's linears leave their weight gradients in `sink` (see [`GradSink`]).
    pub(super) fn hand_weight_grads_to(&mut self, sink: &Arc<GradSink>) {
        let mut linears = self.qkv.linears_mut();
        linears.extend(self.gate_up.linears_mut());
        linears.push(&mut self.o);
        linears.push(&mut self.down);
        for linear in linears {
            linear.weight_grads = Some(sink.clone());
        }
    }

    /// The same layer with every parameter passed through `f`.
    pub(super) fn map(&self, f: &impl Fn(&Param) -> Result<Param>) -> Result<Self> {
        let lin = |l: &Linear| -> Result<Linear> { l.map(&mut |p: &Param| f(p)) };
        Ok(Self {
            input_norm: f(&self.input_norm)?,
            qkv: self.qkv.map(&lin)?,
            o: lin(&self.o)?,
            q_norm: self.q_norm.as_ref().map(f).transpose()?,
            k_norm: self.k_norm.as_ref().map(f).transpose()?,
            rope: self.rope,
            sliding: self.sliding,
            post_norm: f(&self.post_norm)?,
            pre_ff_norm: self.pre_ff_norm.as_ref().map(f).transpose()?,
            post_ff_norm: self.post_ff_norm.as_ref().map(f).transpose()?,
            gate_up: self.gate_up.map(&lin)?,
            down: lin(&self.down)?,
        })
    }
}

impl Decoder {
    /// RMS norm with the model's weight convention ((1 + w) for Gemma).
    pub(super) fn norm(&self, x: &Tensor, weight: &Param) -> Result<Tensor> {
        norm(&self.config, x, weight)
    }

    /// Runs every layer over `x`; with a cache, each layer appends its keys and values. With
    /// activation checkpointing on (and no cache), layers that backward reaches keep only
    /// their input (see [`super::checkpoint`]).
    pub(super) fn run_layers(
        &self,
        mut x: Tensor,
        ctx: &LayerContext,
        mut cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        for (index, layer) in self.layers.iter().enumerate() {
            let inputs = ctx.for_layer(layer.sliding);
            x = match (&self.checkpoint, cache.as_deref_mut()) {
                (Some(sink), None) if !inputs.inference => {
                    super::checkpoint::run_layer(sink, layer, &x, inputs)?
                }
                (_, cache) => {
                    let kv = cache.map(|c| &mut c.layers[index]);
                    layer_parts(&self.config, layer, &x, inputs, kv)?.0
                }
            };
        }
        Ok(x)
    }

    /// One layer: the new residual stream, and the attention and MLP contributions to it.
    pub(super) fn layer_parts(
        &self,
        layer: &Layer,
        x: &Tensor,
        inputs: &AttentionInputs,
        kv: Option<&mut LayerKv>,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        layer_parts(&self.config, layer, x, inputs, kv)
    }
}

/// RMS norm with the model's weight convention ((1 + w) for Gemma).
fn norm(config: &ModelConfig, x: &Tensor, weight: &Param) -> Result<Tensor> {
    let eps = config.rms_norm_eps;
    if config.gemma.norm_plus_one {
        rms_norm(x, &weight.tensor().affine(1.0, 1.0)?, eps)
    } else {
        rms_norm(x, weight.tensor(), eps)
    }
}

/// One layer of a model with configuration `config`: the new residual stream, and the
/// attention and MLP contributions to it.
pub(super) fn layer_parts(
    config: &ModelConfig,
    layer: &Layer,
    x: &Tensor,
    inputs: &AttentionInputs,
    kv: Option<&mut LayerKv>,
) -> Result<(Tensor, Tensor, Tensor)> {
    let h = norm(config, x, &layer.input_norm)?;
    let mut attn = attention(config, layer, &h, inputs, kv)?;
    // Llama: `post_attention_layernorm` normalises the MLP's input. Gemma: it normalises
    // the attention output, and the MLP has norms of its own before and after.
    if layer.pre_ff_norm.is_some() {
        attn = norm(config, &attn, &layer.post_norm)?;
    }
    let x = (x + &attn)?;
    let h = norm(
        config,
        &x,
        layer.pre_ff_norm.as_ref().unwrap_or(&layer.post_norm),
    )?;
    let [gate, up]: [Tensor; 2] = layer
        .gate_up
        .forward(&h, inputs.inference)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("gate/up projections give two parts"))?;
    let gated = if config.gemma.gelu_tanh {
        (gate.gelu()? * up)?
    } else {
        ops::swiglu(&gate, &up)?
    };
    // Without a norm after it, the MLP's output value feeds only the residual sum, the layer's
    // output: where that goes unread, the product keeps its backward and computes no value.
    let mut mlp = if inputs.output_unread && layer.post_ff_norm.is_none() {
        layer.down.apply_unread(&gated)?
    } else {
        layer.down.apply(&gated, inputs.inference)?
    };
    if let Some(post_ff) = &layer.post_ff_norm {
        mlp = norm(config, &mlp, post_ff)?;
    }
    let out = (x + &mlp)?;
    Ok((out, attn, mlp))
}

fn attention(
    c: &ModelConfig,
    layer: &Layer,
    h: &Tensor,
    inputs: &AttentionInputs,
    kv: Option<&mut LayerKv>,
) -> Result<Tensor> {
    let (cos, sin) = (&inputs.cos, &inputs.sin);
    let (batch, seq, _) = h.dims3()?;
    let heads = |t: Tensor, n: usize| -> Result<Tensor> {
        Ok(t.reshape((batch, seq, n, c.head_dim))?
            .transpose(1, 2)?
            .contiguous()?)
    };
    // Qwen3 normalises each head before rope; SmolLM3 skips rope in some layers.
    let place = |t: Tensor, head_norm: &Option<Param>| -> Result<Tensor> {
        let t = match head_norm {
            Some(w) => norm(c, &t, w)?,
            None => t,
        };
        if !layer.rope {
            return Ok(t);
        }
        // Partial rotary (Phi-4-mini): the first dimensions turn, the rest pass.
        let turned = c.rotary_dim();
        if turned == c.head_dim {
            return rope(&t, cos, sin);
        }
        let rotated = rope(&t.narrow(D::Minus1, 0, turned)?.contiguous()?, cos, sin)?;
        let passed = t.narrow(D::Minus1, turned, c.head_dim - turned)?;
        Ok(Tensor::cat(&[&rotated, &passed], D::Minus1)?.contiguous()?)
    };
    let [q, k, v]: [Tensor; 3] = layer
        .qkv
        .forward(h, inputs.inference)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("q/k/v projections give three parts"))?;
    // Without a head norm or a partial rotary, one op splits the heads and turns them.
    let split = |t: Tensor, n: usize, head_norm: &Option<Param>| -> Result<Tensor> {
        if head_norm.is_none() && (!layer.rope || c.rotary_dim() == c.head_dim) {
            Ok(ops::to_heads(&t, n, layer.rope.then_some((cos, sin)))?)
        } else {
            place(heads(t, n)?, head_norm)
        }
    };
    let q = split(q, c.num_attention_heads, &layer.q_norm)?;
    let k = split(k, c.num_key_value_heads, &layer.k_norm)?;
    let v = ops::to_heads(&v, c.num_key_value_heads, None)?;
    let (k, v) = match kv {
        Some(store) => store.append(&k, &v)?,
        None => (k, v),
    };
    let scale = c.attention_scale();
    let softcap = c.gemma.attn_logit_softcapping;
    // (B, T, H, D) either way.
    let out = if softcap.is_none() && ops::fused_attention_for(&[&q, &k, &v]) {
        let memo = inputs.attention_memo.as_ref();
        ops::causal_attention_with_memo(&q, &k, &v, &inputs.mask, scale, memo)?
    } else {
        let groups = c.num_attention_heads / c.num_key_value_heads;
        let k = ops::repeat_kv(&k.contiguous()?, groups)?;
        let v = ops::repeat_kv(&v.contiguous()?, groups)?;
        let scores = q.matmul(&k.t()?)?;
        let bias = inputs.bias()?;
        let probs = match softcap {
            // Gemma 2: tanh(s·scale / cap)·cap, then the mask.
            Some(cap) => {
                let capped = ((scores * (scale / cap))?.tanh()? * cap)?;
                ops::masked_softmax(&capped, bias, 1.0)?
            }
            None => ops::masked_softmax(&scores, bias, scale)?,
        };
        probs.matmul(&v)?.transpose(1, 2)?
    };
    let out = out.reshape((batch, seq, c.q_dim()))?;
    layer.o.apply(&out, inputs.inference)
}

/// RMS norm computed in f32 (fused on the CPU, see [`ops::rms_norm`]).
fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    Ok(ops::rms_norm(x, weight, eps)?)
}

/// Rotary embedding (non-interleaved halves), with per-row positions (see [`ops::rope`]).
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    Ok(ops::rope(x, cos, sin)?)
}
