//! Perplexity: token-level negative log-likelihood of raw text (no chat template), with the
//! prefix token as the first context and disjoint windows for texts longer than the model's
//! window (as lm-evaluation-harness's rolling log-likelihood does).

use std::collections::BTreeMap;

use anyhow::{bail, Result};

use super::loglik::{span_logprobs, Span};
use super::prompt::prefix_id;
use super::TaskItem;
use crate::model::{Decoder, ModelTokenizer};

/// Windows scored in one forward pass.
pub const PERPLEXITY_BATCH: usize = 8;

/// The scored windows covering `tokens` after the prefix token: each window is at most
/// `max_len` ids, and together they score every token of `tokens` exactly once.
pub fn windows(prefix: u32, tokens: &[u32], max_len: usize) -> Vec<Span> {
    let max_len = max_len.max(2);
    let mut full = Vec::with_capacity(tokens.len() + 1);
    full.push(prefix);
    full.extend_from_slice(tokens);
    let mut spans = Vec::new();
    let mut start = 1;
    while start < full.len() {
        let end = (start + max_len - 1).min(full.len());
        let from = end.saturating_sub(max_len);
        spans.push(Span {
            ids: full[from..end].to_vec(),
            start: start - from,
        });
        start = end;
    }
    spans
}

/// Summed NLL (nats) and token count of `text`.
pub fn text_nll(decoder: &Decoder, tok: &ModelTokenizer, text: &str) -> Result<(f64, usize)> {
    let spans = text_windows(decoder, tok, text)?;
    let mut nll = 0.0;
    let mut count = 0;
    for chunk in spans.chunks(PERPLEXITY_BATCH) {
        for lp in span_logprobs(decoder, chunk, tok.pad_id())? {
            nll -= lp.iter().sum::<f64>();
            count += lp.len();
        }
    }
    Ok((nll, count))
}

fn text_windows(decoder: &Decoder, tok: &ModelTokenizer, text: &str) -> Result<Vec<Span>> {
    let tokens = tok.encode(text)?;
    if tokens.is_empty() {
        bail!("text {text:?} encodes to no tokens");
    }
    Ok(windows(
        prefix_id(decoder, tok),
        &tokens,
        decoder.config().max_position_embeddings,
    ))
}

/// `perplexity` = exp(mean NLL per token over all items), `nll_per_token`, and `bits_per_byte`.
pub fn score(
    decoder: &Decoder,
    tok: &ModelTokenizer,
    items: &[TaskItem],
) -> Result<BTreeMap<String, f64>> {
    let mut metrics = BTreeMap::new();
    if items.is_empty() {
        return Ok(metrics);
    }
    let mut spans = Vec::new();
    let mut bytes = 0usize;
    for item in items {
        let TaskItem::Perplexity { text } = item else {
            bail!("a perplexity task holds a non-perplexity item");
        };
        spans.extend(text_windows(decoder, tok, text)?);
        bytes += text.len();
    }
    let mut nll = 0.0;
    let mut count = 0usize;
    for chunk in spans.chunks(PERPLEXITY_BATCH) {
        for lp in span_logprobs(decoder, chunk, tok.pad_id())? {
            nll -= lp.iter().sum::<f64>();
            count += lp.len();
        }
    }
    let mean = nll / count.max(1) as f64;
    metrics.insert("perplexity".into(), mean.exp());
    metrics.insert("nll_per_token".into(), mean);
    metrics.insert(
        "bits_per_byte".into(),
        nll / (bytes.max(1) as f64 * std::f64::consts::LN_2),
    );
    Ok(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_score_every_token_once_within_the_limit() {
        let tokens: Vec<u32> = (10..30).collect();
        for max_len in [2, 3, 5, 8, 21, 22, 100] {
            let spans = windows(0, &tokens, max_len);
            let mut scored = Vec::new();
            for span in &spans {
                assert!(span.ids.len() <= max_len, "max_len {max_len}: {span:?}");
                assert!(span.start >= 1);
                scored.extend_from_slice(&span.ids[span.start..]);
            }
            assert_eq!(scored, tokens, "max_len {max_len}");
        }
        let one = windows(7, &tokens, 100);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].ids[0], 7);
        assert_eq!(one[0].start, 1);
    }
}
