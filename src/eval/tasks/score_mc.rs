//! Multiple choice: each choice's log-likelihood as a continuation of the prompt; `acc` picks
//! the largest, `acc_norm` the largest per byte of choice text.

use std::collections::BTreeMap;

use anyhow::{bail, Result};

use super::loglik::{span_logprobs_with_images, Span};
use super::prompt::{context_ids, is_raw, item_image, render, repeat_pixels};
use super::{Task, TaskItem};
use crate::model::{Decoder, ModelTokenizer};

/// Log-likelihood of each choice of an item, in order.
pub fn choice_logliks(
    decoder: &Decoder,
    tok: &ModelTokenizer,
    prompt: &str,
    choices: &[String],
    chat: bool,
) -> Result<Vec<f64>> {
    choice_logliks_with_image(decoder, tok, prompt, choices, chat, None)
}

/// [`choice_logliks`] for an item with an image: `image` gives the task and the item's index
/// (see [`item_image`]).
pub fn choice_logliks_with_image(
    decoder: &Decoder,
    tok: &ModelTokenizer,
    prompt: &str,
    choices: &[String],
    chat: bool,
    image: Option<(&Task, usize)>,
) -> Result<Vec<f64>> {
    let raw = is_raw(tok, chat);
    let mut context = render(tok, prompt, chat)?;
    // As lm-evaluation-harness does for raw prompts: trailing whitespace of the context moves to
    // the front of each continuation, so "Answer: " + "blue" tokenizes like running text.
    let mut moved = String::new();
    if raw {
        let kept = context.trim_end().len();
        moved = context.split_off(kept);
    }
    let mut ctx = context_ids(decoder, tok, &context, raw)?;
    let pixels = match image {
        Some((task, index)) => item_image(tok, task, index, &mut ctx)?,
        None => None,
    };
    let max_len = decoder.config().max_position_embeddings;
    let mut spans = Vec::with_capacity(choices.len());
    for choice in choices {
        let cont = tok.encode(&format!("{moved}{choice}"))?;
        if cont.is_empty() {
            bail!("choice {choice:?} encodes to no tokens");
        }
        let mut ids = ctx.clone();
        ids.extend_from_slice(&cont);
        let mut start = ctx.len();
        if ids.len() > max_len {
            // Keep the end; the context loses its oldest tokens.
            let drop = ids.len() - max_len;
            if pixels.is_some() {
                bail!("an item with an image is {} tokens, longer than the model's {max_len}-token window", ids.len());
            }
            if drop >= start {
                bail!(
                    "choice {choice:?} is {} tokens, too long for the model's {max_len}-token window",
                    cont.len()
                );
            }
            ids.drain(..drop);
            start -= drop;
        }
        spans.push(Span { ids, start });
    }
    let pixels = pixels
        .map(|p| repeat_pixels(&p, spans.len(), decoder.device()))
        .transpose()?;
    let logprobs = span_logprobs_with_images(decoder, &spans, tok.pad_id(), pixels.as_ref())?;
    Ok(logprobs.iter().map(|lp| lp.iter().sum()).collect())
}

/// Index of the largest value (the first on ties).
pub fn argmax(values: &[f64]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, v) in values.iter().enumerate() {
        if best.is_none_or(|b| *v > values[b]) {
            best = Some(i);
        }
    }
    best
}

/// `acc` and `acc_norm` in percent over `items`.
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
    let (mut correct, mut correct_norm) = (0usize, 0usize);
    for (index, item) in items.iter().enumerate() {
        let TaskItem::MultipleChoice {
            prompt,
            choices,
            answer,
        } = item
        else {
            bail!("task `{}` mixes item types", task.name);
        };
        let ll = choice_logliks_with_image(
            decoder,
            tok,
            prompt,
            choices,
            task.chat,
            Some((task, index)),
        )?;
        let per_byte: Vec<f64> = ll
            .iter()
            .zip(choices)
            .map(|(l, c)| l / c.len() as f64)
            .collect();
        correct += usize::from(argmax(&ll) == Some(*answer));
        correct_norm += usize::from(argmax(&per_byte) == Some(*answer));
    }
    let n = items.len() as f64;
    metrics.insert("acc".into(), 100.0 * correct as f64 / n);
    metrics.insert("acc_norm".into(), 100.0 * correct_norm as f64 / n);
    Ok(metrics)
}
