//! The headless command-line front end.

mod bench;
mod demo;
mod eval;
mod export;
mod forecast;
mod generate;
mod import_gguf;
mod inspect;
mod interpolate;
mod make_assets;
mod make_shapes;
mod make_tiny;
mod merge;
mod plan;
mod probe;
mod progress;
mod quickstart;
mod runs;
mod sequence;
mod train;
mod ui;
mod watch;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// tunescope: selective fine-tuning with live drift monitoring.
#[derive(Debug, Parser)]
#[command(name = "tunescope", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands of the `tunescope` binary.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a model's module map: totals per kind and per layer, and the module tree.
    Inspect(inspect::InspectArgs),
    /// Write a small random model in Hugging Face layout (for tests and demos).
    MakeTiny(make_tiny::MakeTinyArgs),
    /// Generate text from a model (chat template applied), streaming tokens.
    Generate(generate::GenerateArgs),
    /// Numeric-token drift probe of a model against its base (held-out and target prompts).
    Probe(probe::ProbeArgs),
    /// Show what a recipe would train (counts per kind and layer) and a memory estimate.
    Plan(plan::PlanArgs),
    /// Train per a recipe, recording a run directory; or resume a stopped run.
    Train(train::TrainArgs),
    /// List run directories with state and last metrics.
    Runs(runs::RunsArgs),
    /// Open the terminal workbench on a recipe or model (default: the demo).
    Ui(ui::UiArgs),
    /// Open the workbench's dashboard on a run directory (running or finished).
    Attach(ui::AttachArgs),
    /// Offline tour: tiny model, sample data, plan and a short sa-proj run (the default command).
    Quickstart(quickstart::QuickstartArgs),
    /// Score a model on task files (lm-evaluation-harness conventions).
    Eval(eval::EvalArgs),
    /// Generate the synthetic world's data sets (training data, tasks, probe prompts) from a seed.
    MakeAssets(make_assets::MakeAssetsArgs),
    /// Generate the coloured-shapes picture world (PNG scenes, counting data, word-answer tasks) from a seed.
    MakeShapes(make_shapes::MakeShapesArgs),
    /// Write a distributed trainer's config (axolotl, llama-factory, trl) for the same run.
    Export(export::ExportArgs),
    /// Follow another trainer's checkpoint folder, probing and evaluating each new checkpoint into a run directory.
    Watch(watch::WatchArgs),
    /// Train the demo model from scratch on the synthetic world's mixture and score it per skill.
    PretrainDemo(demo::PretrainArgs),
    /// Run every demo recipe with the same seed and data and print the learning vs forgetting table.
    DemoReport(demo::ReportArgs),
    /// Convert a GGUF file (llama.cpp) into a Hugging Face model directory.
    ImportGguf(import_gguf::ImportGgufArgs),
    /// Measure training step time, throughput, memory and probe speed per recipe.
    Bench(bench::BenchArgs),
    /// Fit a forgetting forecast on a runs folder: early probe readings against the final Δ
    /// held-out, with its leave-one-run-out error next to predicting the mean
    Forecast(forecast::ForecastArgs),
    /// WiSE-FT along a finished run: probe and score the weights moved from the base (α 0) to
    /// the tuned ones (α 1), and write the chosen α out as a model.
    Interpolate(interpolate::InterpolateArgs),
    /// Fold a LoRA adapter into its base model, or interpolate two models: (1 − α)·A + α·B.
    Merge(merge::MergeArgs),
    /// Run a sequence of fine-tuning stages, each from the previous stage's final weights,
    /// scoring held-out and every stage's target after each; or print its per-stage table.
    Sequence(sequence::SequenceArgs),
}

/// Parses the command line and runs the chosen command.
pub fn run() -> Result<()> {
    let retained = crate::util::alloc::retain_freed_memory();
    let cli = Cli::parse();
    let interactive = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let ui = matches!(cli.command, Some(Command::Ui(_)) | Some(Command::Attach(_)))
        || (cli.command.is_none() && interactive);
    if !ui {
        init_logging();
        tracing::debug!(retained, "allocator keeps freed memory for reuse");
    }
    // Loads before the workbench opens draw bars too; inside it, it shows progress itself.
    progress::install();
    let Some(command) = cli.command else {
        if interactive {
            return ui::run(ui::UiArgs::default_args());
        }
        return quickstart::run(quickstart::QuickstartArgs {
            model: "models/tiny-qwen2".into(),
            runs: "runs".into(),
            steps: 30,
        });
    };
    match command {
        Command::Ui(args) => ui::run(args),
        Command::Attach(args) => ui::attach(args),
        Command::Quickstart(args) => quickstart::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::MakeTiny(args) => make_tiny::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Probe(args) => probe::run(args),
        Command::Train(args) => train::run(args),
        Command::Runs(args) => runs::run(args),
        Command::MakeAssets(args) => make_assets::run(args),
        Command::MakeShapes(args) => make_shapes::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Export(args) => export::run(args),
        Command::Watch(args) => watch::run(args),
        Command::PretrainDemo(args) => demo::pretrain(args),
        Command::DemoReport(args) => demo::report(args),
        Command::ImportGguf(args) => import_gguf::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Forecast(args) => forecast::run(args),
        Command::Interpolate(args) => interpolate::run(args),
        Command::Merge(args) => merge::run(args),
        Command::Sequence(args) => sequence::run(args),
    }
}

/// Logs go to stderr (never stdout), filtered by `RUST_LOG` (default: warnings and up).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
