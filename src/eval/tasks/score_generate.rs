//! Generate: greedy decoding (batched across items with a KV cache), cut at the first stop
//! string, optional regex extraction, then exact or numeric match against the references.

use std::collections::BTreeMap;

use crate::model::vlm::ImageBatch;
use anyhow::{bail, Result};
use candle_core::{DType, Tensor, D};

use super::normalize::{extract, matches};
use super::prompt::{context_ids, is_raw, item_image, render};
use super::{Task, TaskItem};
use crate::model::{Decoder, ModelTokenizer};

/// Items decoded together.
pub const GENERATE_BATCH: usize = 8;

/// `text` up to the first occurrence of any of `stop`.
pub fn cut_at_stop(text: &str, stop: &[String]) -> String {
    let end = stop
        .iter()
        .filter_map(|s| text.find(s.as_str()))
        .min()
        .unwrap_or(text.len());
    text[..end].to_string()
}

/// Greedy continuations of `prompts` (token ids, left-padded into one batch), each up to
/// `max_new_tokens`, ended by a stop id (not included) or a stop string (cut off).
pub fn greedy_batch(
    decoder: &Decoder,
    tok: &ModelTokenizer,
    prompts: &[Vec<u32>],
    max_new_tokens: usize,
    stop: &[String],
) -> Result<Vec<String>> {
    greedy_batch_with_images(decoder, tok, prompts, max_new_tokens, stop, None)
}

/// [`greedy_batch`] with images for the prompts' image tokens, in row order.
pub fn greedy_batch_with_images(
    decoder: &Decoder,
    tok: &ModelTokenizer,
    prompts: &[Vec<u32>],
    max_new_tokens: usize,
    stop: &[String],
    images: Option<&ImageBatch>,
) -> Result<Vec<String>> {
    let batch = prompts.len();
    if batch == 0 || max_new_tokens == 0 {
        return Ok(vec![String::new(); batch]);
    }
    if prompts.iter().any(Vec::is_empty) {
        bail!("cannot generate from an empty prompt");
    }
    let device = decoder.device();
    let seq = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let pad = tok.pad_id();
    let mut ids = Vec::with_capacity(batch * seq);
    let mut valid = Vec::with_capacity(batch);
    for prompt in prompts {
        let padding = seq - prompt.len();
        ids.extend(std::iter::repeat_n(pad, padding));
        ids.extend_from_slice(prompt);
        let mut row = vec![false; padding];
        row.resize(seq, true);
        valid.push(row);
    }
    let mut cache = decoder.new_cache_with_capacity(batch, seq + max_new_tokens);
    let input = Tensor::from_vec(ids, (batch, seq), device)?;
    let mut logits = decoder.forward_cached(&input, Some(&valid), &mut cache, images)?;
    let mut generated: Vec<Vec<u32>> = vec![Vec::new(); batch];
    let mut done = vec![false; batch];
    for step in 0..max_new_tokens {
        let next: Vec<u32> = logits.argmax(D::Minus1)?.to_dtype(DType::U32)?.to_vec1()?;
        for (row, &token) in next.iter().enumerate() {
            if done[row] {
                continue;
            }
            if tok.stop_ids.contains(&token) {
                done[row] = true;
                continue;
            }
            generated[row].push(token);
            if !stop.is_empty() {
                let text = tok.decode(&generated[row])?;
                if stop.iter().any(|s| text.contains(s.as_str())) {
                    done[row] = true;
                }
            }
        }
        if step + 1 == max_new_tokens || done.iter().all(|d| *d) {
            break;
        }
        let input = Tensor::from_vec(next, (batch, 1), device)?;
        logits = decoder.forward_cached(&input, None, &mut cache, None)?;
    }
    generated
        .iter()
        .map(|g| Ok(cut_at_stop(&tok.decode(g)?, stop)))
        .collect()
}

/// The generated text for each item (after stop strings are cut; before extraction).
pub fn predictions(
    decoder: &Decoder,
    tok: &ModelTokenizer,
    task: &Task,
    items: &[TaskItem],
) -> Result<Vec<String>> {
    let raw = is_raw(tok, task.chat);
    let keep = decoder
        .config()
        .max_position_embeddings
        .saturating_sub(task.max_new_tokens)
        .max(1);
    let mut out = Vec::with_capacity(items.len());
    for (c, chunk) in items.chunks(GENERATE_BATCH).enumerate() {
        let mut prompts = Vec::with_capacity(chunk.len());
        let mut pixels = Vec::new();
        for (k, item) in chunk.iter().enumerate() {
            let TaskItem::Generate { prompt, .. } = item else {
                bail!("task `{}` mixes item types", task.name);
            };
            let text = render(tok, prompt, task.chat)?;
            let mut ids = context_ids(decoder, tok, &text, raw)?;
            let image = item_image(tok, task, c * GENERATE_BATCH + k, &mut ids)?;
            if ids.len() > keep {
                if image.is_some() {
                    bail!(
                        "task `{}`: an item with an image is {} tokens, too long for the model's window",
                        task.name,
                        ids.len()
                    );
                }
                ids.drain(..ids.len() - keep);
            }
            prompts.push(ids);
            pixels.extend(image);
        }
        let refs: Vec<&crate::data::Pixels> = pixels.iter().collect();
        let images = ImageBatch::from_pixels(&refs, decoder.device())?;
        out.extend(greedy_batch_with_images(
            decoder,
            tok,
            &prompts,
            task.max_new_tokens,
            &task.stop,
            images.as_ref(),
        )?);
    }
    Ok(out)
}

/// Whether a generated text is correct for an item's answers under the task's settings.
pub fn is_correct(task: &Task, generated: &str, answers: &[String]) -> bool {
    let answer = match &task.regex {
        Some(re) => match extract(generated, re) {
            Some(a) => a,
            None => return false,
        },
        None => generated.to_string(),
    };
    matches(&answer, answers, task.match_mode)
}

/// `exact_match` in percent over `items`.
pub fn score(
    decoder: &Decoder,
    tok: &ModelTokenizer,
    task: &Task,
    items: &[TaskItem],
) -> Result<BTreeMap<String, f64>> {
    let mut metrics = BTreeMap::new();
    if items.is_empty() {
        return Ok(metrics);
    }
    let generated = predictions(decoder, tok, task, items)?;
    let correct = items
        .iter()
        .zip(&generated)
        .filter(|(item, text)| match item {
            TaskItem::Generate { answers, .. } => is_correct(task, text, answers),
            _ => false,
        })
        .count();
    metrics.insert(
        "exact_match".into(),
        100.0 * correct as f64 / items.len() as f64,
    );
    Ok(metrics)
}
