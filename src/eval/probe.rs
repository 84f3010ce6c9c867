//! The drift probe: how much probability the model puts on numeric tokens while it answers,
//! and how far its output distribution has moved from the base model's.
//!
//! For each prompt the current model decodes greedily (KV cache, batched with left padding);
//! every step's softmax gives the numeric mass and the largest numeric probability. KL(base ‖
//! current) and entropy are read teacher-forced on the base model's greedy continuation, so
//! both models are compared at the same positions.

use std::collections::BTreeMap;
use std::path::Path;

use crate::model::decoder::Inputs;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor, D};
use serde::{Deserialize, Serialize};

use super::classes::TokenClass;
use super::numeric::NumericVocab;
use crate::data::Pixels;
use crate::model::tokenizer::ChatMessage;
use crate::model::vlm::ImageBatch;
use crate::model::{Decoder, ModelTokenizer};

/// One probe prompt, rendered and tokenized.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbePrompt {
    pub text: String,
    /// Token ids, the image placeholder expanded to the image's tokens.
    pub ids: Vec<u32>,
    /// The prompt's images, in placeholder order (vision-language models).
    pub pixel_values: Vec<Pixels>,
}

/// The images of `prompts` (those that have one), in order.
pub(crate) fn stack_pixels<'a>(
    prompts: impl IntoIterator<Item = &'a ProbePrompt>,
    device: &candle_core::Device,
) -> Result<Option<ImageBatch>> {
    let pixels: Vec<&Pixels> = prompts
        .into_iter()
        .flat_map(|p| p.pixel_values.iter())
        .collect();
    ImageBatch::from_pixels(&pixels, device)
}

/// Reads `{"prompt": ...}` lines (with `"image": "path"` relative to the file, for a
/// vision-language model) and renders each as a user turn with the generation prompt.
pub fn load_prompts(
    path: &Path,
    tok: &ModelTokenizer,
    limit: Option<usize>,
) -> Result<Vec<ProbePrompt>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read probe prompts {}", path.display()))?;
    let mut prompts = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{} line {}: not valid JSON", path.display(), index + 1))?;
        let prompt = value
            .get("prompt")
            .and_then(|p| p.as_str())
            .with_context(|| {
                format!(
                    "{} line {}: expected {{\"prompt\": \"...\"}}",
                    path.display(),
                    index + 1
                )
            })?;
        let at = || format!("{} line {}", path.display(), index + 1);
        let files: Vec<&str> = match (value.get("image"), value.get("images")) {
            (Some(serde_json::Value::String(one)), None) => vec![one.as_str()],
            (None, Some(serde_json::Value::Array(many))) => many
                .iter()
                .map(|v| {
                    v.as_str()
                        .with_context(|| format!("{}: \"images\" must hold path strings", at()))
                })
                .collect::<Result<_>>()?,
            (None, None) => Vec::new(),
            _ => bail!(
                "{}: give the picture as \"image\": \"path\" or \"images\": [\"path\", ...]",
                at()
            ),
        };
        let mut rendered = render_prompt(prompt, tok)?;
        if let Some(images) = &tok.images {
            let base = path.parent().unwrap_or(Path::new(""));
            let paths: Vec<std::path::PathBuf> = files.iter().map(|f| base.join(f)).collect();
            let refs: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
            rendered.pixel_values = images.load_record_images(&refs).with_context(at)?;
            let own: Vec<&Pixels> = rendered.pixel_values.iter().collect();
            let (ids, placeholders) = images.expand(&rendered.ids, &own);
            if placeholders != files.len() {
                bail!(
                    "{}: the prompt has {placeholders} <image> placeholder(s) but {} image(s); give one placeholder per image",
                    at(),
                    files.len()
                );
            }
            rendered.ids = ids;
        }
        prompts.push(rendered);
        if limit.is_some_and(|l| prompts.len() >= l) {
            break;
        }
    }
    if prompts.is_empty() {
        bail!("{} holds no probe prompts", path.display());
    }
    Ok(prompts)
}

/// Renders a user message with the chat template (raw text when there is none).
pub fn render_prompt(prompt: &str, tok: &ModelTokenizer) -> Result<ProbePrompt> {
    let messages = [ChatMessage {
        role: "user".into(),
        content: prompt.to_string(),
    }];
    let text = tok
        .render_chat(&messages, true)?
        .unwrap_or_else(|| prompt.to_string());
    let ids = tok.encode(&text)?;
    if ids.is_empty() {
        bail!("probe prompt {prompt:?} tokenizes to nothing");
    }
    Ok(ProbePrompt {
        text,
        ids,
        pixel_values: Vec::new(),
    })
}

/// Probe settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeOptions {
    pub max_new_tokens: usize,
    /// Tokens shown in the histogram.
    pub top_k: usize,
    /// Prompts decoded together.
    pub batch_size: usize,
    /// Token classes whose mass is followed besides the numeric one.
    pub classes: Vec<TokenClass>,
    /// An answer that ends (a stop token) within this many tokens counts as short.
    pub short_answer_tokens: usize,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 16,
            top_k: 20,
            batch_size: 16,
            classes: Vec::new(),
            short_answer_tokens: 2,
        }
    }
}

/// How the answers end: the signature of a trained answer format (a terse or empty reply)
/// bleeding into prompts that ask for something else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct AnswerShape {
    /// Share of answers that end (a stop token) within `short_answer_tokens` tokens.
    pub ends_within: f64,
    /// The `k` of `ends_within`.
    pub short_answer_tokens: usize,
    /// Mean answer length in tokens, the stop token excluded (capped at `max_new_tokens`).
    pub mean_length: f64,
    /// Per prompt: the probability of ending the answer at once (stop tokens at the first step).
    pub first_stop_prob: MeanStd,
}

/// Mean and standard deviation over prompts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct MeanStd {
    pub mean: f64,
    pub std: f64,
}

impl MeanStd {
    /// Population statistics of `values` (zeros when empty).
    pub fn of(values: &[f64]) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        Self {
            mean,
            std: var.sqrt(),
        }
    }
}

/// What a model does when it answers a prompt set on its own (greedy).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GreedyStats {
    pub prompts: usize,
    /// Per prompt: mean over steps of the total numeric probability.
    pub numeric_mass: MeanStd,
    /// Per prompt: mean over steps of the largest numeric-token probability.
    pub max_numeric_prob: MeanStd,
    /// Share of prompts whose first generated token is numeric.
    pub first_token_numeric: f64,
    #[serde(skip)]
    pub continuations: Vec<Vec<u32>>,
    /// Per prompt, the numeric mass at each decoding step.
    #[serde(skip)]
    pub step_mass: Vec<Vec<f64>>,
    /// Mean over prompts of the first-step distribution.
    #[serde(skip)]
    pub first_step_mean: Vec<f32>,
    /// Per token class (the target task's answer vocabulary, recipe classes): per prompt, the
    /// mean over steps of the class's total probability.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub class_mass: BTreeMap<String, MeanStd>,
    /// How the answers end.
    #[serde(default)]
    pub shape: AnswerShape,
}

/// Greedy decoding of every prompt, recording numeric statistics at each step.
pub fn greedy_stats(
    decoder: &Decoder,
    prompts: &[ProbePrompt],
    numeric: &NumericVocab,
    stop_ids: &[u32],
    options: &ProbeOptions,
) -> Result<GreedyStats> {
    let device = decoder.device();
    let vocab = decoder.config().vocab_size;
    let weights = Tensor::new(numeric.weights(), device)?.reshape((vocab, 1))?;
    // One column per class, and one for the stop tokens.
    let classes = &options.classes;
    let mut columns: Vec<f32> = Vec::with_capacity(vocab * (classes.len() + 1));
    for id in 0..vocab as u32 {
        columns.extend(classes.iter().map(|c| f32::from(u8::from(c.contains(id)))));
        columns.push(f32::from(u8::from(stop_ids.contains(&id))));
    }
    let class_weights = Tensor::from_vec(columns, (vocab, classes.len() + 1), device)?;
    let mut class_sums: Vec<Vec<f64>> = vec![Vec::new(); classes.len()];
    let mut first_stop = Vec::new();
    let mut lengths = Vec::new();
    let mut per_prompt_mass = Vec::new();
    let mut per_prompt_max = Vec::new();
    let mut first_numeric = 0usize;
    let mut continuations = Vec::new();
    let mut step_mass = Vec::new();
    let mut first_sum = Tensor::zeros(vocab, DType::F32, device)?;
    for chunk in prompts.chunks(options.batch_size.max(1)) {
        let width = chunk.iter().map(|p| p.ids.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(chunk.len() * width);
        let mut valid = Vec::with_capacity(chunk.len());
        for p in chunk {
            let pad = width - p.ids.len();
            ids.extend(std::iter::repeat_n(0u32, pad));
            ids.extend_from_slice(&p.ids);
            valid.push([vec![false; pad], vec![true; p.ids.len()]].concat());
        }
        let mut cache =
            decoder.new_cache_with_capacity(chunk.len(), width + options.max_new_tokens);
        let input = Tensor::from_vec(ids, (chunk.len(), width), device)?;
        let pixels = stack_pixels(chunk, device)?;
        let mut logits =
            decoder.forward_cached(&input, Some(&valid), &mut cache, pixels.as_ref())?;
        let mut sums = vec![(0f64, 0f64, 0usize); chunk.len()];
        let mut class_rows = vec![vec![0f64; classes.len()]; chunk.len()];
        let mut done = vec![false; chunk.len()];
        let mut conts = vec![Vec::new(); chunk.len()];
        let mut masses = vec![Vec::new(); chunk.len()];
        for step in 0..options.max_new_tokens {
            let probs = candle_nn::ops::softmax_last_dim(&logits)?;
            if step == 0 {
                first_sum = (first_sum + probs.sum(0)?)?;
            }
            let mass = probs.matmul(&weights)?.squeeze(1)?.to_vec1::<f32>()?;
            let per_class = probs.matmul(&class_weights)?.to_vec2::<f32>()?;
            let max_numeric = probs
                .broadcast_mul(&weights.t()?)?
                .max(D::Minus1)?
                .to_vec1::<f32>()?;
            let next = probs.argmax(D::Minus1)?.to_vec1::<u32>()?;
            for row in 0..chunk.len() {
                if done[row] {
                    continue;
                }
                sums[row].0 += mass[row] as f64;
                masses[row].push(mass[row] as f64);
                for (c, total) in class_rows[row].iter_mut().enumerate() {
                    *total += per_class[row][c] as f64;
                }
                if step == 0 {
                    first_stop.push(per_class[row][classes.len()] as f64);
                }
                sums[row].1 += max_numeric[row] as f64;
                sums[row].2 += 1;
                if step == 0 && numeric.contains(next[row]) {
                    first_numeric += 1;
                }
                conts[row].push(next[row]);
                if stop_ids.contains(&next[row]) {
                    done[row] = true;
                }
            }
            if done.iter().all(|d| *d) || step + 1 == options.max_new_tokens {
                break;
            }
            let input = Tensor::from_vec(next, (chunk.len(), 1), device)?;
            logits = decoder.forward_cached(&input, None, &mut cache, None)?;
        }
        for (row, (mass, max, steps)) in sums.into_iter().enumerate() {
            per_prompt_mass.push(mass / steps.max(1) as f64);
            per_prompt_max.push(max / steps.max(1) as f64);
            for (c, total) in class_rows[row].iter().enumerate() {
                class_sums[c].push(total / steps.max(1) as f64);
            }
            let stopped = conts[row].last().is_some_and(|t| stop_ids.contains(t));
            lengths.push((conts[row].len() - usize::from(stopped), stopped));
            continuations.push(std::mem::take(&mut conts[row]));
            step_mass.push(std::mem::take(&mut masses[row]));
        }
    }
    let first_step_mean = (first_sum / prompts.len().max(1) as f64)?.to_vec1::<f32>()?;
    let k = options.short_answer_tokens;
    let shape = AnswerShape {
        ends_within: lengths
            .iter()
            .filter(|(n, stopped)| *stopped && *n < k.max(1))
            .count() as f64
            / lengths.len().max(1) as f64,
        short_answer_tokens: k,
        mean_length: lengths.iter().map(|(n, _)| *n as f64).sum::<f64>()
            / lengths.len().max(1) as f64,
        first_stop_prob: MeanStd::of(&first_stop),
    };
    let class_mass = classes
        .iter()
        .zip(&class_sums)
        .map(|(c, v)| (c.name.clone(), MeanStd::of(v)))
        .collect();
    Ok(GreedyStats {
        class_mass,
        shape,
        prompts: prompts.len(),
        numeric_mass: MeanStd::of(&per_prompt_mass),
        max_numeric_prob: MeanStd::of(&per_prompt_max),
        first_token_numeric: first_numeric as f64 / prompts.len().max(1) as f64,
        continuations,
        step_mass,
        first_step_mean,
    })
}

/// Teacher-forced comparison on the base model's continuations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Divergence {
    /// Per prompt: mean over steps of KL(base ‖ current), nats.
    pub kl: MeanStd,
    /// Per prompt: mean over steps of the current model's entropy, nats.
    pub entropy: MeanStd,
    /// Same for the base model, for reference.
    pub base_entropy: MeanStd,
}

/// Sequences `prompt ++ continuation` right-padded, with the flat indices of the positions
/// that predict each continuation token, grouped per prompt.
pub(crate) struct ForcedBatch {
    pub ids: Tensor,
    pub mask: Tensor,
    /// The prompts' images, in row order.
    pub pixels: Option<ImageBatch>,
    pub positions: Vec<Vec<u32>>,
}

pub(crate) fn forced_batch(
    prompts: &[&ProbePrompt],
    continuations: &[&Vec<u32>],
    device: &candle_core::Device,
) -> Result<ForcedBatch> {
    let seqs: Vec<Vec<u32>> = prompts
        .iter()
        .zip(continuations)
        .map(|(p, c)| [p.ids.clone(), (*c).clone()].concat())
        .collect();
    let width = seqs.iter().map(Vec::len).max().unwrap_or(1);
    let mut ids = Vec::with_capacity(seqs.len() * width);
    let mut mask = Vec::with_capacity(seqs.len() * width);
    let mut positions = Vec::new();
    for (row, (seq, (p, c))) in seqs
        .iter()
        .zip(prompts.iter().zip(continuations))
        .enumerate()
    {
        ids.extend_from_slice(seq);
        ids.extend(std::iter::repeat_n(0u32, width - seq.len()));
        mask.extend(std::iter::repeat_n(1u32, seq.len()));
        mask.extend(std::iter::repeat_n(0u32, width - seq.len()));
        let start = p.ids.len() - 1;
        positions.push(
            (0..c.len())
                .map(|k| (row * width + start + k) as u32)
                .collect(),
        );
    }
    Ok(ForcedBatch {
        pixels: stack_pixels(prompts.iter().copied(), device)?,
        ids: Tensor::from_vec(ids, (seqs.len(), width), device)?,
        mask: Tensor::from_vec(mask, (seqs.len(), width), device)?,
        positions,
    })
}

/// Log-probabilities `(N, V)` of `decoder` at the flat `positions` of a forced batch.
fn log_probs_at(decoder: &Decoder, batch: &ForcedBatch, flat: &[u32]) -> Result<Tensor> {
    let hidden = decoder.hidden_states(
        &Inputs::text(&batch.ids, Some(&batch.mask)).with_images(batch.pixels.as_ref()),
    )?;
    let (b, t, h) = hidden.dims3()?;
    let index = Tensor::new(flat, decoder.device())?;
    let picked = hidden.reshape((b * t, h))?.index_select(&index, 0)?;
    Ok(candle_nn::ops::log_softmax(
        &decoder.logits(&picked)?,
        D::Minus1,
    )?)
}

/// KL(base ‖ current) and entropies, teacher-forced on the base continuations.
pub fn divergence(
    base: &Decoder,
    current: &Decoder,
    prompts: &[ProbePrompt],
    base_continuations: &[Vec<u32>],
    options: &ProbeOptions,
) -> Result<Divergence> {
    let mut kl_values = Vec::new();
    let mut entropy_values = Vec::new();
    let mut base_entropy_values = Vec::new();
    let pairs: Vec<(&ProbePrompt, &Vec<u32>)> = prompts
        .iter()
        .zip(base_continuations)
        .filter(|(_, c)| !c.is_empty())
        .collect();
    for chunk in pairs.chunks(options.batch_size.max(1)) {
        let (ps, cs): (Vec<&ProbePrompt>, Vec<&Vec<u32>>) = chunk.iter().copied().unzip();
        let batch = forced_batch(&ps, &cs, current.device())?;
        let flat: Vec<u32> = batch.positions.iter().flatten().copied().collect();
        let lp_base = log_probs_at(base, &batch, &flat)?;
        let lp_now = log_probs_at(current, &batch, &flat)?;
        let p_base = lp_base.exp()?;
        let p_now = lp_now.exp()?;
        let kl = (&p_base * (&lp_base - &lp_now)?)?
            .sum(D::Minus1)?
            .to_vec1::<f32>()?;
        let entropy = (&p_now * &lp_now)?
            .sum(D::Minus1)?
            .neg()?
            .to_vec1::<f32>()?;
        let base_entropy = (&p_base * &lp_base)?
            .sum(D::Minus1)?
            .neg()?
            .to_vec1::<f32>()?;
        let mut offset = 0;
        for positions in &batch.positions {
            let n = positions.len();
            let mean =
                |v: &[f32]| v[offset..offset + n].iter().map(|x| *x as f64).sum::<f64>() / n as f64;
            kl_values.push(mean(&kl).max(0.0));
            entropy_values.push(mean(&entropy));
            base_entropy_values.push(mean(&base_entropy));
            offset += n;
        }
    }
    Ok(Divergence {
        kl: MeanStd::of(&kl_values),
        entropy: MeanStd::of(&entropy_values),
        base_entropy: MeanStd::of(&base_entropy_values),
    })
}

/// One bar pair of the token-distribution histogram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistogramEntry {
    pub id: u32,
    pub token: String,
    pub base: f32,
    pub now: f32,
    pub numeric: bool,
}

/// The `k` tokens most likely under either mean first-step distribution, base and now side by side.
pub fn histogram(
    base: &[f32],
    now: &[f32],
    k: usize,
    tok: &ModelTokenizer,
    numeric: &NumericVocab,
) -> Vec<HistogramEntry> {
    let mut ids: Vec<usize> = (0..base.len().min(now.len())).collect();
    ids.sort_by(|&a, &b| {
        base[b]
            .max(now[b])
            .total_cmp(&base[a].max(now[a]))
            .then(a.cmp(&b))
    });
    ids.truncate(k);
    ids.into_iter()
        .map(|id| HistogramEntry {
            id: id as u32,
            token: tok
                .tokenizer
                .decode(&[id as u32], false)
                .unwrap_or_else(|_| format!("<{id}>")),
            base: base[id],
            now: now[id],
            numeric: numeric.contains(id as u32),
        })
        .collect()
}

/// The base model's answers to a prompt set, computed once and reused at every probe.
#[derive(Debug, Clone)]
pub struct BaseReference {
    pub prompts: Vec<ProbePrompt>,
    pub stats: GreedyStats,
}

impl BaseReference {
    /// Decodes the prompts with the base model.
    pub fn compute(
        base: &Decoder,
        prompts: Vec<ProbePrompt>,
        numeric: &NumericVocab,
        stop_ids: &[u32],
        options: &ProbeOptions,
    ) -> Result<Self> {
        let stats = greedy_stats(base, &prompts, numeric, stop_ids, options)?;
        Ok(Self { prompts, stats })
    }
}

/// The probe's reading of one prompt set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetReport {
    pub now: GreedyStats,
    pub base: GreedyStats,
    pub divergence: Divergence,
    /// Numeric mass now minus base (mean over prompts).
    pub numeric_mass_delta: f64,
    pub histogram: Vec<HistogramEntry>,
}

/// Probes `current` on one prompt set against its base reference.
#[allow(clippy::too_many_arguments)]
pub fn probe_set(
    base: &Decoder,
    current: &Decoder,
    reference: &BaseReference,
    tok: &ModelTokenizer,
    numeric: &NumericVocab,
    options: &ProbeOptions,
) -> Result<SetReport> {
    let now = greedy_stats(current, &reference.prompts, numeric, &tok.stop_ids, options)?;
    let divergence = divergence(
        base,
        current,
        &reference.prompts,
        &reference.stats.continuations,
        options,
    )?;
    let histogram = histogram(
        &reference.stats.first_step_mean,
        &now.first_step_mean,
        options.top_k,
        tok,
        numeric,
    );
    Ok(SetReport {
        numeric_mass_delta: now.numeric_mass.mean - reference.stats.numeric_mass.mean,
        base: reference.stats.clone(),
        now,
        divergence,
        histogram,
    })
}
