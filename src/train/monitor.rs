//! Live evaluation during training: the drift probe, task scores and per-layer drift, run at
//! step 0 (the base model), every N steps and at the end. Base-model results are computed once.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;

use crate::eval::drift::layer_drift;
use crate::eval::numeric::NumericVocab;
use crate::eval::probe::{load_prompts, probe_set, BaseReference, ProbeOptions, ProbePrompt};
use crate::eval::tasks::{deltas, evaluate, Task, TaskScore};
use crate::model::{Decoder, ModelTokenizer};
use crate::recipe::{GuardAction, Recipe};
use crate::run::record::{EvalRecord, ProbeRecord, ProbeSetSummary};
use crate::run::{Record, RunDir};
use crate::util::fs::write_json_atomic;

/// What one monitoring pass found, for the drift guard and front ends.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MonitorReport {
    pub heldout_numeric_mass_delta: Option<f64>,
    /// Held-out mass of the target's answer class, now minus base.
    pub heldout_answer_mass_delta: Option<f64>,
    /// Held-out probability of ending an answer at once, now minus base.
    pub heldout_stop_prob_delta: Option<f64>,
    pub delta_learning: Option<f64>,
    pub delta_heldout: Option<f64>,
    pub seconds: f64,
}

/// A guard bound that was crossed.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardTrip {
    pub reason: String,
    pub action: GuardAction,
}

/// Holds the frozen base model and its cached results.
pub struct Monitor {
    base: Decoder,
    tok: ModelTokenizer,
    numeric: NumericVocab,
    options: ProbeOptions,
    probe_sets: Vec<(&'static str, BaseReference)>,
    layer_drift: bool,
    tasks: Vec<Task>,
    max_items: Option<usize>,
    base_scores: Vec<TaskScore>,
    probe_every: Option<usize>,
    eval_every: Option<usize>,
    /// Whether the forgetting forecast was made (at the first probe after the base).
    forecast_made: AtomicBool,
}

/// The probe prompts and evaluation tasks a recipe names, loaded and checked (nothing computed
/// yet): everything about them that can fail on bad input.
pub struct MonitorInputs {
    options: ProbeOptions,
    prompt_sets: Vec<(&'static str, Vec<ProbePrompt>)>,
    layer_drift: bool,
    tasks: Vec<Task>,
    max_items: Option<usize>,
    probe_every: Option<usize>,
    eval_every: Option<usize>,
}

impl MonitorInputs {
    /// The token classes the probe follows besides numbers.
    pub fn classes(&self) -> &[crate::eval::classes::TokenClass] {
        &self.options.classes
    }

    /// Adds the class `answer`: the target task's answer vocabulary derived from the training
    /// `data` (labelled tokens against the prompts' and the held-out probe prompts' tokens), when
    /// the recipe's `probe.answer_class` asks for it. Stop and special tokens never join.
    pub fn derive_answer_class(
        &mut self,
        recipe: &Recipe,
        data: &crate::data::TokenizedData,
        tok: &ModelTokenizer,
    ) {
        let Some(options) = recipe.probe.as_ref().and_then(|p| p.answer_class) else {
            return;
        };
        let heldout: Vec<&[u32]> = self
            .prompt_sets
            .iter()
            .filter(|(name, _)| *name == "heldout")
            .flat_map(|(_, prompts)| prompts.iter().map(|p| p.ids.as_slice()))
            .collect();
        let class = crate::eval::classes::answer_class_of_data(data, &heldout, tok, &options);
        if class.ids.is_empty() {
            tracing::warn!(
                "no token is distinctive of the training responses (probe.answer_class: ratio {}, \
                 count {}); the answer class is not probed",
                options.min_ratio,
                options.min_count
            );
            return;
        }
        tracing::info!("probe class `answer`: {}", class.origin);
        self.options.classes.insert(0, class);
    }

    /// Loads the probe prompts and tasks; `None` when the recipe asks for neither.
    pub fn load(recipe: &Recipe, tok: &ModelTokenizer) -> Result<Option<Self>> {
        if recipe.probe.is_none() && recipe.eval.is_none() {
            return Ok(None);
        }
        let mut options = ProbeOptions::default();
        let mut prompt_sets = Vec::new();
        let mut layer_drift = false;
        if let Some(spec) = &recipe.probe {
            options.max_new_tokens = spec.max_new_tokens;
            options.top_k = spec.top_k;
            options.short_answer_tokens = spec.short_answer_tokens;
            for class in &spec.classes {
                anyhow::ensure!(
                    class.name != "answer",
                    "probe class name `answer` is the derived answer class's; choose another"
                );
                options.classes.push(
                    class
                        .resolve(&tok.tokenizer)
                        .context("in the recipe's probe.classes")?,
                );
            }
            layer_drift = spec.layer_drift;
            for (name, path) in [("target", &spec.target), ("heldout", &spec.heldout)] {
                let Some(path) = path else { continue };
                let prompts = load_prompts(&PathBuf::from(path), tok, spec.max_prompts)
                    .with_context(|| format!("in the recipe's probe.{name}"))?;
                prompt_sets.push((name, prompts));
            }
            anyhow::ensure!(!prompt_sets.is_empty(), "the recipe's `probe` section names no prompts: set probe.heldout and/or probe.target");
        }
        let mut tasks = Vec::new();
        let mut max_items = None;
        if let Some(spec) = &recipe.eval {
            max_items = spec.max_items;
            for path in &spec.tasks {
                tasks.push(
                    Task::load(&PathBuf::from(path))
                        .with_context(|| format!("in the recipe's eval.tasks ({path})"))?,
                );
            }
            anyhow::ensure!(
                !tasks.is_empty(),
                "the recipe's `eval` section lists no tasks"
            );
        }
        Ok(Some(Self {
            options,
            prompt_sets,
            layer_drift,
            tasks,
            max_items,
            probe_every: recipe.probe.as_ref().map(|p| p.every_steps),
            eval_every: recipe.eval.as_ref().map(|e| e.every_steps),
        }))
    }
}

impl Monitor {
    /// Prepares probe prompts, tasks and base results; `None` when the recipe asks for neither.
    pub fn new(recipe: &Recipe, base: Decoder, tok: &ModelTokenizer) -> Result<Option<Self>> {
        match MonitorInputs::load(recipe, tok)? {
            Some(inputs) => Self::from_inputs(inputs, base, tok).map(Some),
            None => Ok(None),
        }
    }

    /// Computes the base model's probe references and task scores for loaded inputs.
    pub fn from_inputs(inputs: MonitorInputs, base: Decoder, tok: &ModelTokenizer) -> Result<Self> {
        let numeric = NumericVocab::new(&tok.tokenizer, base.config().vocab_size);
        let MonitorInputs {
            options,
            prompt_sets,
            layer_drift,
            tasks,
            max_items,
            probe_every,
            eval_every,
        } = inputs;
        let probe_sets = prompt_sets
            .into_iter()
            .map(|(name, prompts)| {
                BaseReference::compute(&base, prompts, &numeric, &tok.stop_ids, &options)
                    .map(|reference| (name, reference))
            })
            .collect::<Result<Vec<_>>>()?;
        let base_scores = tasks
            .iter()
            .map(|t| evaluate(&base, tok, t, max_items))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            base,
            tok: tok.clone(),
            numeric,
            options,
            probe_sets,
            layer_drift,
            tasks,
            max_items,
            base_scores,
            probe_every,
            eval_every,
            forecast_made: AtomicBool::new(false),
        })
    }

    /// Whether anything is due after `step` updates (step 0 and the last step always are).
    pub fn due(&self, step: usize, total: usize) -> bool {
        is_due(self.probe_every, step, total) || is_due(self.eval_every, step, total)
    }

    /// Probes and evaluates `current` after `step` updates, recording everything in `run`.
    pub fn run(
        &self,
        step: usize,
        total: usize,
        current: &Decoder,
        run: &RunDir,
    ) -> Result<MonitorReport> {
        let started = Instant::now();
        let mut report = MonitorReport::default();
        let due = |every: Option<usize>| is_due(every, step, total);
        if due(self.probe_every) {
            let mut record = ProbeRecord {
                step,
                target: None,
                heldout: None,
                seconds: 0.0,
            };
            let mut snapshot = json!({"step": step});
            for (name, reference) in &self.probe_sets {
                let set = probe_set(
                    &self.base,
                    current,
                    reference,
                    &self.tok,
                    &self.numeric,
                    &self.options,
                )?;
                if *name == "heldout" {
                    report.heldout_numeric_mass_delta = Some(set.numeric_mass_delta);
                    report.heldout_answer_mass_delta = set
                        .now
                        .class_mass
                        .get("answer")
                        .zip(set.base.class_mass.get("answer"))
                        .map(|(now, base)| now.mean - base.mean);
                    report.heldout_stop_prob_delta = Some(
                        set.now.shape.first_stop_prob.mean - set.base.shape.first_stop_prob.mean,
                    );
                }
                snapshot[*name] = json!({"histogram": set.histogram, "numeric_mass": set.now.numeric_mass, "base_numeric_mass": set.base.numeric_mass});
                let summary = Some(ProbeSetSummary {
                    now: set.now,
                    base: set.base,
                    divergence: set.divergence,
                    numeric_mass_delta: set.numeric_mass_delta,
                });
                match *name {
                    "target" => record.target = summary,
                    _ => record.heldout = summary,
                }
            }
            record.seconds = started.elapsed().as_secs_f64();
            let forecast = match (&record.heldout, step) {
                (Some(heldout), 1..) if !self.forecast_made.swap(true, Ordering::Relaxed) => {
                    run.path().parent().and_then(|root| {
                        crate::eval::forecast::forecast_for(root, run.path(), heldout)
                    })
                }
                _ => None,
            };
            run.append(&Record::Probe(Box::new(record)))?;
            if let Some((heldout_delta, error, runs)) = forecast {
                tracing::info!(
                    "forecast: final Δ held-out {heldout_delta:+.1} ± {error:.1} points (from {runs} runs)"
                );
                run.append(&Record::Forecast {
                    step,
                    heldout_delta,
                    error,
                    runs,
                })?;
            }
            let dir = run.path().join("probe");
            std::fs::create_dir_all(&dir)?;
            write_json_atomic(&dir.join(format!("step-{step}.json")), &snapshot)?;
            if self.layer_drift {
                if let Some((_, reference)) = self
                    .probe_sets
                    .iter()
                    .find(|(n, _)| *n == "heldout")
                    .or(self.probe_sets.first())
                {
                    let layers = layer_drift(
                        &self.base,
                        current,
                        &reference.prompts,
                        &reference.stats.continuations,
                        &self.options,
                    )?;
                    run.append(&Record::LayerDrift { step, layers })?;
                }
            }
        }
        if due(self.eval_every) {
            let eval_start = Instant::now();
            let scores = if step == 0 {
                self.base_scores.clone()
            } else {
                self.tasks
                    .iter()
                    .map(|t| evaluate(current, &self.tok, t, self.max_items))
                    .collect::<Result<Vec<_>>>()?
            };
            let (learning, heldout) = deltas(&scores, &self.base_scores);
            report.delta_learning = learning;
            report.delta_heldout = heldout;
            run.append(&Record::Eval(EvalRecord {
                step,
                tasks: scores,
                base: self.base_scores.clone(),
                delta_learning: learning,
                delta_heldout: heldout,
                seconds: eval_start.elapsed().as_secs_f64(),
            }))?;
        }
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }
}

/// A pass configured every `every` steps is due at step 0, at the end, and at multiples of `every`.
fn is_due(every: Option<usize>, step: usize, total: usize) -> bool {
    every.is_some_and(|n| step == 0 || step == total || (n > 0 && step.is_multiple_of(n)))
}

/// Checks a report against the recipe's guard.
pub fn check_guard(recipe: &Recipe, report: &MonitorReport) -> Option<GuardTrip> {
    let guard = recipe.guard.as_ref()?;
    if let (Some(bound), Some(delta)) = (
        guard.max_numeric_mass_delta,
        report.heldout_numeric_mass_delta,
    ) {
        if delta > bound {
            return Some(GuardTrip {
                reason: format!("held-out numeric mass rose by {delta:.4} (bound {bound})"),
                action: guard.action,
            });
        }
    }
    if let (Some(bound), Some(delta)) = (
        guard.max_answer_mass_delta,
        report.heldout_answer_mass_delta,
    ) {
        if delta > bound {
            return Some(GuardTrip {
                reason: format!(
                    "held-out mass of the target's answer tokens rose by {delta:.4} (bound {bound})"
                ),
                action: guard.action,
            });
        }
    }
    if let (Some(bound), Some(delta)) = (guard.max_stop_prob_delta, report.heldout_stop_prob_delta)
    {
        if delta > bound {
            return Some(GuardTrip {
                reason: format!(
                    "held-out answers end at once more often: stop probability +{delta:.4} (bound {bound})"
                ),
                action: guard.action,
            });
        }
    }
    if let (Some(bound), Some(delta)) = (guard.max_heldout_drop, report.delta_heldout) {
        if -delta > bound {
            return Some(GuardTrip {
                reason: format!(
                    "held-out score fell by {:.2} points (bound {bound})",
                    -delta
                ),
                action: guard.action,
            });
        }
    }
    None
}
