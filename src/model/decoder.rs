//! The differentiable decoder (Llama / Qwen2 family): our own forward pass built only from ops
//! that have a backward, with trainable weights as `Var`s and frozen ones as plain tensors.

use std::collections::{BTreeMap, HashSet};

use anyhow::{bail, Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var, D};

use super::config::{ModelConfig, RopeScaling};
use super::fused::{self, FusedPart};
use super::linear::{Linear, Param};
use super::names::TensorLayout;
use super::ops;
use super::vlm::{ImageBatch, VisionPath};
use super::weights::WeightStore;

/// Additive mask value for hidden keys; finite so fully padded rows stay NaN-free.
const MASK_VALUE: f64 = -1e9;

/// Hands out parameters by name: a `Var` for names in the trainable set, a tensor otherwise.
pub struct WeightSource<'a> {
    store: &'a WeightStore,
    trainable: &'a HashSet<String>,
    dtype: DType,
    device: Device,
    vars: BTreeMap<String, Var>,
    params: BTreeMap<String, Param>,
    /// Selected parts of fused tensors (virtual names) that a fused `Var` stands for.
    covered: HashSet<String>,
    /// Fused tensors of which only some parts train: 1 on the rows that do, `(rows, 1)`.
    row_masks: BTreeMap<String, Tensor>,
}

impl<'a> WeightSource<'a> {
    /// A source over `store` where exactly the names in `trainable` become `Var`s.
    pub fn new(
        store: &'a WeightStore,
        trainable: &'a HashSet<String>,
        dtype: DType,
        device: &Device,
    ) -> Self {
        Self {
            store,
            trainable,
            dtype,
            device: device.clone(),
            vars: BTreeMap::new(),
            params: BTreeMap::new(),
            covered: HashSet::new(),
            row_masks: BTreeMap::new(),
        }
    }

    /// Loads a fused tensor (Phi-3) whose parts are selected separately: a `Var` when any part
    /// trains, with a row mask when only some do.
    fn fused_param(&mut self, name: &str, shape: &[usize], parts: &[FusedPart]) -> Result<Param> {
        let chosen: Vec<&FusedPart> = parts
            .iter()
            .filter(|p| self.trainable.contains(&p.name))
            .collect();
        if chosen.is_empty() && !self.trainable.contains(name) {
            return self.param(name, shape);
        }
        let tensor = self.store.load(name, shape, self.dtype, &self.device)?;
        let var = Var::from_tensor(&tensor)?;
        self.vars.insert(name.to_string(), var.clone());
        self.covered.extend(chosen.iter().map(|p| p.name.clone()));
        if chosen.len() < parts.len() && !self.trainable.contains(name) {
            let mut mask = vec![0f32; shape[0]];
            for p in &chosen {
                mask[p.rows.clone()].iter_mut().for_each(|m| *m = 1.0);
            }
            let mask = Tensor::from_vec(mask, (shape[0], 1), &self.device)?;
            self.row_masks.insert(name.to_string(), mask);
        }
        let param = Param::Trainable(var);
        self.params.insert(name.to_string(), param.clone());
        Ok(param)
    }

    /// Loads `name`, checking it has `shape`.
    pub fn param(&mut self, name: &str, shape: &[usize]) -> Result<Param> {
        let tensor = self.store.load(name, shape, self.dtype, &self.device)?;
        let param = if self.trainable.contains(name) {
            let var = Var::from_tensor(&tensor)?;
            self.vars.insert(name.to_string(), var.clone());
            Param::Trainable(var)
        } else {
            Param::Frozen(tensor)
        };
        self.params.insert(name.to_string(), param.clone());
        Ok(param)
    }

    /// Every tensor name in the weight files.
    pub fn store_names(&self) -> impl Iterator<Item = &str> {
        self.store.infos().map(|i| i.name.as_str())
    }

    pub(crate) fn linear(
        &mut self,
        prefix: &str,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
    ) -> Result<Linear> {
        let weight = self.param(&format!("{prefix}.weight"), &[out_dim, in_dim])?;
        let bias = if bias {
            Some(self.param(&format!("{prefix}.bias"), &[out_dim])?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }
}

/// Projections that read the same input: separate linears (q, k, v / gate, up), or Phi-3's one
/// fused linear whose output is split into parts of the given widths.
#[derive(Debug, Clone)]
enum Projections {
    Separate(Vec<Linear>),
    Fused(Linear, Vec<usize>),
}

impl Projections {
    /// Each part's output, in order.
    fn forward(&self, h: &Tensor) -> Result<Vec<Tensor>> {
        match self {
            Self::Separate(linears) => linears.iter().map(|l| l.forward(h)).collect(),
            Self::Fused(linear, widths) => {
                let out = linear.forward(h)?;
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

    fn map(&self, lin: &impl Fn(&Linear) -> Result<Linear>) -> Result<Self> {
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
struct Layer {
    input_norm: Param,
    /// q, k, v (Phi-3: one `qkv_proj`).
    qkv: Projections,
    o: Linear,
    /// Per-head RMSNorm of queries and keys before rope (Qwen3).
    q_norm: Option<Param>,
    k_norm: Option<Param>,
    /// Whether the layer applies rotary embeddings (SmolLM3 skips some).
    rope: bool,
    /// Whether the layer attends through the sliding window (Gemma's local layers).
    sliding: bool,
    post_norm: Param,
    /// Gemma's norms before and after the MLP (`post_norm` then follows attention).
    pre_ff_norm: Option<Param>,
    post_ff_norm: Option<Param>,
    /// gate, up (Phi-3: one `gate_up_proj`).
    gate_up: Projections,
    down: Linear,
}

impl Layer {
    /// The same layer with every parameter passed through `f`.
    fn map(&self, f: &impl Fn(&Param) -> Result<Param>) -> Result<Self> {
        let lin = |l: &Linear| -> Result<Linear> {
            Ok(Linear {
                weight: f(&l.weight)?,
                bias: l.bias.as_ref().map(f).transpose()?,
            })
        };
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

/// M-RoPE's three position streams (temporal, row, column), each `[row][position]`.
type MropeStreams = [Vec<Vec<u32>>; 3];

/// Rotary positions: one per token, or M-RoPE's three streams.
enum Positions {
    Flat(Vec<Vec<u32>>),
    Sections(MropeStreams),
}

/// What one kind of layer attends with: rope tables `(B, 1, T, D)` and the additive mask.
struct AttentionInputs {
    cos: Tensor,
    sin: Tensor,
    bias: Tensor,
}

/// Attention inputs of global layers and, for Gemma's alternating layers, of sliding ones.
struct LayerContext {
    global: AttentionInputs,
    sliding: Option<AttentionInputs>,
}

impl LayerContext {
    fn for_layer(&self, layer: &Layer) -> &AttentionInputs {
        match &self.sliding {
            Some(sliding) if layer.sliding => sliding,
            _ => &self.global,
        }
    }
}

/// Each layer's attention and MLP contributions to the residual stream, `(B, T, H)` each.
pub type BlockOutputs = Vec<(Tensor, Tensor)>;

/// Per-layer keys and values of the tokens seen so far, for generation.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    /// For each row, whether each cached key is a real token (false for left padding).
    key_valid: Vec<Vec<bool>>,
    /// M-RoPE: each row's next text position (images advance it by less than their tokens).
    next_position: Vec<u32>,
}

impl KvCache {
    /// Number of cached positions (padding included).
    pub fn len(&self) -> usize {
        self.key_valid.first().map_or(0, Vec::len)
    }

    /// Whether nothing has been cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
    dtype: DType,
    device: Device,
}

impl Decoder {
    /// Builds the decoder from `store`; names in `trainable` become `Var`s.
    pub fn load(
        config: &ModelConfig,
        store: &WeightStore,
        trainable: &HashSet<String>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let c = config;
        let mut src = WeightSource::new(store, trainable, dtype, device);
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
                    Projections::Fused(Linear { weight, bias: None }, widths)
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
                    Projections::Fused(Linear { weight, bias: None }, vec![i, i])
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
            Linear {
                weight: embed.clone(),
                bias: None,
            }
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
        let inv_freq = Tensor::new(config.rope_inv_freq(), device)?;
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
            dtype,
            device: device.clone(),
        })
    }

    /// The model configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Fused tensors (Phi-3) of which only some parts train, with a `(rows, 1)` mask that is 1 on
    /// the trained rows: the trainer zeroes the other rows' gradients, so they stay bit-identical.
    pub fn row_masks(&self) -> &BTreeMap<String, Tensor> {
        &self.row_masks
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
        let lm_head = Linear {
            weight: memo(&self.lm_head.weight)?,
            bias: self.lm_head.bias.as_ref().map(&mut memo).transpose()?,
        };
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
            dtype: self.dtype,
            device: self.device.clone(),
        })
    }

    /// The unembedding matrix `W_U` `(V, H)` (the embeddings when tied).
    pub fn unembedding(&self) -> &Tensor {
        self.lm_head.weight.tensor()
    }

    /// Every layer's attention and MLP residual contributions for a full sequence.
    pub fn block_outputs(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> Result<BlockOutputs> {
        self.block_outputs_with_images(input_ids, attention_mask, None)
    }

    /// [`Decoder::block_outputs`] with images (see [`Decoder::hidden_states_with_images`]).
    pub fn block_outputs_with_images(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        images: Option<&ImageBatch>,
    ) -> Result<BlockOutputs> {
        let ctx = self.full_sequence_context(input_ids, attention_mask, images)?;
        let mut x = self.embed_inputs(input_ids, images)?;
        let mut outputs = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let (next, attn, mlp) = self.layer_parts(layer, &x, ctx.for_layer(layer), None)?;
            outputs.push((attn, mlp));
            x = next;
        }
        Ok(outputs)
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

    /// Fails naming every trainable parameter that received no gradient.
    pub fn check_all_trainable_have_grads(&self, grads: &GradStore) -> Result<()> {
        let missing: Vec<&str> = self
            .vars
            .iter()
            .filter(|(_, var)| grads.get(var.as_tensor()).is_none())
            .map(|(name, _)| name.as_str())
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

    /// Final hidden states `(B, T, H)` for a full sequence (training / scoring mode, no cache).
    /// `attention_mask` is `(B, T)` with 1 for real tokens and 0 for padding (left or right).
    pub fn hidden_states(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.hidden_states_with_images(input_ids, attention_mask, None)
    }

    /// Logits `(B, T, V)` in f32 for a full sequence.
    pub fn forward(&self, input_ids: &Tensor, attention_mask: Option<&Tensor>) -> Result<Tensor> {
        let hidden = self.hidden_states(input_ids, attention_mask)?;
        self.logits(&hidden)
    }

    /// The vision tower and projector, for a LLaVA model.
    pub fn vision(&self) -> Option<&VisionPath> {
        self.vision.as_ref()
    }

    /// Like [`Decoder::hidden_states`], with images: `images` holds them in the order their
    /// image-token runs appear (row by row), and the embeddings at image-token positions are
    /// replaced by the projected image features (as many tokens as each image makes).
    pub fn hidden_states_with_images(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        images: Option<&ImageBatch>,
    ) -> Result<Tensor> {
        let ctx = self.full_sequence_context(input_ids, attention_mask, images)?;
        let x = self.embed_inputs(input_ids, images)?;
        let x = self.run_layers(x, &ctx, None)?;
        self.norm(&x, &self.norm)
    }

    /// Logits `(B, T, V)` in f32 with images (see [`Decoder::hidden_states_with_images`]).
    pub fn forward_with_images(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        images: Option<&ImageBatch>,
    ) -> Result<Tensor> {
        let hidden = self.hidden_states_with_images(input_ids, attention_mask, images)?;
        self.logits(&hidden)
    }

    /// Token embeddings with image features written over the image-token positions.
    /// Rope tables and attention biases of a full sequence (no cache) from its padding mask.
    fn full_sequence_context(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        images: Option<&ImageBatch>,
    ) -> Result<LayerContext> {
        let (batch, seq) = input_ids.dims2()?;
        let valid = match attention_mask {
            Some(mask) => mask_rows(mask, batch, seq)?,
            None => vec![vec![true; seq]; batch],
        };
        let positions = match self.config.mrope_section {
            Some(_) => {
                let (streams, _) =
                    self.mrope_positions(input_ids, &valid, images, &vec![0; batch])?;
                Positions::Sections(streams)
            }
            None => Positions::Flat(positions_from_valid(&valid, &vec![0; batch])),
        };
        self.layer_context(&positions, &valid, &valid, 0)
    }

    /// M-RoPE positions (temporal, row, column) of every token (`get_rope_index`): text tokens
    /// count up on all three; an image's tokens share the temporal position and take their row
    /// and column on top of it, and the text after the image resumes at the image's start plus
    /// its longer side. Padding gets 0. Also each row's next position.
    fn mrope_positions(
        &self,
        input_ids: &Tensor,
        valid: &[Vec<bool>],
        images: Option<&ImageBatch>,
        starts: &[u32],
    ) -> Result<(MropeStreams, Vec<u32>)> {
        let ids = input_ids.to_dtype(DType::U32)?.to_vec2::<u32>()?;
        let vision = self.config.vision.as_ref();
        let image_token = vision.map(|v| v.image_token_index);
        let merge = vision
            .and_then(|v| v.qwen.as_ref())
            .map_or(1, |q| q.spatial_merge_size);
        let mut grids = images
            .map(|i| {
                i.images
                    .iter()
                    .map(|s| (s.grid.0 / merge, s.grid.1 / merge))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
            .into_iter();
        let mut streams: MropeStreams = Default::default();
        let mut next = Vec::with_capacity(ids.len());
        for ((row, valid), &start) in ids.iter().zip(valid).zip(starts) {
            let mut out = [
                vec![0u32; row.len()],
                vec![0u32; row.len()],
                vec![0u32; row.len()],
            ];
            let mut cur = start;
            let mut t = 0;
            while t < row.len() {
                if !valid[t] {
                    t += 1;
                    continue;
                }
                if Some(row[t]) == image_token {
                    let (lh, lw) = grids
                        .next()
                        .context("the input holds more images' tokens than images were given")?;
                    anyhow::ensure!(
                        t + lh * lw <= row.len()
                            && row[t..t + lh * lw].iter().all(|&x| Some(x) == image_token),
                        "an image of {lh}×{lw} merged patches needs {} image tokens in a row",
                        lh * lw
                    );
                    for i in 0..lh {
                        for j in 0..lw {
                            let k = t + i * lw + j;
                            out[0][k] = cur;
                            out[1][k] = cur + i as u32;
                            out[2][k] = cur + j as u32;
                        }
                    }
                    t += lh * lw;
                    cur += lh.max(lw) as u32;
                } else {
                    for s in &mut out {
                        s[t] = cur;
                    }
                    cur += 1;
                    t += 1;
                }
            }
            for (stream, o) in streams.iter_mut().zip(out) {
                stream.push(o);
            }
            next.push(cur);
        }
        Ok((streams, next))
    }

    /// What each kind of layer attends with: global layers (every layer for most models) and,
    /// for Gemma's alternating layers, sliding-window layers with their own mask and rope.
    fn layer_context(
        &self,
        positions: &Positions,
        query_valid: &[Vec<bool>],
        key_valid: &[Vec<bool>],
        past: usize,
    ) -> Result<LayerContext> {
        let c = &self.config;
        let per_layer = !c.layer_sliding.is_empty();
        let global_window = if per_layer { None } else { c.sliding_window };
        let (cos, sin) = match positions {
            Positions::Flat(p) => self.rope_tables(p, false)?,
            Positions::Sections(streams) => self.mrope_tables(streams)?,
        };
        let flat = match positions {
            Positions::Flat(p) => p.as_slice(),
            Positions::Sections(streams) => streams[0].as_slice(),
        };
        let global = AttentionInputs {
            bias: self.attention_bias(query_valid, key_valid, past, global_window)?,
            cos,
            sin,
        };
        let sliding = if per_layer && c.layer_sliding.iter().any(|s| *s) {
            let (cos, sin) = if c.sliding_rope.is_some() {
                self.rope_tables(flat, true)?
            } else {
                (global.cos.clone(), global.sin.clone())
            };
            Some(AttentionInputs {
                bias: self.attention_bias(query_valid, key_valid, past, c.sliding_window)?,
                cos,
                sin,
            })
        } else {
            None
        };
        Ok(LayerContext { global, sliding })
    }

    /// RMS norm with the model's weight convention ((1 + w) for Gemma).
    fn norm(&self, x: &Tensor, weight: &Param) -> Result<Tensor> {
        let eps = self.config.rms_norm_eps;
        if self.config.gemma.norm_plus_one {
            rms_norm(x, &weight.tensor().affine(1.0, 1.0)?, eps)
        } else {
            rms_norm(x, weight.tensor(), eps)
        }
    }

    fn embed_inputs(&self, input_ids: &Tensor, images: Option<&ImageBatch>) -> Result<Tensor> {
        let x = self.embed_ids(input_ids)?;
        let Some(images) = images.filter(|i| !i.is_empty()) else {
            return Ok(x);
        };
        let vision = self.vision.as_ref().context(
            "images were given but the model has no vision tower (config.json is not a LLaVA-family config)",
        )?;
        let image_token = vision.config().image_token_index;
        let expected: usize = images
            .images
            .iter()
            .map(|shape| vision.tokens_for(shape))
            .sum();
        let ids = input_ids.to_dtype(DType::U32)?.to_vec2::<u32>()?;
        let mut gather = Vec::with_capacity(ids.len() * ids.first().map_or(0, Vec::len));
        let mut is_image = Vec::with_capacity(gather.capacity());
        let mut next = 0u32;
        for row in &ids {
            for &id in row {
                let hit = id == image_token;
                gather.push(if hit { next } else { 0 });
                is_image.push(if hit { 1f32 } else { 0f32 });
                next += u32::from(hit);
            }
        }
        if next as usize != expected {
            bail!(
                "the input holds {next} image tokens but its {} image(s) make {expected}; \
                 every <image> placeholder must expand to its image's token count, one placeholder per image",
                images.len()
            );
        }
        let (batch, seq, hidden) = x.dims3()?;
        let features = vision.image_embeddings(images)?.to_dtype(x.dtype())?;
        let gather = Tensor::from_vec(gather, batch * seq, &self.device)?;
        let picked = features
            .index_select(&gather, 0)?
            .reshape((batch, seq, hidden))?;
        let mask =
            Tensor::from_vec(is_image, (batch, seq, 1), &self.device)?.to_dtype(x.dtype())?;
        let keep = (1.0 - &mask)?;
        Ok((x.broadcast_mul(&keep)? + picked.broadcast_mul(&mask)?)?)
    }

    /// Projects hidden states `(..., H)` to f32 logits `(..., V)`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let logits = self.lm_head.forward(hidden)?.to_dtype(DType::F32)?;
        Ok(match self.config.gemma.final_logit_softcapping {
            Some(cap) => ((logits / cap)?.tanh()? * cap)?,
            None => logits,
        })
    }

    /// An empty KV cache for `batch` rows.
    pub fn new_cache(&self, batch: usize) -> KvCache {
        KvCache {
            layers: vec![None; self.layers.len()],
            key_valid: vec![Vec::new(); batch],
            next_position: vec![0; batch],
        }
    }

    /// Runs new tokens `(B, T)` through the model with a KV cache and returns f32 logits of the
    /// last position `(B, V)`. `valid` marks real tokens per row (false for left padding).
    pub fn forward_cached(
        &self,
        input_ids: &Tensor,
        valid: Option<&[Vec<bool>]>,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        self.forward_cached_with_images(input_ids, valid, cache, None)
    }

    /// [`Decoder::forward_cached`] with images for the image tokens among the new tokens (see
    /// [`Decoder::hidden_states_with_images`]); used for a prompt's prefill.
    pub fn forward_cached_with_images(
        &self,
        input_ids: &Tensor,
        valid: Option<&[Vec<bool>]>,
        cache: &mut KvCache,
        images: Option<&ImageBatch>,
    ) -> Result<Tensor> {
        let (batch, seq) = input_ids.dims2()?;
        if cache.key_valid.len() != batch {
            bail!(
                "KV cache holds {} rows but the input has {batch}",
                cache.key_valid.len()
            );
        }
        let new_valid: Vec<Vec<bool>> = match valid {
            Some(v) => v.to_vec(),
            None => vec![vec![true; seq]; batch],
        };
        let past = cache.len();
        let offsets: Vec<u32> = cache
            .key_valid
            .iter()
            .map(|row| row.iter().filter(|v| **v).count() as u32)
            .collect();
        let positions = match self.config.mrope_section {
            Some(_) => {
                let (streams, next) =
                    self.mrope_positions(input_ids, &new_valid, images, &cache.next_position)?;
                cache.next_position = next;
                Positions::Sections(streams)
            }
            None => Positions::Flat(positions_from_valid(&new_valid, &offsets)),
        };
        for (row, new) in cache.key_valid.iter_mut().zip(&new_valid) {
            row.extend_from_slice(new);
        }
        let ctx = self.layer_context(&positions, &new_valid, &cache.key_valid, past)?;
        let x = self.embed_inputs(input_ids, images)?;
        let x = self.run_layers(x, &ctx, Some(cache))?;
        let last = x.narrow(1, seq - 1, 1)?.squeeze(1)?;
        let last = self.norm(&last, &self.norm)?;
        self.logits(&last)
    }

    fn embed_ids(&self, input_ids: &Tensor) -> Result<Tensor> {
        let (batch, seq) = input_ids.dims2()?;
        let flat = input_ids.flatten_all()?.to_dtype(DType::U32)?;
        let x = self.embed.tensor().index_select(&flat, 0)?;
        let x = x.reshape((batch, seq, self.config.hidden_size))?;
        if self.config.gemma.scaled_embeddings {
            // Gemma: √hidden_size, rounded to the weights' dtype as transformers does.
            let scale = Tensor::new(&[(self.config.hidden_size as f32).sqrt()], &self.device)?
                .to_dtype(x.dtype())?;
            return Ok(x.broadcast_mul(&scale)?);
        }
        Ok(x)
    }

    /// Additive attention bias `(B, 1, T, S)`: causal, hiding padded keys and, with a `window`,
    /// keys outside it (`w` keys, the query's own included, as in transformers). `past` cached
    /// keys precede the `T` new queries.
    fn attention_bias(
        &self,
        query_valid: &[Vec<bool>],
        key_valid: &[Vec<bool>],
        past: usize,
        window: Option<usize>,
    ) -> Result<Tensor> {
        let batch = query_valid.len();
        let seq = query_valid.first().map_or(0, Vec::len);
        let keys = key_valid.first().map_or(0, Vec::len);
        let mut data = Vec::with_capacity(batch * seq * keys);
        for row in key_valid {
            for t in 0..seq {
                let query_abs = past + t;
                for (s, &is_valid) in row.iter().enumerate() {
                    // transformers' window: a query sees itself and the `w − 1` keys before it.
                    let visible =
                        s <= query_abs && is_valid && window.is_none_or(|w| s + w > query_abs);
                    data.push(if visible { 0f32 } else { MASK_VALUE as f32 });
                }
            }
        }
        let bias = Tensor::from_vec(data, (batch, 1, seq, keys), &self.device)?;
        Ok(bias.to_dtype(self.dtype)?)
    }

    /// cos/sin tables `(B, 1, T, head_dim)` for the given positions.
    /// `sliding` picks the rope of sliding-window layers (Gemma 3's local base).
    fn rope_tables(&self, positions: &[Vec<u32>], sliding: bool) -> Result<(Tensor, Tensor)> {
        let batch = positions.len();
        let seq = positions.first().map_or(0, Vec::len);
        let flat: Vec<f32> = positions.iter().flatten().map(|&p| p as f32).collect();
        let c = &self.config;
        let local = if sliding {
            c.sliding_rope.as_ref()
        } else {
            None
        };
        let (theta, scaling) = match local {
            Some(l) => (l.theta, l.scaling.as_ref()),
            None => (c.rope_theta, c.rope_scaling.as_ref()),
        };
        // Dynamic NTK scaling recomputes the frequencies from the longest position of the call,
        // as transformers does when a forward goes past `max_position_embeddings`.
        let length_dependent = matches!(scaling, Some(RopeScaling::Dynamic { .. }));
        let inv_freq = if local.is_some() || length_dependent {
            let longest = positions
                .iter()
                .flatten()
                .max()
                .map_or(0, |&p| p as usize + 1);
            let freqs = super::config::rope::inv_freq(theta, scaling, c.rotary_dim(), longest);
            Tensor::new(freqs, &self.device)?
        } else {
            self.inv_freq.clone()
        };
        let pos = Tensor::from_vec(flat, (batch * seq, 1), &self.device)?;
        let half = inv_freq.dim(0)?;
        let freqs = pos.matmul(&inv_freq.reshape((1, half))?)?;
        let freqs = Tensor::cat(&[&freqs, &freqs], D::Minus1)?;
        let shape = (batch, 1, seq, 2 * half);
        let scaling = super::config::rope::attention_scaling(scaling);
        let (mut cos, mut sin) = (freqs.cos()?, freqs.sin()?);
        if scaling != 1.0 {
            cos = (cos * scaling)?;
            sin = (sin * scaling)?;
        }
        let cos = cos.reshape(shape)?.to_dtype(self.dtype)?;
        let sin = sin.reshape(shape)?.to_dtype(self.dtype)?;
        Ok((cos, sin))
    }

    /// M-RoPE tables: frequency `j` turns with the stream whose `mrope_section` holds it.
    fn mrope_tables(&self, streams: &MropeStreams) -> Result<(Tensor, Tensor)> {
        let section = self
            .config
            .mrope_section
            .as_ref()
            .context("M-RoPE positions for a model without mrope_section")?;
        let inv_freq: Vec<f32> = self.inv_freq.to_dtype(DType::F32)?.to_vec1()?;
        let half = inv_freq.len();
        let stream_of: Vec<usize> = section
            .iter()
            .enumerate()
            .flat_map(|(s, &n)| std::iter::repeat_n(s, n))
            .collect();
        anyhow::ensure!(
            stream_of.len() == half,
            "mrope_section covers {} of {half} frequencies",
            stream_of.len()
        );
        let batch = streams[0].len();
        let seq = streams[0].first().map_or(0, Vec::len);
        let mut angles = Vec::with_capacity(batch * seq * 2 * half);
        let [temporal, rows, cols] = streams;
        for ((tr, rr), cr) in temporal.iter().zip(rows).zip(cols) {
            for ((&tp, &rp), &cp) in tr.iter().zip(rr).zip(cr) {
                let position = [tp, rp, cp];
                let row: Vec<f32> = stream_of
                    .iter()
                    .zip(&inv_freq)
                    .map(|(&s, f)| position[s] as f32 * f)
                    .collect();
                angles.extend_from_slice(&row);
                angles.extend_from_slice(&row);
            }
        }
        let angles = Tensor::from_vec(angles, (batch, 1, seq, 2 * half), &self.device)?;
        let scaling = super::config::rope::attention_scaling(self.config.rope_scaling.as_ref());
        let (mut cos, mut sin) = (angles.cos()?, angles.sin()?);
        if scaling != 1.0 {
            cos = (cos * scaling)?;
            sin = (sin * scaling)?;
        }
        Ok((cos.to_dtype(self.dtype)?, sin.to_dtype(self.dtype)?))
    }

    fn run_layers(
        &self,
        mut x: Tensor,
        ctx: &LayerContext,
        mut cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        for (index, layer) in self.layers.iter().enumerate() {
            let kv = cache.as_deref_mut().map(|c| &mut c.layers[index]);
            x = self.layer_parts(layer, &x, ctx.for_layer(layer), kv)?.0;
        }
        Ok(x)
    }

    /// One layer: the new residual stream, and the attention and MLP contributions to it.
    fn layer_parts(
        &self,
        layer: &Layer,
        x: &Tensor,
        inputs: &AttentionInputs,
        kv: Option<&mut Option<(Tensor, Tensor)>>,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let h = self.norm(x, &layer.input_norm)?;
        let mut attn = self.attention(layer, &h, inputs, kv)?;
        // Llama: `post_attention_layernorm` normalises the MLP's input. Gemma: it normalises
        // the attention output, and the MLP has norms of its own before and after.
        if layer.pre_ff_norm.is_some() {
            attn = self.norm(&attn, &layer.post_norm)?;
        }
        let x = (x + &attn)?;
        let h = self.norm(&x, layer.pre_ff_norm.as_ref().unwrap_or(&layer.post_norm))?;
        let [gate, up]: [Tensor; 2] = layer
            .gate_up
            .forward(&h)?
            .try_into()
            .map_err(|_| anyhow::anyhow!("gate/up projections give two parts"))?;
        let gated = if self.config.gemma.gelu_tanh {
            (gate.gelu()? * up)?
        } else {
            ops::swiglu(&gate, &up)?
        };
        let mut mlp = layer.down.forward(&gated)?;
        if let Some(post_ff) = &layer.post_ff_norm {
            mlp = self.norm(&mlp, post_ff)?;
        }
        let out = (x + &mlp)?;
        Ok((out, attn, mlp))
    }

    fn attention(
        &self,
        layer: &Layer,
        h: &Tensor,
        inputs: &AttentionInputs,
        kv: Option<&mut Option<(Tensor, Tensor)>>,
    ) -> Result<Tensor> {
        let (cos, sin, bias) = (&inputs.cos, &inputs.sin, &inputs.bias);
        let c = &self.config;
        let (batch, seq, _) = h.dims3()?;
        let heads = |t: Tensor, n: usize| -> Result<Tensor> {
            Ok(t.reshape((batch, seq, n, c.head_dim))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        // Qwen3 normalises each head before rope; SmolLM3 skips rope in some layers.
        let place = |t: Tensor, norm: &Option<Param>| -> Result<Tensor> {
            let t = match norm {
                Some(w) => self.norm(&t, w)?,
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
            .forward(h)?
            .try_into()
            .map_err(|_| anyhow::anyhow!("q/k/v projections give three parts"))?;
        let q = place(heads(q, c.num_attention_heads)?, &layer.q_norm)?;
        let mut k = place(heads(k, c.num_key_value_heads)?, &layer.k_norm)?;
        let mut v = heads(v, c.num_key_value_heads)?;
        if let Some(slot) = kv {
            if let Some((past_k, past_v)) = slot.as_ref() {
                k = Tensor::cat(&[past_k, &k], 2)?;
                v = Tensor::cat(&[past_v, &v], 2)?;
            }
            *slot = Some((k.clone(), v.clone()));
        }
        let groups = c.num_attention_heads / c.num_key_value_heads;
        let k = repeat_kv(&k, groups)?;
        let v = repeat_kv(&v, groups)?;
        let scale = c.attention_scale();
        let scores = q.matmul(&k.t()?)?;
        let probs = match c.gemma.attn_logit_softcapping {
            // Gemma 2: tanh(s·scale / cap)·cap, then the mask.
            Some(cap) => {
                let capped = ((scores * (scale / cap))?.tanh()? * cap)?;
                ops::masked_softmax(&capped, bias, 1.0)?
            }
            None => ops::masked_softmax(&scores, bias, scale)?,
        };
        let out = probs.matmul(&v)?;
        let out = out.transpose(1, 2)?.reshape((batch, seq, c.q_dim()))?;
        layer.o.forward(&out)
    }
}

/// `(B, T)` mask tensor to rows of booleans.
fn mask_rows(mask: &Tensor, batch: usize, seq: usize) -> Result<Vec<Vec<bool>>> {
    let (b, t) = mask
        .dims2()
        .context("attention mask must be (batch, seq)")?;
    if (b, t) != (batch, seq) {
        bail!("attention mask is {b}x{t} but input ids are {batch}x{seq}");
    }
    let rows = mask.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    Ok(rows
        .into_iter()
        .map(|r| r.into_iter().map(|v| v != 0.0).collect())
        .collect())
}

/// Position of each token: the count of real tokens before it in its row (plus `offsets`).
fn positions_from_valid(valid: &[Vec<bool>], offsets: &[u32]) -> Vec<Vec<u32>> {
    valid
        .iter()
        .zip(offsets)
        .map(|(row, &offset)| {
            let mut next = offset;
            row.iter()
                .map(|&is_valid| {
                    let pos = next;
                    if is_valid {
                        next += 1;
                    }
                    pos
                })
                .collect()
        })
        .collect()
}

/// RMS norm computed in f32 (fused on the CPU, see [`ops::rms_norm`]).
fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    Ok(ops::rms_norm(x, weight, eps)?)
}

/// Rotary embedding (non-interleaved halves), with per-row positions (see [`ops::rope`]).
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    Ok(ops::rope(x, cos, sin)?)
}

/// Repeats each key/value head `groups` times for grouped-query attention.
fn repeat_kv(x: &Tensor, groups: usize) -> Result<Tensor> {
    if groups == 1 {
        return Ok(x.clone());
    }
    let (b, heads, seq, dim) = x.dims4()?;
    Ok(x.unsqueeze(2)?
        .broadcast_as((b, heads, groups, seq, dim))?
        .reshape((b, heads * groups, seq, dim))?)
}
