//! Batched log-probabilities of scored token spans: one right-padded forward pass, logits only
//! at the positions that predict a scored token.

use crate::model::decoder::Inputs;
use crate::model::vlm::ImageBatch;
use anyhow::{ensure, Result};
use candle_core::{DType, Tensor};

use crate::model::Decoder;

/// A token sequence whose tokens `ids[start..]` are scored given everything before them.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub ids: Vec<u32>,
    /// First scored position; at least 1 (the first token has nothing to be predicted from).
    pub start: usize,
}

/// Upper bound on logits materialised at once (elements), to keep large vocabularies in memory.
const LOGIT_BUDGET: usize = 1 << 25;

/// Natural-log probability of each scored token of each span, in order.
pub fn span_logprobs(decoder: &Decoder, spans: &[Span], pad_id: u32) -> Result<Vec<Vec<f64>>> {
    span_logprobs_with_images(decoder, spans, pad_id, None)
}

/// [`span_logprobs`] with images for the spans' image tokens, in row order.
pub fn span_logprobs_with_images(
    decoder: &Decoder,
    spans: &[Span],
    pad_id: u32,
    images: Option<&ImageBatch>,
) -> Result<Vec<Vec<f64>>> {
    if spans.is_empty() {
        return Ok(Vec::new());
    }
    for span in spans {
        ensure!(
            span.start >= 1 && span.start <= span.ids.len(),
            "scored span starts at {} of {} tokens",
            span.start,
            span.ids.len()
        );
    }
    let device = decoder.device();
    let batch = spans.len();
    let seq = spans.iter().map(|s| s.ids.len()).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(batch * seq);
    let mut mask = Vec::with_capacity(batch * seq);
    for span in spans {
        ids.extend_from_slice(&span.ids);
        ids.extend(std::iter::repeat_n(pad_id, seq - span.ids.len()));
        mask.extend(std::iter::repeat_n(1u32, span.ids.len()));
        mask.extend(std::iter::repeat_n(0u32, seq - span.ids.len()));
    }
    let input = Tensor::from_vec(ids, (batch, seq), device)?;
    let mask = Tensor::from_vec(mask, (batch, seq), device)?;
    let hidden = decoder.hidden_states(&Inputs::text(&input, Some(&mask)).with_images(images))?;
    let width = hidden.dim(2)?;
    let hidden = hidden.reshape((batch * seq, width))?;

    // Position p predicts token p + 1.
    let mut positions: Vec<u32> = Vec::new();
    let mut targets: Vec<u32> = Vec::new();
    for (row, span) in spans.iter().enumerate() {
        for p in span.start - 1..span.ids.len() - 1 {
            positions.push((row * seq + p) as u32);
            targets.push(span.ids[p + 1]);
        }
    }
    let vocab = decoder.config().vocab_size.max(1);
    let chunk = (LOGIT_BUDGET / vocab).max(1);
    let mut flat: Vec<f64> = Vec::with_capacity(positions.len());
    for (pos, tgt) in positions.chunks(chunk).zip(targets.chunks(chunk)) {
        let index = Tensor::new(pos, device)?;
        let picked = hidden.index_select(&index, 0)?;
        let logits = decoder.logits(&picked)?;
        let log_probs = candle_nn::ops::log_softmax(&logits, 1)?;
        let tgt = Tensor::new(tgt, device)?.unsqueeze(1)?;
        let chosen = log_probs
            .gather(&tgt, 1)?
            .squeeze(1)?
            .to_dtype(DType::F64)?;
        flat.extend(chosen.to_vec1::<f64>()?);
    }
    let mut out = Vec::with_capacity(batch);
    let mut offset = 0;
    for span in spans {
        let n = span.ids.len() - span.start;
        out.push(flat[offset..offset + n].to_vec());
        offset += n;
    }
    Ok(out)
}
