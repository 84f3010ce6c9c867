//! Training-step benchmark: median step time (forward, backward, optimizer), throughput,
//! achieved GFLOP/s, peak memory and probe (greedy decoding) speed for a recipe on a model.
//!
//! One recipe is measured by [`run_single`] in the current process; `tunescope bench` runs each
//! recipe in a fresh child process so that the peak resident set size (`VmHWM`, which is
//! process-wide) belongs to that recipe alone.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::eval::numeric::NumericVocab;
use crate::eval::probe::{greedy_stats, ProbeOptions, ProbePrompt};
use crate::model::module_map::{ModuleMap, ParamKind};
use crate::model::{Decoder, Model, ModelConfig};
use crate::recipe::OptimizerSpec;
use crate::select::{self, Selection};
use crate::train::loss::summed_nll;
use crate::train::optimizer::AdamW;
use crate::util::device::{parse_device, parse_dtype};
use crate::util::rng::SeededRng;

/// What to measure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchConfig {
    /// Model directory or hub id.
    pub model: String,
    /// Sequences per step.
    pub batch: usize,
    /// Tokens per sequence (every position is labelled).
    pub seq: usize,
    /// Timed steps (the median is reported).
    pub steps: usize,
    /// Untimed steps first.
    pub warmup: usize,
    /// `f32`, `bf16` or `f16`.
    pub dtype: String,
    /// `cpu`, `cuda:N` or `metal`.
    pub device: String,
    /// Seed of the synthetic token ids.
    pub seed: u64,
    /// Learning rate of the AdamW updates (their size does not change the cost).
    pub lr: f64,
    /// Prompts decoded by the probe measurement (0 skips it).
    pub probe_prompts: usize,
    /// Prompt length of the probe measurement.
    pub probe_prompt_len: usize,
    /// Tokens generated per probe prompt.
    pub probe_new_tokens: usize,
    /// Whether the fused CPU ops are used (false: the explicit compositions).
    pub fused: bool,
    /// `CANDLE_NUM_THREADS` of the measuring processes (None: not set).
    #[serde(default)]
    pub pool_threads: Option<usize>,
}

impl BenchConfig {
    /// Defaults: batch 4 × seq 128, 10 timed steps after 3 warm-up steps, f32 on the CPU.
    pub fn new(model: &str) -> Self {
        Self {
            model: model.to_string(),
            batch: 4,
            seq: 128,
            steps: 10,
            warmup: 3,
            dtype: "f32".into(),
            device: "cpu".into(),
            seed: 0,
            lr: 1e-5,
            probe_prompts: 8,
            probe_prompt_len: 32,
            probe_new_tokens: 16,
            fused: true,
            pool_threads: None,
        }
    }
}

/// Floating-point work of one training step, in FLOPs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepFlops {
    /// `2·N·T`: every matmul weight (the lm_head included) once per token.
    pub forward: f64,
    /// `2·N_above·T`: activation gradients of the matmuls at or above the lowest trainable layer.
    pub backward_activations: f64,
    /// `2·N_trainable·T`: weight gradients of the trainable matmul weights.
    pub backward_weights: f64,
}

impl StepFlops {
    /// Everything together.
    pub fn total(&self) -> f64 {
        self.forward + self.backward_activations + self.backward_weights
    }
}

/// Matmul weight counts that determine the work of a step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MatmulParams {
    /// `N`: every matmul weight, the lm_head counted once (tied embeddings count as lm_head).
    pub total: usize,
    /// Matmul weights whose activation gradient backward computes.
    pub above_lowest: usize,
    /// Trainable matmul weights.
    pub trainable: usize,
}

impl MatmulParams {
    /// Counts for `selection` on a model with `config` and module map `map`.
    pub fn count(config: &ModelConfig, map: &ModuleMap, selection: &Selection) -> Self {
        let layer_linear = |kind: ParamKind| {
            matches!(
                kind,
                ParamKind::Q
                    | ParamKind::K
                    | ParamKind::V
                    | ParamKind::O
                    | ParamKind::Gate
                    | ParamKind::Up
                    | ParamKind::Down
            )
        };
        let lm_head = config.vocab_size * config.hidden_size;
        let weights = || {
            map.params
                .iter()
                .filter(|p| !p.is_bias && p.layer.is_some() && layer_linear(p.kind))
        };
        let total = weights().map(|p| p.numel).sum::<usize>() + lm_head;
        let has_lm_head = map.params.iter().any(|p| p.kind == ParamKind::LmHead);
        let tied = config.tie_word_embeddings || !has_lm_head;
        let mut reaches_bottom = false;
        let mut lm_head_trains = false;
        for p in map.params.iter().filter(|p| selection.contains(&p.name)) {
            match p.kind {
                ParamKind::Embed => {
                    reaches_bottom = true;
                    lm_head_trains |= tied && !p.is_bias;
                }
                ParamKind::LmHead => lm_head_trains |= !p.is_bias,
                ParamKind::Vision | ParamKind::Projector => reaches_bottom = true,
                _ => {}
            }
        }
        let above_lowest = if reaches_bottom {
            total
        } else {
            match selection.lowest_layer(map) {
                Some(lowest) => {
                    weights()
                        .filter(|p| p.layer.is_some_and(|l| l >= lowest))
                        .map(|p| p.numel)
                        .sum::<usize>()
                        + lm_head
                }
                None => lm_head,
            }
        };
        let trainable = weights()
            .filter(|p| selection.contains(&p.name))
            .map(|p| p.numel)
            .sum::<usize>()
            + if lm_head_trains { lm_head } else { 0 };
        Self {
            total,
            above_lowest,
            trainable,
        }
    }

    /// The FLOPs of one step over `tokens` tokens.
    pub fn flops(&self, tokens: usize) -> StepFlops {
        let t = tokens as f64;
        StepFlops {
            forward: 2.0 * self.total as f64 * t,
            backward_activations: 2.0 * self.above_lowest as f64 * t,
            backward_weights: 2.0 * self.trainable as f64 * t,
        }
    }
}

/// Median seconds of each phase of a step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct StepTimes {
    /// Forward and loss.
    pub forward: f64,
    /// `loss.backward()`.
    pub backward: f64,
    /// Gradients gathered in f32, global norm, AdamW update.
    pub optimizer: f64,
    /// Median of whole steps (not the sum of the phase medians).
    pub step: f64,
}

/// Probe (greedy decoding with a KV cache) throughput.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProbeSpeed {
    pub prompts: usize,
    pub prompt_len: usize,
    pub new_tokens: usize,
    pub seconds: f64,
    pub prompts_per_s: f64,
    /// Generated tokens over the whole probe pass (prefill and per-step statistics included).
    pub generated_tokens_per_s: f64,
    /// Prefill of the batch of prompts alone (one forward over every prompt token).
    #[serde(default)]
    pub prefill_seconds: f64,
    /// Generated tokens per second of the decoding steps alone (KV cache, batch of prompts).
    #[serde(default)]
    pub decode_tokens_per_s: f64,
}

/// Everything measured for one recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecipeResult {
    pub recipe: String,
    /// Trainable elements (all tensors, biases and norms included).
    pub trainable_params: usize,
    pub total_params: usize,
    pub matmul_params: MatmulParams,
    pub tokens_per_step: usize,
    pub times: StepTimes,
    pub tokens_per_s: f64,
    pub flops_per_step: StepFlops,
    pub gflops_per_s: f64,
    /// Peak resident set size of the process (`VmHWM`), bytes; None where unavailable.
    pub peak_rss_bytes: Option<u64>,
    pub probe: Option<ProbeSpeed>,
    /// Mean loss of the timed steps (a sanity check: finite, slowly falling).
    pub mean_loss: f64,
    pub fused_ops: bool,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    pub config: BenchConfig,
    pub threads: usize,
    pub results: Vec<RecipeResult>,
}

/// The selection a preset recipe name resolves to on `map`.
pub fn preset_selection(recipe: &str, map: &ModuleMap) -> Result<Selection> {
    let spec = select::preset(recipe).with_context(|| {
        format!(
            "unknown recipe `{recipe}`; expected one of {}",
            select::PRESETS.join(", ")
        )
    })?;
    select::resolve(&spec, map).with_context(|| format!("recipe `{recipe}` on this model"))
}

/// Peak resident set size of this process in bytes (`VmHWM` in `/proc/self/status`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_hwm(&status)
}

/// The `VmHWM:` line of a `/proc/PID/status` text, in bytes.
pub fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let mut parts = line["VmHWM:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    let scale = match parts.next().unwrap_or("kB") {
        "kB" | "KB" | "kb" => 1024,
        "mB" | "MB" => 1024 * 1024,
        "B" => 1,
        _ => return None,
    };
    Some(value * scale)
}

/// Median of `values` (0 when empty).
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Synthetic batch: random ids (avoiding the special tokens at the start of the vocabulary
/// where possible), all ones mask, every position labelled with the next id.
fn synthetic_batch(
    rng: &mut SeededRng,
    vocab: usize,
    batch: usize,
    seq: usize,
    device: &Device,
) -> Result<(Tensor, Tensor, Vec<Vec<i64>>)> {
    let low = if vocab > 64 { 16 } else { 0 };
    let rows: Vec<Vec<u32>> = (0..batch)
        .map(|_| {
            (0..seq)
                .map(|_| (low + rng.below(vocab - low)) as u32)
                .collect()
        })
        .collect();
    let labels = rows
        .iter()
        .map(|r| r.iter().map(|&id| id as i64).collect())
        .collect();
    let flat: Vec<u32> = rows.into_iter().flatten().collect();
    let ids = Tensor::from_vec(flat, (batch, seq), device)?;
    let mask = Tensor::ones((batch, seq), DType::U32, device)?;
    Ok((ids, mask, labels))
}

fn sync(device: &Device) -> Result<()> {
    device.synchronize()?;
    Ok(())
}

/// One training step as the trainer runs it; returns (loss, forward s, backward s, optimizer s).
fn train_step(
    decoder: &Decoder,
    optimizer: &mut AdamW,
    batch: &(Tensor, Tensor, Vec<Vec<i64>>),
    lr: f64,
) -> Result<(f64, f64, f64, f64)> {
    let device = decoder.device().clone();
    let (ids, mask, labels) = batch;
    let labelled = labels
        .iter()
        .map(|r| r.len().saturating_sub(1))
        .sum::<usize>();
    let start = Instant::now();
    let loss = (summed_nll(decoder, ids, mask, labels)? / labelled.max(1) as f64)?;
    let value = loss.to_scalar::<f32>()? as f64;
    sync(&device)?;
    let forward = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let store = loss.backward()?;
    sync(&device)?;
    let backward = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let mut grads: HashMap<String, Tensor> = HashMap::new();
    for (name, var) in decoder.vars() {
        if let Some(g) = store.get(var.as_tensor()) {
            grads.insert(name.clone(), g.to_dtype(DType::F32)?);
        }
    }
    drop(store);
    let mut norm = 0f64;
    for g in grads.values() {
        norm += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    }
    if !norm.is_finite() {
        bail!("gradient norm is {}", norm.sqrt());
    }
    optimizer.update(&grads, lr)?;
    sync(&device)?;
    let opt = start.elapsed().as_secs_f64();
    Ok((value, forward, backward, opt))
}

/// Greedy decoding speed on random prompts (no stop tokens, so every prompt runs to the end).
fn probe_speed(model: &Model, decoder: &Decoder, config: &BenchConfig) -> Result<ProbeSpeed> {
    let vocab = decoder.config().vocab_size;
    let mut rng = SeededRng::new(config.seed ^ 0x9e37_79b9);
    let low = if vocab > 64 { 16 } else { 0 };
    let prompts: Vec<ProbePrompt> = (0..config.probe_prompts)
        .map(|_| ProbePrompt {
            pixel_values: Vec::new(),
            text: String::new(),
            ids: (0..config.probe_prompt_len.max(1))
                .map(|_| (low + rng.below(vocab - low)) as u32)
                .collect(),
        })
        .collect();
    let numeric = NumericVocab::new(&model.tokenizer.tokenizer, vocab);
    let options = ProbeOptions {
        max_new_tokens: config.probe_new_tokens.max(1),
        top_k: 20,
        batch_size: config.probe_prompts.max(1),
        ..Default::default()
    };
    // One untimed prompt warms the caches and the allocator.
    greedy_stats(decoder, &prompts[..1], &numeric, &[], &options)?;
    let start = Instant::now();
    let stats = greedy_stats(decoder, &prompts, &numeric, &[], &options)?;
    sync(decoder.device())?;
    let seconds = start.elapsed().as_secs_f64();
    let generated: usize = stats.continuations.iter().map(Vec::len).sum();
    let (prefill_seconds, decode_tokens_per_s) =
        decode_speed(decoder, &prompts, options.max_new_tokens)?;
    Ok(ProbeSpeed {
        prompts: prompts.len(),
        prompt_len: config.probe_prompt_len,
        new_tokens: options.max_new_tokens,
        seconds,
        prompts_per_s: prompts.len() as f64 / seconds.max(1e-12),
        generated_tokens_per_s: generated as f64 / seconds.max(1e-12),
        prefill_seconds,
        decode_tokens_per_s,
    })
}

/// Times the prefill of `prompts` (equal lengths, one batch) and then `new_tokens - 1` greedy
/// decoding steps with the KV cache; returns (prefill seconds, decoded tokens per second).
fn decode_speed(
    decoder: &Decoder,
    prompts: &[ProbePrompt],
    new_tokens: usize,
) -> Result<(f64, f64)> {
    let device = decoder.device();
    let rows = prompts.len();
    let width = prompts.iter().map(|p| p.ids.len()).max().unwrap_or(0);
    let ids: Vec<u32> = prompts.iter().flat_map(|p| p.ids.clone()).collect();
    if rows == 0 || ids.len() != rows * width {
        bail!("decode_speed needs prompts of equal length");
    }
    let mut cache = decoder.new_cache_with_capacity(rows, width + new_tokens);
    let start = Instant::now();
    let input = Tensor::from_vec(ids, (rows, width), device)?;
    let mut logits = decoder.forward_cached(&input, None, &mut cache, None)?;
    let mut next = logits.argmax(candle_core::D::Minus1)?.to_vec1::<u32>()?;
    let prefill = start.elapsed().as_secs_f64();
    let steps = new_tokens.saturating_sub(1).max(1);
    let start = Instant::now();
    for _ in 0..steps {
        let input = Tensor::from_vec(next, (rows, 1), device)?;
        logits = decoder.forward_cached(&input, None, &mut cache, None)?;
        next = logits.argmax(candle_core::D::Minus1)?.to_vec1::<u32>()?;
    }
    let decode = start.elapsed().as_secs_f64();
    Ok((prefill, (steps * rows) as f64 / decode.max(1e-12)))
}

/// Measures one recipe in this process.
pub fn run_single(config: &BenchConfig, recipe: &str) -> Result<RecipeResult> {
    if config.batch == 0 || config.seq < 2 || config.steps == 0 {
        bail!("bench needs --batch ≥ 1, --seq ≥ 2 and --steps ≥ 1");
    }
    crate::model::ops::set_fused(config.fused);
    let device = parse_device(&config.device)?;
    let dtype = parse_dtype(&config.dtype)?;
    let model = Model::open(&config.model)?;
    let map = model.module_map();
    let selection = preset_selection(recipe, &map)?;
    let decoder = model.decoder(&selection.to_hash_set(), dtype, &device)?;
    let spec = OptimizerSpec {
        lr: config.lr,
        ..OptimizerSpec::default()
    };
    let mut optimizer = AdamW::new(decoder.vars(), &spec)?;
    let vocab = model.config.vocab_size;
    let mut rng = SeededRng::new(config.seed);
    let mut times = Vec::new();
    let mut losses = Vec::new();
    for step in 0..config.warmup + config.steps {
        let batch = synthetic_batch(&mut rng, vocab, config.batch, config.seq, &device)?;
        let start = Instant::now();
        let (loss, f, b, o) = train_step(&decoder, &mut optimizer, &batch, config.lr)?;
        let total = start.elapsed().as_secs_f64();
        if !loss.is_finite() {
            bail!("loss is {loss} at step {}", step + 1);
        }
        if step >= config.warmup {
            times.push((f, b, o, total));
            losses.push(loss);
        }
    }
    let pick =
        |f: fn(&(f64, f64, f64, f64)) -> f64| median(&times.iter().map(f).collect::<Vec<_>>());
    let times = StepTimes {
        forward: pick(|t| t.0),
        backward: pick(|t| t.1),
        optimizer: pick(|t| t.2),
        step: pick(|t| t.3),
    };
    let tokens = config.batch * config.seq;
    let matmul_params = MatmulParams::count(&model.config, &map, &selection);
    let flops = matmul_params.flops(tokens);
    let probe = if config.probe_prompts > 0 {
        Some(probe_speed(&model, &decoder, config)?)
    } else {
        None
    };
    Ok(RecipeResult {
        recipe: recipe.to_string(),
        trainable_params: selection.trainable_numel(&map),
        total_params: map.total(),
        matmul_params,
        tokens_per_step: tokens,
        tokens_per_s: tokens as f64 / times.step.max(1e-12),
        gflops_per_s: flops.total() / times.step.max(1e-12) / 1e9,
        flops_per_step: flops,
        times,
        peak_rss_bytes: peak_rss_bytes(),
        probe,
        mean_loss: losses.iter().sum::<f64>() / losses.len().max(1) as f64,
        fused_ops: config.fused,
    })
}

/// Human-readable count (`26.5M`).
fn count(n: usize) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.2}B", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.1}M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1}K", n / 1e3)
    } else {
        format!("{n}")
    }
}

/// A positive number with about three significant digits.
fn sig3(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else if x >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// Seconds with a unit that keeps three significant digits.
fn secs(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.2} s")
    } else {
        format!("{:.1} ms", s * 1e3)
    }
}

/// The report as a Markdown table plus a header line.
pub fn render_table(report: &BenchReport) -> String {
    let c = &report.config;
    let mut out = format!(
        "model {} · batch {} × seq {} · {} · {} · {} threads{} · median of {} steps after {} warm-up · {} ops\n\n",
        c.model,
        c.batch,
        c.seq,
        c.dtype,
        c.device,
        report.threads,
        c.pool_threads
            .map_or(String::new(), |n| format!(" (CANDLE_NUM_THREADS={n})")),
        c.steps,
        c.warmup,
        if c.fused { "fused" } else { "composed" }
    );
    out.push_str(
        "| recipe | trainable | step | forward | backward | optimizer | tokens/s | GFLOP/step | GFLOP/s | peak RSS | probe prompts/s | probe tok/s | decode tok/s |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in &report.results {
        let rss = r.peak_rss_bytes.map_or("n/a".to_string(), |b| {
            format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
        });
        let (pps, tps, dps) = r
            .probe
            .map_or(("n/a".into(), "n/a".into(), "n/a".into()), |p| {
                (
                    format!("{:.2}", p.prompts_per_s),
                    format!("{:.1}", p.generated_tokens_per_s),
                    format!("{:.1}", p.decode_tokens_per_s),
                )
            });
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} |\n",
            r.recipe,
            count(r.trainable_params),
            secs(r.times.step),
            secs(r.times.forward),
            secs(r.times.backward),
            secs(r.times.optimizer),
            r.tokens_per_s,
            sig3(r.flops_per_step.total() / 1e9),
            sig3(r.gflops_per_s),
            rss,
            pps,
            tps,
            dps
        ));
    }
    out
}

/// Threads candle's CPU kernels use.
pub fn threads() -> usize {
    candle_core::utils::get_num_threads()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_hwm_is_parsed_in_bytes() {
        let status = "Name:\ttunescope\nVmPeak:\t  100 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 1 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(2048 * 1024));
        assert_eq!(parse_vm_hwm("Name: x\n"), None);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }
}
