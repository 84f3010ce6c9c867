//! `tunescope bench`: training-step time, throughput, memory and probe speed per recipe.
//!
//! Each recipe runs in a fresh child process of this binary (`bench MODEL --single RECIPE`),
//! because the peak resident set size is process-wide.

use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::bench::{self, BenchConfig, BenchReport, RecipeResult};

/// Marker in front of the child's JSON result line.
const RESULT_MARKER: &str = "TUNESCOPE_BENCH_RESULT ";

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Model directory or hub id (not needed with --gemm).
    #[arg(required_unless_present = "gemm")]
    model: Option<String>,
    /// Preset recipes to measure, comma separated (see recipes/).
    #[arg(long, default_value = "sa-proj,mlp-gate-up,mlp,full-llm")]
    recipes: String,
    /// Sequences per step.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Tokens per sequence (random ids; every position is labelled).
    #[arg(long, default_value_t = 128)]
    seq: usize,
    /// Timed steps (the median is reported).
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Untimed warm-up steps.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Compute dtype: f32 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Device: cpu, cuda:N or metal.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Seed of the synthetic batches.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Prompts decoded by the probe measurement, as one batch (0 skips it); 16 is the probe's
    /// own batch size.
    #[arg(long, default_value_t = 16)]
    probe_prompts: usize,
    /// Prompt length of the probe measurement.
    #[arg(long, default_value_t = 32)]
    probe_prompt_len: usize,
    /// Tokens generated per probe prompt.
    #[arg(long, default_value_t = 16)]
    probe_new_tokens: usize,
    /// Use the explicit op compositions instead of the fused CPU ops (for comparison).
    #[arg(long)]
    composed: bool,
    /// Threads of candle's element-wise thread pool in the measuring processes (sets
    /// CANDLE_NUM_THREADS for them; 1 runs element-wise ops on the calling thread). Default:
    /// inherited from the environment.
    #[arg(long)]
    pool_threads: Option<usize>,
    /// Recompute each layer's forward in the backward (the recipe's `activation_checkpointing`).
    #[arg(long)]
    activation_checkpointing: bool,
    /// Threading of the linear layers' GEMM: `pool` (blocks of the output on candle's pool,
    /// the default) or `backend` (the BLAS or gemm crate threads itself).
    #[arg(long, default_value = "pool")]
    gemm_threading: String,
    /// Measure the GEMM backend alone instead: GFLOP/s of the three linear products for
    /// SmolLM2-135M's weight shapes with batch × seq rows, median of --steps calls.
    #[arg(long)]
    gemm: bool,
    /// PyTorch's figures for the same shapes (the JSON `scripts/bench-pytorch.py` prints): the
    /// table adds PyTorch's tokens/s and the ratio per recipe.
    #[arg(long, value_name = "FILE")]
    pytorch: Option<std::path::PathBuf>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Measure one recipe in this process and print its result line (used by the parent).
    #[arg(long, hide = true)]
    single: Option<String>,
}

impl BenchArgs {
    fn config(&self) -> BenchConfig {
        BenchConfig {
            batch: self.batch,
            seq: self.seq,
            steps: self.steps,
            warmup: self.warmup,
            dtype: self.dtype.clone(),
            device: self.device.clone(),
            seed: self.seed,
            probe_prompts: self.probe_prompts,
            probe_prompt_len: self.probe_prompt_len,
            probe_new_tokens: self.probe_new_tokens,
            fused: !self.composed,
            activation_checkpointing: self.activation_checkpointing,
            pool_threads: self.pool_threads.or_else(|| {
                std::env::var("CANDLE_NUM_THREADS")
                    .ok()
                    .and_then(|v| v.parse().ok())
            }),
            gemm_threading: self.gemm_threading.clone(),
            ..BenchConfig::new(self.model.as_deref().unwrap_or_default())
        }
    }

    /// The command line of the child measuring `recipe`.
    fn child_args(&self, recipe: &str) -> Vec<String> {
        let mut args = vec![
            "bench".to_string(),
            self.model.clone().unwrap_or_default(),
            "--single".into(),
            recipe.into(),
        ];
        let pairs: [(&str, String); 11] = [
            ("--batch", self.batch.to_string()),
            ("--seq", self.seq.to_string()),
            ("--steps", self.steps.to_string()),
            ("--warmup", self.warmup.to_string()),
            ("--dtype", self.dtype.clone()),
            ("--device", self.device.clone()),
            ("--seed", self.seed.to_string()),
            ("--probe-prompts", self.probe_prompts.to_string()),
            ("--probe-prompt-len", self.probe_prompt_len.to_string()),
            ("--probe-new-tokens", self.probe_new_tokens.to_string()),
            ("--gemm-threading", self.gemm_threading.clone()),
        ];
        for (flag, value) in pairs {
            args.push(flag.into());
            args.push(value);
        }
        if self.composed {
            args.push("--composed".into());
        }
        if self.activation_checkpointing {
            args.push("--activation-checkpointing".into());
        }
        args
    }
}

pub fn run(args: BenchArgs) -> Result<()> {
    if crate::model::ops::gemm::Threading::parse(&args.gemm_threading).is_none() {
        bail!(
            "unknown --gemm-threading `{}`; expected pool or backend",
            args.gemm_threading
        );
    }
    if args.gemm {
        return run_gemm(&args);
    }
    let config = args.config();
    if let Some(recipe) = &args.single {
        // On a thread of its own, as `tunescope train` runs the trainer: the allocator serves
        // the steps as it serves a run.
        let result = std::thread::scope(|scope| {
            scope
                .spawn(|| bench::run_single(&config, recipe))
                .join()
                .map_err(|_| anyhow::anyhow!("the bench thread panicked"))
        })??;
        println!("{RESULT_MARKER}{}", serde_json::to_string(&result)?);
        return Ok(());
    }
    let recipes: Vec<&str> = args
        .recipes
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .collect();
    if recipes.is_empty() {
        bail!("--recipes names no recipe");
    }
    for recipe in &recipes {
        if crate::select::preset(recipe).is_none() {
            bail!(
                "unknown recipe `{recipe}`; expected one of {}",
                crate::select::PRESETS.join(", ")
            );
        }
    }
    // Read before measuring: a wrong file fails at once.
    let pytorch = args
        .pytorch
        .as_deref()
        .map(|path| bench::PytorchReference::read(path, args.batch, args.seq))
        .transpose()?;
    let exe = std::env::current_exe().context("cannot locate the tunescope binary")?;
    let mut results = Vec::new();
    for recipe in recipes {
        if !args.json {
            eprintln!("measuring {recipe} …");
        }
        let mut command = Command::new(&exe);
        if let Some(threads) = args.pool_threads {
            command.env("CANDLE_NUM_THREADS", threads.to_string());
        }
        let output = command
            .args(args.child_args(recipe))
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("cannot start {}", exe.display()))?;
        if !output.status.success() {
            bail!("measuring {recipe} failed ({})", output.status);
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix(RESULT_MARKER))
            .with_context(|| format!("the {recipe} measurement printed no result"))?;
        let result: RecipeResult = serde_json::from_str(line)
            .with_context(|| format!("the {recipe} measurement printed a bad result"))?;
        results.push(result);
    }
    let report = BenchReport {
        config,
        threads: bench::threads(),
        gemm_backend: crate::model::ops::gemm::backend_name().to_string(),
        results,
        pytorch,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", bench::render_table(&report));
    }
    Ok(())
}

/// `bench --gemm`: the GEMM micro-benchmark in this process.
fn run_gemm(args: &BenchArgs) -> Result<()> {
    let rows = args.batch * args.seq;
    let report = bench::gemm::run(rows, args.steps, &bench::gemm::SMOLLM2_SHAPES)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", bench::gemm::render(&report));
    }
    Ok(())
}
