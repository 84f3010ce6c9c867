//! One watch session: the base model and its cached results, the run directory, and which
//! steps are already recorded there.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device};

use super::checkpoint::{CheckpointDir, CompleteCheckpoint};
use crate::model::{Decoder, Model, ModelConfig, WeightStore};
use crate::recipe::Recipe;
use crate::run::record::WatchRecord;
use crate::run::{Record, RunDir, RunLock, RunState, Status};
use crate::train::monitor::{check_guard, Monitor, MonitorReport};
use crate::util::device::{parse_device, parse_dtype};

/// What the evaluation of one step found.
#[derive(Debug, Clone, PartialEq)]
pub struct StepResult {
    pub step: usize,
    /// The checkpoint folder, or the base model's name at step 0.
    pub checkpoint: String,
    pub report: MonitorReport,
    /// A drift-guard bound the step crossed.
    pub guard: Option<String>,
}

/// The base model, the monitor and the run directory of a watch.
pub struct Session {
    recipe: Recipe,
    watched: PathBuf,
    run: RunDir,
    base_config: ModelConfig,
    monitor: Monitor,
    /// The base model as a "current" model for step 0 (shares the base's tensors); dropped once
    /// step 0 is recorded.
    base_current: Option<Decoder>,
    dtype: DType,
    device: Device,
    recorded: BTreeSet<usize>,
    status: Status,
    /// The run directory's writer lock, held while the session lives.
    _lock: RunLock,
}

/// Steps with a `watch` record in the run directory's metrics.
pub fn recorded_steps(run: &RunDir) -> Result<BTreeSet<usize>> {
    Ok(run
        .read_records()?
        .iter()
        .filter_map(|r| match r {
            Record::Watch(w) => Some(w.step),
            _ => None,
        })
        .collect())
}

/// Drops the probe, layer-drift, eval and guard records of steps without a `watch` record: a
/// watch that died while evaluating a step left them, and the step is evaluated again, so each
/// step's records appear once.
fn drop_unfinished_steps(run: &RunDir, recorded: &BTreeSet<usize>) -> Result<usize> {
    run.retain_records(|_, record| match record {
        Some(
            Record::Probe(_)
            | Record::LayerDrift { .. }
            | Record::LayerDriftPooled { .. }
            | Record::Eval(_)
            | Record::Guard { .. },
        ) => record
            .and_then(Record::step)
            .is_some_and(|step| recorded.contains(&step)),
        _ => true,
    })
}

impl Session {
    /// Loads the base model (recipe.model), computes its probe and evaluation references, and
    /// opens the run directory (a new one under `runs_root`, or `run_dir` when given).
    pub fn open(
        recipe: &Recipe,
        watched: &Path,
        run_dir: Option<&Path>,
        runs_root: &Path,
    ) -> Result<Self> {
        ensure!(
            recipe.probe.is_some() || recipe.eval.is_some(),
            "the recipe has neither a `probe` nor an `eval` section, so there is nothing to watch; add them \
             (e.g. --set probe.heldout=assets/probe/heldout.jsonl --set eval.tasks=[assets/tasks/counting.yaml])"
        );
        ensure!(
            watched.is_dir(),
            "{} is not a directory (the folder where the other trainer writes checkpoint-N/)",
            watched.display()
        );
        let watched = std::fs::canonicalize(watched)
            .with_context(|| format!("cannot resolve {}", watched.display()))?;
        let device = parse_device(&recipe.device)?;
        let dtype = parse_dtype(&recipe.dtype)?;
        let spec = recipe.model_spec()?;
        let model = Model::open(&spec).context("opening the base model (recipe.model)")?;
        let base = model.decoder(&HashSet::new(), dtype, &device)?;
        let base_current = base.frozen_snapshot()?;
        let monitor = Monitor::new(recipe, base, &model.tokenizer)?
            .context("the recipe asks for no probe and no evaluation")?;

        let run = match run_dir {
            Some(dir) => {
                refuse_inside(&watched, dir)?;
                RunDir::open_or_init(dir)?
            }
            None => {
                refuse_inside(&watched, runs_root)?;
                RunDir::create(runs_root, &format!("watch-{}", recipe.name))?
            }
        };
        let lock = run.lock()?;
        run.write_recipe(recipe)?;
        let recorded = recorded_steps(&run)?;
        let dropped = drop_unfinished_steps(&run, &recorded)?;
        if dropped > 0 {
            tracing::info!(
                "removed {dropped} records of a step whose evaluation was interrupted; it is evaluated again"
            );
        }
        let mut status = Status::new(&recipe.name, &spec, 0);
        if let Ok(previous) = run.read_status() {
            status.started_at = previous.started_at;
        }
        status.state = RunState::Running;
        status.step = recorded.iter().max().copied().unwrap_or(0);
        status.total_steps = status.step;
        run.write_status(&status)?;
        run.append(&Record::WatchStart {
            step: status.step,
            watched: watched.clone(),
            recorded: recorded.len(),
            pid: std::process::id(),
        })?;
        Ok(Self {
            recipe: recipe.clone(),
            watched,
            run,
            base_config: model.config.clone(),
            monitor,
            base_current: Some(base_current),
            dtype,
            device,
            recorded,
            status,
            _lock: lock,
        })
    }

    pub fn run(&self) -> &RunDir {
        &self.run
    }

    /// The watched directory (canonical).
    pub fn watched(&self) -> &Path {
        &self.watched
    }

    /// Whether `step` already has a `watch` record.
    pub fn is_recorded(&self, step: usize) -> bool {
        self.recorded.contains(&step)
    }

    /// Notes the newest step seen in the watched directory (the status's total).
    pub fn saw_step(&mut self, step: usize) -> Result<()> {
        if step > self.status.total_steps {
            self.status.total_steps = step;
            self.status.touch();
            self.run.write_status(&self.status)?;
        }
        Ok(())
    }

    /// Probes and evaluates the base model as step 0, unless already recorded.
    pub fn record_base(&mut self) -> Result<Option<StepResult>> {
        let current = self.base_current.take();
        if self.is_recorded(0) {
            return Ok(None);
        }
        let current = match current {
            Some(c) => c,
            None => return Ok(None),
        };
        let name = self.status.model.clone();
        self.record(0, &current, name, None).map(Some)
    }

    /// Probes and evaluates a complete checkpoint and records it.
    pub fn record_checkpoint(
        &mut self,
        checkpoint: &CheckpointDir,
        files: &CompleteCheckpoint,
    ) -> Result<StepResult> {
        let current = self
            .load(files)
            .with_context(|| format!("loading {}", checkpoint.path.display()))?;
        self.record(
            checkpoint.step,
            &current,
            checkpoint.path.display().to_string(),
            Some(files.weights.clone()),
        )
    }

    /// Records a checkpoint that will not be evaluated (incomplete while later ones are done).
    pub fn record_skip(&mut self, checkpoint: &CheckpointDir, reason: &str) -> Result<()> {
        self.run.append(&Record::Watch(WatchRecord {
            step: checkpoint.step,
            checkpoint: checkpoint.path.display().to_string(),
            skipped: true,
            reason: Some(reason.to_string()),
            ..WatchRecord::default()
        }))?;
        self.recorded.insert(checkpoint.step);
        Ok(())
    }

    /// Marks the run stopped (or failed, with the error).
    pub fn finish(&mut self, error: Option<String>) -> Result<()> {
        self.status.state = if error.is_some() {
            RunState::Failed
        } else {
            RunState::Stopped
        };
        self.status.last_error = error.clone().or(self.status.last_error.take());
        self.status.touch();
        self.run.write_status(&self.status)?;
        let step = self.status.step;
        self.run.append(&match error {
            Some(reason) => Record::Failed { step, reason },
            None => Record::Stopped { step },
        })
    }

    /// A checkpoint's weights as a frozen decoder, read-only, checked against the base model.
    fn load(&self, files: &CompleteCheckpoint) -> Result<Decoder> {
        let config = ModelConfig::from_file(&files.config)?;
        let b = &self.base_config;
        ensure!(
            config.vocab_size == b.vocab_size
                && config.hidden_size == b.hidden_size
                && config.num_hidden_layers == b.num_hidden_layers,
            "the checkpoint's config (vocab {}, hidden {}, {} layers) does not match the base model's \
             (vocab {}, hidden {}, {} layers)",
            config.vocab_size,
            config.hidden_size,
            config.num_hidden_layers,
            b.vocab_size,
            b.hidden_size,
            b.num_hidden_layers
        );
        let store = WeightStore::open(&files.weights)?;
        Decoder::load(&config, &store, &HashSet::new(), self.dtype, &self.device)
    }

    fn record(
        &mut self,
        step: usize,
        current: &Decoder,
        checkpoint: String,
        weights: Option<Vec<PathBuf>>,
    ) -> Result<StepResult> {
        let started = Instant::now();
        let report = self.monitor.run(step, step, current, &self.run)?;
        let trip = check_guard(&self.recipe, &report);
        if let Some(trip) = &trip {
            self.run.append(&Record::Guard {
                step,
                reason: trip.reason.clone(),
                action: trip.action,
                note: Some("watching another trainer: nothing is stopped".into()),
            })?;
            self.status.last_error = Some(format!("drift guard at step {step}: {}", trip.reason));
        }
        self.run.append(&Record::Watch(WatchRecord {
            step,
            checkpoint: checkpoint.clone(),
            base: Some(weights.is_none()),
            weights,
            heldout_numeric_mass_delta: report.heldout_numeric_mass_delta,
            delta_learning: report.delta_learning,
            delta_heldout: report.delta_heldout,
            seconds: Some(started.elapsed().as_secs_f64()),
            ..WatchRecord::default()
        }))?;
        self.recorded.insert(step);
        self.status.step = self.status.step.max(step);
        self.status.total_steps = self.status.total_steps.max(step);
        self.status.touch();
        self.run.write_status(&self.status)?;
        Ok(StepResult {
            step,
            checkpoint,
            report,
            guard: trip.map(|t| t.reason),
        })
    }
}

/// Refuses a run directory inside the watched directory (nothing is ever written there).
fn refuse_inside(watched: &Path, target: &Path) -> Result<()> {
    let absolute = if target.is_absolute() {
        target.to_path_buf()
    } else {
        std::env::current_dir()?.join(target)
    };
    // Resolve the longest existing ancestor, so a directory about to be created is checked too.
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => break,
        }
    }
    let mut resolved = std::fs::canonicalize(existing).unwrap_or_else(|_| existing.to_path_buf());
    for name in rest.into_iter().rev() {
        resolved.push(name);
    }
    ensure!(
        !resolved.starts_with(watched),
        "the run directory {} would be inside the watched directory {}; watch never writes there, so \
         choose another --runs or --run-dir",
        resolved.display(),
        watched.display()
    );
    Ok(())
}
