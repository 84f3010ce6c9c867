//! The sequence file: stages of fine-tuning run one after another, each from the previous
//! stage's final weights. Parsing rejects unknown keys (with the nearest valid key), and
//! [`SequenceSpec::plan`] checks every stage's recipe, data and tasks before anything is written.

use std::path::{Path, PathBuf};

use crate::eval::tasks::{Task, TaskRole};
use crate::recipe::{explain_serde_error, EvalSpec, Recipe};
pub use crate::run::sequence::{SequenceSpec, StageSpec};
use anyhow::{bail, Context, Result};

/// A stage checked and resolved: its recipe with the stage's data, tasks and probe prompts.
#[derive(Debug, Clone)]
pub struct PlannedStage {
    /// 1-based position.
    pub index: usize,
    pub spec: StageSpec,
    /// The recipe as the stage trains it, except `model` (set when the stage starts).
    pub recipe: Recipe,
    /// The target task's name.
    pub target_task: String,
}

/// A sequence file checked in full: what `run_sequence` runs.
#[derive(Debug, Clone)]
pub struct SequencePlan {
    /// The sequence file.
    pub file: PathBuf,
    /// `--set` overrides given on the command line (applied to every stage, last).
    pub overrides: Vec<String>,
    pub spec: SequenceSpec,
    /// The first stage's starting model.
    pub base_model: String,
    pub stages: Vec<PlannedStage>,
    /// Held-out tasks, then every stage's target (each task once), as scored after a stage.
    pub tasks: Vec<Task>,
    /// Names of the held-out tasks.
    pub heldout_tasks: Vec<String>,
}

impl SequenceSpec {
    /// Reads and parses a sequence file; errors name the file, line and key.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read sequence file {}", path.display()))?;
        let origin = path.display().to_string();
        if text.trim().is_empty() {
            bail!("{origin}: the sequence file is empty; it needs `heldout:` and `stages:`");
        }
        let mut spec: SequenceSpec = serde_yaml::from_str(&text).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!("{origin}:{}:{}", l.line(), l.column()))
                .unwrap_or_else(|| origin.clone());
            let message = e.to_string();
            let message = message.split(" at line ").next().unwrap_or(&message);
            anyhow::anyhow!("{at}: {}", explain_serde_error(message))
        })?;
        if spec.name.is_empty() {
            spec.name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "sequence".into());
        }
        Ok(spec)
    }

    /// Checks everything before anything is written: names, every stage's recipe (with its
    /// overrides), data, target and probe prompts, the held-out tasks, and each stage's recipe
    /// against the starting model (selection, tokenised data, probe and eval files), as
    /// `train::check` does. Errors name the file, the stage and the key.
    pub fn plan(self, file: &Path, overrides: &[String]) -> Result<SequencePlan> {
        let origin = file.display().to_string();
        if !is_safe_name(&self.name) {
            bail!(
                "{origin}: key `name`: `{}` may use only letters, digits, `-`, `_`, `.` and `+`",
                self.name
            );
        }
        if self.stages.is_empty() {
            bail!("{origin}: key `stages`: the sequence lists no stages");
        }
        if self.heldout.is_empty() {
            bail!("{origin}: key `heldout`: list at least one held-out task, scored after every stage");
        }
        if self.max_items == Some(0) {
            bail!("{origin}: key `max_items` must be at least 1 (or left out for every item)");
        }
        let mut tasks = Vec::new();
        let mut heldout_tasks = Vec::new();
        for (i, path) in self.heldout.iter().enumerate() {
            let task = load_task(path, TaskRole::Heldout)
                .with_context(|| format!("{origin}: key `heldout[{i}]`"))?;
            heldout_tasks.push(task.name.clone());
            push_task(&mut tasks, task).with_context(|| format!("{origin}: key `heldout[{i}]`"))?;
        }
        let mut stages = Vec::new();
        for (i, stage) in self.stages.iter().enumerate() {
            let at = format!("{origin}: stage {} (`{}`)", i + 1, stage.name);
            if !is_safe_name(&stage.name) {
                bail!("{at}: key `name` may use only letters, digits, `-`, `_`, `.` and `+`");
            }
            if self.stages[..i].iter().any(|s| s.name == stage.name) {
                bail!("{at}: key `name`: another stage has this name");
            }
            let target = load_task(&stage.target, TaskRole::Target)
                .with_context(|| format!("{at}: key `target`"))?;
            let planned = self
                .plan_stage(i + 1, stage, overrides, &target.name)
                .with_context(|| at.clone())?;
            push_task(&mut tasks, target).with_context(|| format!("{at}: key `target`"))?;
            stages.push(planned);
        }
        let base_model = match &self.model {
            Some(model) => model.clone(),
            None => stages[0].recipe.model_spec().with_context(|| {
                format!("{origin}: stage 1: set `model` in the sequence or the recipe")
            })?,
        };
        for stage in &stages {
            let mut recipe = stage.recipe.clone();
            recipe.model = Some(base_model.clone());
            crate::train::check(&recipe).with_context(|| {
                format!(
                    "{origin}: stage {} (`{}`), recipe {} checked against the starting model {base_model}",
                    stage.index,
                    stage.spec.name,
                    stage.spec.recipe.display()
                )
            })?;
        }
        Ok(SequencePlan {
            file: file.to_path_buf(),
            overrides: overrides.to_vec(),
            spec: self,
            base_model,
            stages,
            tasks,
            heldout_tasks,
        })
    }

    /// A stage's recipe: loaded with the sequence's, the stage's and the command line's
    /// overrides, then given the stage's data, evaluation tasks and probe target.
    fn plan_stage(
        &self,
        index: usize,
        stage: &StageSpec,
        cli: &[String],
        target_task: &str,
    ) -> Result<PlannedStage> {
        if !stage.data.is_file() {
            bail!("key `data`: {} does not exist", stage.data.display());
        }
        if let Some(probe) = &stage.probe_target {
            if !probe.is_file() {
                bail!("key `probe_target`: {} does not exist", probe.display());
            }
        }
        let overrides: Vec<String> = self
            .set
            .iter()
            .chain(&stage.set)
            .chain(cli)
            .cloned()
            .collect();
        let mut recipe = Recipe::load(&stage.recipe, &overrides)
            .with_context(|| format!("key `recipe` ({})", stage.recipe.display()))?;
        recipe.name = format!("{}.{index}-{}", self.name, stage.name);
        recipe.description = Some(format!(
            "stage {index} of sequence `{}`: recipe {} on {}",
            self.name,
            stage.recipe.display(),
            stage.data.display()
        ));
        recipe.data = Some(path_string(&stage.data));
        let every_steps = recipe.eval.as_ref().map_or(0, |e| e.every_steps);
        recipe.eval = Some(EvalSpec {
            every_steps,
            tasks: std::iter::once(&stage.target)
                .chain(&self.heldout)
                .map(|p| path_string(p))
                .collect(),
            max_items: self
                .max_items
                .or(recipe.eval.as_ref().and_then(|e| e.max_items)),
        });
        if let Some(probe) = recipe.probe.as_mut() {
            probe.target = stage.probe_target.as_deref().map(path_string);
            if probe.target.is_none() && probe.heldout.is_none() {
                recipe.probe = None;
            }
        }
        Ok(PlannedStage {
            index,
            spec: stage.clone(),
            recipe,
            target_task: target_task.to_string(),
        })
    }
}

/// Loads a task and checks its role.
fn load_task(path: &Path, role: TaskRole) -> Result<Task> {
    let task = Task::load(path)?;
    if task.role != role {
        bail!(
            "{} has `role: {}`; a sequence needs `role: {}` here",
            path.display(),
            task.role.as_str(),
            role.as_str()
        );
    }
    Ok(task)
}

/// Adds `task` unless a task of the same name and file is there; two files of one name fail.
fn push_task(tasks: &mut Vec<Task>, task: Task) -> Result<()> {
    match tasks.iter().find(|t| t.name == task.name) {
        Some(t) if t.path == task.path => Ok(()),
        Some(t) => bail!(
            "task name `{}` is used by {} and {}; task names must be unique in a sequence",
            task.name,
            t.path.display(),
            task.path.display()
        ),
        None => {
            tasks.push(task);
            Ok(())
        }
    }
}

fn path_string(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Letters, digits, `-`, `_`, `.`, `+`; not empty, not starting with `.`.
fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+'))
}
