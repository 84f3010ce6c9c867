//! The training loop.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::Tensor;

use super::events::{StepMetrics, TrainEvent};
use super::monitor::{check_guard, Monitor};
use super::optimizer::AdamW;
use super::prepare::{prepare, Prepared};
use super::regularize::{Lwf, TeacherMemory};
use super::schedule::LrSchedule;
use super::step::{regularized_step, StepOptions, StepOutcome};
use crate::data;
use crate::model::lora::{self, LoraPlan};
use crate::model::{Decoder, Model};
use crate::recipe::{GuardAction, Recipe};
use crate::run::{CheckpointState, Record, RunDir, RunLock, RunState, Status};

/// Lets a front end ask a run to stop after the current step (it checkpoints first).
#[derive(Debug, Clone, Default)]
pub struct TrainControl {
    pub stop: Arc<AtomicBool>,
}

impl TrainControl {
    /// Asks the run to stop gracefully.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOutcome {
    pub state: RunState,
    pub step: usize,
    pub run_dir: PathBuf,
    /// The failure reason for a failed run.
    pub reason: Option<String>,
}

/// Runs training on a new thread; events arrive on the returned channel.
pub fn spawn_training(
    recipe: Recipe,
    run: RunDir,
    resume: bool,
    control: TrainControl,
) -> (
    std::thread::JoinHandle<Result<TrainOutcome>>,
    mpsc::Receiver<TrainEvent>,
) {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        run_training(&recipe, &run, resume, &control, &mut |event| {
            let _ = tx.send(event.clone());
        })
    });
    (handle, rx)
}

/// Trains a prepared recipe into its new run directory (see [`Prepared::create_run`]) on a new
/// thread; events arrive on the returned channel. The lock is released when training ends.
pub fn spawn_prepared(
    prepared: Prepared,
    run: RunDir,
    lock: RunLock,
    control: TrainControl,
) -> (
    std::thread::JoinHandle<Result<TrainOutcome>>,
    mpsc::Receiver<TrainEvent>,
) {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        run_prepared(prepared, &run, lock, &control, &mut |event| {
            let _ = tx.send(event.clone());
        })
    });
    (handle, rx)
}

/// Trains per `recipe`, recording into `run`; with `resume`, continues from the newest checkpoint
/// (records of steps after it are removed from `metrics.jsonl` first: the run replays them).
/// Takes the run's lock first and fails, writing nothing, when another live process holds it.
/// Setup errors are recorded in `status.json` and returned; a failed or stopped run is an `Ok`
/// outcome with that state.
pub fn run_training(
    recipe: &Recipe,
    run: &RunDir,
    resume: bool,
    control: &TrainControl,
    on_event: &mut dyn FnMut(&TrainEvent),
) -> Result<TrainOutcome> {
    let _lock = run.lock()?;
    train_locked(recipe, run, resume, None, control, on_event)
}

/// Trains a prepared recipe into a new run directory whose lock `lock` is.
pub fn run_prepared(
    prepared: Prepared,
    run: &RunDir,
    lock: RunLock,
    control: &TrainControl,
    on_event: &mut dyn FnMut(&TrainEvent),
) -> Result<TrainOutcome> {
    let recipe = prepared.recipe.clone();
    let result = train_locked(&recipe, run, false, Some(prepared), control, on_event);
    drop(lock);
    result
}

fn train_locked(
    recipe: &Recipe,
    run: &RunDir,
    resume: bool,
    prepared: Option<Prepared>,
    control: &TrainControl,
    on_event: &mut dyn FnMut(&TrainEvent),
) -> Result<TrainOutcome> {
    // The lock is held: temporaries here were left by a writer that was killed.
    let removed = run.remove_stale_temporaries();
    if removed > 0 {
        tracing::info!(
            "removed {removed} temporaries left in {} by a killed writer",
            run.path().display()
        );
    }
    let mut status = match run.read_status() {
        Ok(status) if resume => status,
        _ => Status::new(&recipe.name, recipe.model.as_deref().unwrap_or(""), 0),
    };
    status.pid = Some(std::process::id());
    let result = prepared
        .map_or_else(|| prepare(recipe), Ok)
        .and_then(|prepared| Session::new(prepared, run, resume, &mut status))
        .and_then(|mut session| session.train(control, &mut status, on_event));
    if let Err(error) = &result {
        status.state = RunState::Failed;
        status.last_error = Some(format!("{error:#}"));
        status.touch();
        let _ = run.write_status(&status);
        let _ = run.append(&Record::Failed {
            step: status.step,
            reason: format!("{error:#}"),
        });
    }
    result
}

/// Everything a run needs, loaded.
struct Session<'a> {
    recipe: Recipe,
    run: &'a RunDir,
    model: Model,
    decoder: Decoder,
    data: data::TokenizedData,
    optimizer: AdamW,
    schedule: LrSchedule,
    batches_per_epoch: usize,
    total_steps: usize,
    start_step: usize,
    micro_batches: usize,
    losses: Vec<f64>,
    pad_id: u32,
    trainable: usize,
    total_params: usize,
    monitor: Option<Monitor>,
    /// The adapters trained instead of the selection, for a LoRA run.
    lora: Option<LoraPlan>,
    /// The LwF term, when the recipe has `regularize`.
    regularizer: Option<Lwf>,
}

impl<'a> Session<'a> {
    fn new(prepared: Prepared, run: &'a RunDir, resume: bool, status: &mut Status) -> Result<Self> {
        let Prepared {
            recipe,
            model,
            decoder,
            data,
            monitor,
            trainable,
            total_params,
            lr_scales,
            lora,
        } = prepared;
        let batches_per_epoch = data::batches_per_epoch(data.examples.len(), recipe.batch_size);
        let steps_per_epoch = batches_per_epoch.div_ceil(recipe.grad_accum).max(1);
        let total_steps = recipe.max_steps.unwrap_or(recipe.epochs * steps_per_epoch);
        // The base model for probes, evaluation and the LwF teacher: the weights before any
        // update and before a checkpoint is restored, i.e. the model at the start of the stage
        // (shared tensors for frozen parameters, one copy of the trainable ones).
        let base = match (&monitor, &recipe.regularize) {
            (None, None) => None,
            _ => Some(decoder.frozen_snapshot()?),
        };
        let regularizer = match (&recipe.regularize, &base) {
            (Some(spec), Some(base)) => {
                // A snapshot of an all-frozen model shares every tensor: the teacher and the
                // monitor hold one copy between them.
                let teacher = base.frozen_snapshot()?;
                let memory = TeacherMemory::measure(&teacher, &decoder);
                tracing::info!(
                    "LwF teacher (λ {}, T {}): {} of its own (the trainable tensors); a full copy would take {}",
                    spec.lambda,
                    spec.temperature,
                    crate::util::format::human_bytes(memory.copied),
                    crate::util::format::human_bytes(memory.full_copy)
                );
                Some(Lwf::new(spec, teacher))
            }
            _ => None,
        };
        let monitor = match (monitor, base) {
            (Some(inputs), Some(base)) => {
                Some(Monitor::from_inputs(inputs, base, &model.tokenizer)?)
            }
            _ => None,
        };
        let mut optimizer = AdamW::new(decoder.vars(), &recipe.optimizer)?;
        optimizer.set_lr_scales(&lr_scales)?;
        let schedule = LrSchedule::new(&recipe.schedule, recipe.learning_rate(), total_steps);
        let checkpoint = if resume {
            run.latest_checkpoint()
        } else {
            None
        };
        if resume && checkpoint.is_none() {
            // Killed before its first checkpoint: the run starts over, and the records of the
            // attempt go so that every step appears once.
            let dropped = run.retain_records(|step, _| step.is_none())?;
            tracing::info!(
                "{} has no checkpoint yet: training starts again from step 0 ({dropped} records of the earlier attempt removed)",
                run.path().display()
            );
        }
        let (start_step, micro_batches, losses) = if let Some(step) = checkpoint {
            let ckpt = run.load_checkpoint(step, decoder.device())?;
            for (name, var) in decoder.vars() {
                let value = ckpt.trained.get(name).with_context(|| {
                    format!("checkpoint step-{step} lacks trained tensor {name}")
                })?;
                var.set(&value.to_dtype(var.dtype())?)?;
            }
            optimizer.load_state(&ckpt.optimizer, ckpt.state.step)?;
            // Steps after the checkpoint are trained again: their old records go, so that
            // every step appears once in metrics.jsonl.
            let dropped = run.truncate_after(ckpt.state.step)?;
            if dropped > 0 {
                tracing::info!(
                    "removed {dropped} records of steps after checkpoint step-{} from {}",
                    ckpt.state.step,
                    run.metrics_path().display()
                );
            }
            (ckpt.state.step, ckpt.state.micro_batches, ckpt.state.losses)
        } else {
            (0, 0, Vec::new())
        };
        status.total_steps = total_steps;
        status.step = start_step;
        status.model = recipe.model_spec()?;
        let pad_id = model.tokenizer.pad_id();
        Ok(Self {
            recipe,
            run,
            trainable,
            total_params,
            model,
            decoder,
            data,
            optimizer,
            schedule,
            batches_per_epoch,
            total_steps,
            start_step,
            micro_batches,
            losses,
            pad_id,
            monitor,
            lora,
            regularizer,
        })
    }

    /// Writes an event's record to `metrics.jsonl`, then hands the event to the front end: the
    /// one path by which the trainer's records and events are produced.
    fn emit(&self, event: TrainEvent, on_event: &mut dyn FnMut(&TrainEvent)) -> Result<()> {
        self.write_record(&event)?;
        on_event(&event);
        Ok(())
    }

    /// Appends the record of `event`, if it has one.
    fn write_record(&self, event: &TrainEvent) -> Result<()> {
        match event.record() {
            Some(record) => self.run.append(&record),
            None => Ok(()),
        }
    }

    fn train(
        &mut self,
        control: &TrainControl,
        status: &mut Status,
        on_event: &mut dyn FnMut(&TrainEvent),
    ) -> Result<TrainOutcome> {
        let run = self.run;
        status.state = RunState::Running;
        status.last_checkpoint = run.latest_checkpoint();
        status.touch();
        run.write_status(status)?;
        let started = TrainEvent::Started {
            run_dir: run.path().to_path_buf(),
            total_steps: self.total_steps,
            start_step: self.start_step,
            trainable: self.trainable,
            total_params: self.total_params,
            examples: self.data.examples.len(),
            truncated: self.data.truncated,
            dropped: self.data.dropped.len(),
            used_chat_template: self.data.used_chat_template,
        };
        self.emit(started, on_event)?;

        let mut train_seconds = 0f64;
        let mut guard_stop: Option<String> = None;
        if self.start_step == 0 {
            guard_stop = self.monitor_pass(0, status, on_event)?;
        }
        let mut order_cache: Option<(usize, Vec<usize>)> = None;
        let mut grads_checked = false;
        for step in self.start_step..self.total_steps {
            let step_start = Instant::now();
            let batches: Vec<data::Batch> = (0..self.recipe.grad_accum)
                .map(|k| {
                    let index = self.micro_batches + k;
                    let epoch = index / self.batches_per_epoch;
                    if order_cache.as_ref().is_none_or(|(e, _)| *e != epoch) {
                        order_cache = Some((
                            epoch,
                            data::epoch_order(self.data.examples.len(), self.recipe.seed, epoch),
                        ));
                    }
                    let order = &order_cache.as_ref().expect("filled above").1;
                    data::make_batch(
                        &self.data,
                        order,
                        index % self.batches_per_epoch,
                        self.recipe.batch_size,
                        self.pad_id,
                    )
                })
                .collect();
            let epoch = self.micro_batches / self.batches_per_epoch;
            let lr = self.schedule.lr(step);
            let options = StepOptions {
                max_grad_norm: self.recipe.optimizer.max_grad_norm,
                timed: false,
                check_grads: !grads_checked,
            };
            let stepped = regularized_step(
                &self.decoder,
                &mut self.optimizer,
                &batches,
                lr,
                options,
                self.regularizer.as_ref(),
            )?;
            let report = match stepped {
                StepOutcome::Updated(report) => report,
                StepOutcome::NotFinite(what) => {
                    return self.fail(
                        status,
                        step,
                        format!("{what} at step {}", step + 1),
                        on_event,
                    );
                }
            };
            grads_checked |= report.grads_checked;
            self.micro_batches += self.recipe.grad_accum;
            let (step_loss, grad_norm, tokens) = (report.loss, report.grad_norm, report.tokens);
            self.losses.push(step_loss);

            let seconds = step_start.elapsed().as_secs_f64();
            train_seconds += seconds;
            let metrics = StepMetrics {
                step: step + 1,
                total_steps: self.total_steps,
                epoch,
                loss: step_loss,
                lr,
                grad_norm,
                tokens_per_s: tokens as f64 / seconds.max(1e-9),
                elapsed: train_seconds + seconds,
                tokens,
                lwf_kl: report.lwf_kl,
            };
            let event = TrainEvent::Step(metrics);
            self.write_record(&event)?;
            status.step = step + 1;
            status.touch();
            run.write_status(status)?;
            on_event(&event);

            if guard_stop.is_none() {
                guard_stop = self.monitor_pass(step + 1, status, on_event)?;
            }
            let done = step + 1 == self.total_steps;
            let stop = control.stop_requested() || guard_stop.is_some();
            let periodic =
                self.recipe.checkpoint_every > 0 && (step + 1) % self.recipe.checkpoint_every == 0;
            if periodic || stop || done {
                self.checkpoint(status, on_event)?;
            }
            if stop && !done {
                status.state = RunState::Stopped;
                if let Some(reason) = &guard_stop {
                    status.last_error = Some(format!("stopped by the drift guard: {reason}"));
                }
                status.touch();
                run.write_status(status)?;
                self.emit(TrainEvent::Stopped { step: step + 1 }, on_event)?;
                return Ok(self.outcome(RunState::Stopped, step + 1, None));
            }
        }

        let trained = self.trained_tensors()?;
        match &self.lora {
            Some(plan) => {
                let base = lora::base_name(&self.recipe.model_spec()?);
                lora::peft::write_adapter(&run.final_dir(), plan, &base, &trained)?
            }
            None => crate::run::export_model(&self.model, &trained, &run.final_dir())?,
        }
        status.state = RunState::Finished;
        status.touch();
        run.write_status(status)?;
        self.emit(
            TrainEvent::Finished {
                step: self.total_steps,
                final_dir: run.final_dir(),
            },
            on_event,
        )?;
        Ok(self.outcome(RunState::Finished, self.total_steps, None))
    }

    /// Runs the probe and evaluation when due after `step` updates; returns the guard's reason
    /// when it asks the run to stop.
    fn monitor_pass(
        &self,
        step: usize,
        status: &mut Status,
        on_event: &mut dyn FnMut(&TrainEvent),
    ) -> Result<Option<String>> {
        let Some(monitor) = &self.monitor else {
            return Ok(None);
        };
        if !monitor.due(step, self.total_steps) {
            return Ok(None);
        }
        let report = monitor.run(step, self.total_steps, &self.decoder, self.run)?;
        // No record: the monitor wrote its probe and eval records.
        on_event(&TrainEvent::Monitor {
            step,
            heldout_numeric_mass_delta: report.heldout_numeric_mass_delta,
            delta_learning: report.delta_learning,
            delta_heldout: report.delta_heldout,
            seconds: report.seconds,
        });
        let Some(trip) = check_guard(&self.recipe, &report) else {
            return Ok(None);
        };
        let stop = trip.action == GuardAction::Stop;
        self.emit(
            TrainEvent::Guard {
                step,
                reason: trip.reason.clone(),
                stop,
            },
            on_event,
        )?;
        status.last_error = Some(format!("drift guard: {}", trip.reason));
        Ok(stop.then_some(trip.reason))
    }

    fn outcome(&self, state: RunState, step: usize, reason: Option<String>) -> TrainOutcome {
        TrainOutcome {
            state,
            step,
            run_dir: self.run.path().to_path_buf(),
            reason,
        }
    }

    /// Records a numeric failure; the last good checkpoint stays as it is.
    fn fail(
        &self,
        status: &mut Status,
        step: usize,
        reason: String,
        on_event: &mut dyn FnMut(&TrainEvent),
    ) -> Result<TrainOutcome> {
        status.state = RunState::Failed;
        status.step = step;
        status.last_error = Some(reason.clone());
        status.touch();
        self.run.write_status(status)?;
        self.emit(
            TrainEvent::Failed {
                step: step + 1,
                reason: reason.clone(),
            },
            on_event,
        )?;
        Ok(self.outcome(RunState::Failed, step, Some(reason)))
    }

    /// The current f32 value of every trained tensor.
    fn trained_tensors(&self) -> Result<HashMap<String, Tensor>> {
        self.optimizer
            .names()
            .map(|name| {
                Ok((
                    name.clone(),
                    self.optimizer.weights_f32(name).expect("known name")?,
                ))
            })
            .collect()
    }

    /// Saves a checkpoint; an I/O failure is recorded and training goes on.
    fn checkpoint(&self, status: &mut Status, on_event: &mut dyn FnMut(&TrainEvent)) -> Result<()> {
        let step = self.optimizer.step;
        let state = CheckpointState {
            step,
            micro_batches: self.micro_batches,
            seed: self.recipe.seed,
            losses: self.losses.clone(),
        };
        let trained = self.trained_tensors()?;
        match self.run.save_checkpoint(
            &state,
            &trained,
            &self.optimizer.state_tensors(),
            self.recipe.keep_checkpoints,
        ) {
            Ok(()) => {
                status.last_checkpoint = Some(step);
                let path = self.run.checkpoint_dir(step);
                self.emit(TrainEvent::Checkpoint { step, path }, on_event)?;
            }
            Err(error) => {
                let message = format!("{error:#}");
                tracing::warn!("{message}");
                status.last_error = Some(message.clone());
                self.emit(
                    TrainEvent::CheckpointFailed {
                        step,
                        error: message,
                    },
                    on_event,
                )?;
            }
        }
        status.touch();
        self.run.write_status(status)
    }
}
