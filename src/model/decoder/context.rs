//! What every layer attends with for one call: rope tables and attention biases, built from
//! the padding mask (and, for M-RoPE, the images), for full sequences and cached decoding.

use std::sync::{Arc, OnceLock};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};

use super::Decoder;
use crate::model::ops::{self, AttentionMask};
use crate::model::vlm::ImageBatch;

/// M-RoPE's three position streams (temporal, row, column), each `[row][position]`.
pub(super) type MropeStreams = [Vec<Vec<u32>>; 3];

/// Rotary positions: one per token, or M-RoPE's three streams.
pub(super) enum Positions {
    Flat(Vec<Vec<u32>>),
    Sections(MropeStreams),
}

/// What one kind of layer attends with: rope tables `(B, 1, T, D)` and the mask.
#[derive(Clone)]
pub(super) struct AttentionInputs {
    pub(super) cos: Tensor,
    pub(super) sin: Tensor,
    pub(super) mask: AttentionMask,
    /// The mask as an additive bias `(B, 1, T, S)`, built when the composed path first needs it.
    bias: OnceLock<Tensor>,
    /// Whether this call builds no graph (cached decoding): products take the few-row path.
    pub(super) inference: bool,
    /// Whether nobody reads the layer's output value, only backpropagates through it (the
    /// recomputation of a checkpointed layer): its last product then computes no value.
    pub(super) output_unread: bool,
    /// A checkpointed layer's attention result, recorded in its forward and replayed in its
    /// recomputation (see [`ops::AttentionMemo`]).
    pub(super) attention_memo: Option<ops::MemoUse>,
}

impl AttentionInputs {
    /// The same inputs for a checkpointed layer's forward, which keeps its attention result in
    /// `memo`.
    pub(super) fn recording(&self, memo: &Arc<ops::AttentionMemo>) -> Self {
        Self {
            attention_memo: Some(ops::MemoUse::Record(memo.clone())),
            ..self.clone()
        }
    }

    /// The same inputs for a checkpointed layer's recomputation: the attention result kept in
    /// `memo` is replayed, and the layer's output goes unread (see `output_unread`).
    pub(super) fn recomputing(&self, memo: &Arc<ops::AttentionMemo>) -> Self {
        Self {
            output_unread: true,
            attention_memo: Some(ops::MemoUse::Replay(memo.clone())),
            ..self.clone()
        }
    }

    /// The mask as an additive bias `(B, 1, T, S)` in the compute dtype.
    pub(super) fn bias(&self) -> Result<&Tensor> {
        if let Some(bias) = self.bias.get() {
            return Ok(bias);
        }
        let queries = self.cos.dim(2)?;
        let bias = self
            .mask
            .bias(queries, self.cos.dtype(), self.cos.device())?;
        Ok(self.bias.get_or_init(|| bias))
    }
}

/// Attention inputs of global layers and, for Gemma's alternating layers, of sliding ones.
pub(super) struct LayerContext {
    pub(super) global: AttentionInputs,
    pub(super) sliding: Option<AttentionInputs>,
}

impl LayerContext {
    /// The inputs of a layer with sliding-window attention (`sliding`) or global attention.
    pub(super) fn for_layer(&self, sliding: bool) -> &AttentionInputs {
        match &self.sliding {
            Some(inputs) if sliding => inputs,
            _ => &self.global,
        }
    }
}

impl Decoder {
    /// Token embeddings with image features written over the image-token positions.
    /// Rope tables and attention biases of a full sequence (no cache) from its padding mask.
    pub(super) fn full_sequence_context(
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
        self.layer_context(&positions, &valid, 0, false)
    }

    /// What each kind of layer attends with: global layers (every layer for most models) and,
    /// for Gemma's alternating layers, sliding-window layers with their own mask and rope.
    /// `past` cached keys precede the new queries; `inference`: the call builds no graph.
    pub(super) fn layer_context(
        &self,
        positions: &Positions,
        key_valid: &[Vec<bool>],
        past: usize,
        inference: bool,
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
            mask: AttentionMask::new(key_valid, past, global_window)?,
            bias: OnceLock::new(),
            inference,
            output_unread: false,
            attention_memo: None,
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
                mask: AttentionMask::new(key_valid, past, c.sliding_window)?,
                bias: OnceLock::new(),
                inference,
                output_unread: false,
                attention_memo: None,
                cos,
                sin,
            })
        } else {
            None
        };
        Ok(LayerContext { global, sliding })
    }
}

/// `(B, T)` mask tensor to rows of booleans.
pub(super) fn mask_rows(mask: &Tensor, batch: usize, seq: usize) -> Result<Vec<Vec<bool>>> {
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
pub(super) fn positions_from_valid(valid: &[Vec<bool>], offsets: &[u32]) -> Vec<Vec<u32>> {
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
