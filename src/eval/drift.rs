//! Per-layer drift, the study's second analysis: for each decoder layer, the logit-space size of
//! the change of the attention block's and the MLP block's residual contributions at the answer
//! tokens (teacher-forced on the base model's continuations of the held-out probe prompts).
//!
//! Two measures, each under its own name:
//! - [`layer_drift`], as the study's analysis script computes it: each model's own unembedding,
//!   ‖W_now·h_now − W_base·h_base‖₂ at each answer token's own position, averaged over a
//!   sample's answer tokens first, then over samples. As there, no final norm is applied (the
//!   raw block output times `lm_head`; the tied embeddings when tied).
//! - [`layer_drift_pooled`], what earlier builds recorded as `layer_drift`: the base
//!   unembedding for both, ‖W_base·(h_now − h_base)‖₂, averaged over all answer tokens pooled.
//!
//! The two agree when the unembedding is frozen and every sample has as many answer tokens;
//! they differ when `lm_head` or tied embeddings train (full-llm) or answers differ in length.

use crate::model::decoder::Inputs;
use anyhow::Result;
use candle_core::{DType, Tensor, D};
use serde::{Deserialize, Serialize};

use super::probe::{forced_batch, ProbeOptions, ProbePrompt};
use crate::model::Decoder;

/// Drift of one layer's two blocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerDrift {
    pub layer: usize,
    pub attn: f64,
    pub mlp: f64,
}

/// Which drift measure (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Measure {
    /// Each model's own unembedding, per-sample mean first.
    Own,
    /// The base unembedding for both, pooled over tokens.
    PooledBase,
}

/// Per-layer drift between `base` and `current`, the study's way: own unembeddings, averaged
/// per sample, then over samples.
pub fn layer_drift(
    base: &Decoder,
    current: &Decoder,
    prompts: &[ProbePrompt],
    answers: &[Vec<u32>],
    options: &ProbeOptions,
) -> Result<Vec<LayerDrift>> {
    let mut all = measure(base, current, prompts, answers, options, &[Measure::Own])?;
    Ok(all.remove(0))
}

/// Per-layer drift as earlier builds recorded it: the base unembedding for both models,
/// averaged over all answer tokens pooled.
pub fn layer_drift_pooled(
    base: &Decoder,
    current: &Decoder,
    prompts: &[ProbePrompt],
    answers: &[Vec<u32>],
    options: &ProbeOptions,
) -> Result<Vec<LayerDrift>> {
    let mut all = measure(
        base,
        current,
        prompts,
        answers,
        options,
        &[Measure::PooledBase],
    )?;
    Ok(all.remove(0))
}

/// Both measures from one pass: ([`layer_drift`], [`layer_drift_pooled`]).
pub fn layer_drift_both(
    base: &Decoder,
    current: &Decoder,
    prompts: &[ProbePrompt],
    answers: &[Vec<u32>],
    options: &ProbeOptions,
) -> Result<(Vec<LayerDrift>, Vec<LayerDrift>)> {
    let measures = [Measure::Own, Measure::PooledBase];
    let mut all = measure(base, current, prompts, answers, options, &measures)?;
    let pooled = all.remove(1);
    Ok((all.remove(0), pooled))
}

/// Mean over samples of each sample's mean (samples without tokens are skipped).
pub fn mean_per_sample(samples: &[Vec<f64>]) -> f64 {
    let means: Vec<f64> = samples
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| s.iter().sum::<f64>() / s.len() as f64)
        .collect();
    means.iter().sum::<f64>() / means.len().max(1) as f64
}

/// Mean over all tokens of all samples pooled.
pub fn mean_pooled(samples: &[Vec<f64>]) -> f64 {
    let count: usize = samples.iter().map(Vec::len).sum();
    samples.iter().flatten().sum::<f64>() / count.max(1) as f64
}

/// Per-token values of each measure, layer and block (attention, MLP): one list per sample.
type TokenValues = Vec<Vec<[Vec<Vec<f64>>; 2]>>;

fn measure(
    base: &Decoder,
    current: &Decoder,
    prompts: &[ProbePrompt],
    answers: &[Vec<u32>],
    options: &ProbeOptions,
    measures: &[Measure],
) -> Result<Vec<Vec<LayerDrift>>> {
    let layers = base.config().num_hidden_layers;
    let mut values: TokenValues = vec![vec![[Vec::new(), Vec::new()]; layers]; measures.len()];
    let pairs: Vec<(&ProbePrompt, &Vec<u32>)> = prompts
        .iter()
        .zip(answers)
        .filter(|(_, c)| !c.is_empty())
        .collect();
    for chunk in pairs.chunks(options.batch_size.max(1)) {
        let (ps, cs): (Vec<&ProbePrompt>, Vec<&Vec<u32>>) = chunk.iter().copied().unzip();
        let batch = forced_batch(&ps, &cs, base.device())?;
        let lengths: Vec<usize> = batch.positions.iter().map(Vec::len).collect();
        // Answer tokens sit one position after the positions that predict them.
        let flat: Vec<u32> = batch.positions.iter().flatten().map(|p| p + 1).collect();
        let index = Tensor::new(flat.as_slice(), base.device())?;
        let pixels = batch.pixels.as_ref();
        let inputs = Inputs::text(&batch.ids, Some(&batch.mask)).with_images(pixels);
        let outputs_base = base.block_outputs(&inputs)?;
        let outputs_now = current.block_outputs(&inputs)?;
        for (layer, ((attn_b, mlp_b), (attn_n, mlp_n))) in
            outputs_base.iter().zip(&outputs_now).enumerate()
        {
            for (block, (b, n)) in [(attn_b, attn_n), (mlp_b, mlp_n)].into_iter().enumerate() {
                let (hb, hn) = (picked(b, &index)?, picked(n, &index)?);
                for (m, kind) in measures.iter().enumerate() {
                    let norms = match kind {
                        Measure::Own => diff_norms(&[(&hn, current, 1.0), (&hb, base, -1.0)])?,
                        Measure::PooledBase => diff_norms(&[(&(&hn - &hb)?, base, 1.0)])?,
                    };
                    let mut rest = norms.as_slice();
                    for &len in &lengths {
                        let (sample, tail) = rest.split_at(len);
                        values[m][layer][block].push(sample.to_vec());
                        rest = tail;
                    }
                }
            }
        }
    }
    Ok(measures
        .iter()
        .zip(values)
        .map(|(kind, per_layer)| {
            let average = match kind {
                Measure::Own => mean_per_sample,
                Measure::PooledBase => mean_pooled,
            };
            per_layer
                .iter()
                .enumerate()
                .map(|(layer, [attn, mlp])| LayerDrift {
                    layer,
                    attn: average(attn),
                    mlp: average(mlp),
                })
                .collect()
        })
        .collect())
}

/// Rows of a `(B, T, H)` block output at the flat `index`.
fn picked(x: &Tensor, index: &Tensor) -> Result<Tensor> {
    let (b, t, h) = x.dims3()?;
    Ok(x.reshape((b * t, h))?.index_select(index, 0)?)
}

/// Rows of the unembedding handled at once: bounds the f32 copy of a large vocabulary.
const VOCAB_CHUNK: usize = 32_768;

/// ‖Σ sign·W_model·h‖₂ per row, for terms `(h (N, H), model, sign)`, computed in f32 over
/// chunks of the vocabulary.
fn diff_norms(terms: &[(&Tensor, &Decoder, f64)]) -> Result<Vec<f64>> {
    let rows = terms[0].0.dim(0)?;
    let vocab = terms[0].1.unembedding().dim(0)?;
    let hidden: Vec<Tensor> = terms
        .iter()
        .map(|(h, _, _)| h.to_dtype(DType::F32))
        .collect::<candle_core::Result<_>>()?;
    let mut squares = Tensor::zeros(rows, DType::F32, terms[0].0.device())?;
    let mut start = 0;
    while start < vocab {
        let len = VOCAB_CHUNK.min(vocab - start);
        let mut logits: Option<Tensor> = None;
        for ((_, model, sign), h) in terms.iter().zip(&hidden) {
            let w = model
                .unembedding()
                .narrow(0, start, len)?
                .to_dtype(DType::F32)?;
            let part = (h.matmul(&w.t()?)? * *sign)?;
            logits = Some(match logits {
                Some(acc) => (acc + part)?,
                None => part,
            });
        }
        let logits = logits.expect("at least one term");
        squares = (squares + logits.sqr()?.sum(D::Minus1)?)?;
        start += len;
    }
    Ok(squares
        .sqrt()?
        .to_vec1::<f32>()?
        .into_iter()
        .map(f64::from)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_sample_and_pooled_means_differ_on_unequal_lengths() {
        // Sample means 2 and 10 → 6; pooled (1 + 3 + 10) / 3.
        let samples = vec![vec![1.0, 3.0], vec![10.0], vec![]];
        assert_eq!(mean_per_sample(&samples), 6.0);
        assert_eq!(mean_pooled(&samples), 14.0 / 3.0);
        let equal = vec![vec![1.0, 3.0], vec![10.0, 4.0]];
        assert_eq!(mean_per_sample(&equal), mean_pooled(&equal));
        assert_eq!(mean_per_sample(&[]), 0.0);
    }
}
