//! Training-step benchmark: median step time (forward, backward, optimizer), throughput,
//! achieved GFLOP/s, peak memory and probe (greedy decoding) speed for a recipe on a model.
//!
//! One recipe is measured by [`run_single`] in the current process; `tunescope bench` runs each
//! recipe in a fresh child process so that the peak resident set size (`VmHWM`, which is
//! process-wide) belongs to that recipe alone.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

mod flops;
pub mod gemm;
pub mod pytorch;
mod system;
mod table;

pub use flops::{MatmulParams, StepFlops};
pub use pytorch::{PytorchRecipe, PytorchReference};
pub use system::{current_rss_bytes, median, parse_vm_hwm, peak_rss_bytes, threads};
pub use table::render_table;

use crate::data::Batch;
use crate::eval::numeric::NumericVocab;
use crate::eval::probe::{greedy_stats, ProbeOptions, ProbePrompt};
use crate::model::module_map::ModuleMap;
use crate::model::{Decoder, Model};
use crate::recipe::OptimizerSpec;
use crate::select::{self, Selection};
use crate::train::optimizer::AdamW;
use crate::train::step::{optimizer_step, StepOptions, StepOutcome};
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
    /// Recompute each layer in the backward (the recipe's `activation_checkpointing`).
    #[serde(default)]
    pub activation_checkpointing: bool,
    /// Threading of the linear layers' GEMM: `pool` or `backend` (see `ops::gemm::Threading`).
    #[serde(default = "default_gemm_threading")]
    pub gemm_threading: String,
}

fn default_gemm_threading() -> String {
    "pool".into()
}

impl BenchConfig {
    /// Defaults: batch 4 × seq 128, 10 timed steps after 3 warm-up steps, f32 on the CPU, 16 probe prompts.
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
            probe_prompts: 16,
            probe_prompt_len: 32,
            probe_new_tokens: 16,
            fused: true,
            pool_threads: None,
            activation_checkpointing: false,
            gemm_threading: default_gemm_threading(),
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
    /// Resident set size just before the first step (model loaded, optimizer made).
    #[serde(default)]
    pub rss_before_steps_bytes: Option<u64>,
    /// Whether layers were recomputed in the backward.
    #[serde(default)]
    pub activation_checkpointing: bool,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    pub config: BenchConfig,
    pub threads: usize,
    /// The linear layers' GEMM backend compiled in (`ops::gemm::backend_name`).
    #[serde(default)]
    pub gemm_backend: String,
    pub results: Vec<RecipeResult>,
    /// PyTorch's figures for the same shapes (`--pytorch`), for the ratio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pytorch: Option<PytorchReference>,
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

/// Synthetic batch: random ids (avoiding the special tokens at the start of the vocabulary
/// where possible), all ones mask, every position labelled with the next id.
fn synthetic_batch(rng: &mut SeededRng, vocab: usize, batch: usize, seq: usize) -> Batch {
    let low = if vocab > 64 { 16 } else { 0 };
    let rows: Vec<Vec<u32>> = (0..batch)
        .map(|_| {
            (0..seq)
                .map(|_| (low + rng.below(vocab - low)) as u32)
                .collect()
        })
        .collect();
    Batch {
        labels: rows
            .iter()
            .map(|r| r.iter().map(|&id| id as i64).collect())
            .collect(),
        attention_mask: vec![vec![1; seq]; batch],
        input_ids: rows,
        pixel_values: Vec::new(),
    }
}

fn sync(device: &Device) -> Result<()> {
    device.synchronize()?;
    Ok(())
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
    let threading = crate::model::ops::gemm::Threading::parse(&config.gemm_threading)
        .with_context(|| {
            format!(
                "unknown GEMM threading `{}`; expected pool or backend",
                config.gemm_threading
            )
        })?;
    crate::model::ops::gemm::set_threading(threading);
    let device = parse_device(&config.device)?;
    let dtype = parse_dtype(&config.dtype)?;
    let model = Model::open(&config.model)?;
    let map = model.module_map();
    let selection = preset_selection(recipe, &map)?;
    let mut decoder = model.decoder(&selection.to_hash_set(), dtype, &device)?;
    decoder.set_activation_checkpointing(config.activation_checkpointing);
    let spec = OptimizerSpec {
        lr: config.lr,
        ..OptimizerSpec::default()
    };
    let mut optimizer = AdamW::new(decoder.vars(), &spec)?;
    // The trainer's step, timed phase by phase.
    let options = StepOptions {
        max_grad_norm: spec.max_grad_norm,
        timed: true,
        check_grads: false,
    };
    let vocab = model.config.vocab_size;
    let mut rng = SeededRng::new(config.seed);
    let mut times = Vec::new();
    let mut losses = Vec::new();
    let rss_before_steps_bytes = current_rss_bytes();
    for step in 0..config.warmup + config.steps {
        let batch = synthetic_batch(&mut rng, vocab, config.batch, config.seq);
        let start = Instant::now();
        let report = match optimizer_step(
            &decoder,
            &mut optimizer,
            std::slice::from_ref(&batch),
            config.lr,
            options,
        )? {
            StepOutcome::Updated(report) => report,
            StepOutcome::NotFinite(what) => bail!("{what} at step {}", step + 1),
        };
        let total = start.elapsed().as_secs_f64();
        if step >= config.warmup {
            let t = report.times;
            times.push((t.forward, t.backward, t.update, total));
            losses.push(report.loss);
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
        rss_before_steps_bytes,
        activation_checkpointing: config.activation_checkpointing,
    })
}
