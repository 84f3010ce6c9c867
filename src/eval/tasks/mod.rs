//! Task files in lm-evaluation-harness style (a YAML header plus a JSONL of items) and their
//! scoring: multiple choice by log-likelihood, greedy generation with exact or numeric match, and
//! perplexity.
//!
//! - [`spec`]: loading and validating task files.
//! - [`prompt`]: turning an item's prompt into context token ids.
//! - [`loglik`]: batched per-token log-probabilities of scored spans.
//! - [`score_mc`], [`score_generate`], [`score_ppl`]: one scorer per task type.
//! - [`normalize`]: answer normalisation, number reading and matching.
//! - [`score`]: the score record and the learning / held-out deltas.

pub mod loglik;
pub mod normalize;
pub mod prompt;
pub mod score;
pub mod score_generate;
pub mod score_mc;
pub mod score_ppl;
pub mod spec;

use std::path::PathBuf;

use anyhow::Result;
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::model::{Decoder, ModelTokenizer};

pub use score::{deltas, TaskScore};

/// Whether a task measures what is being taught (target) or what should not be forgotten.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskRole {
    Target,
    Heldout,
}

impl TaskRole {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskRole::Target => "target",
            TaskRole::Heldout => "heldout",
        }
    }
}

/// How a task is scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    MultipleChoice,
    Generate,
    Perplexity,
}

impl TaskKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::MultipleChoice => "multiple_choice",
            TaskKind::Generate => "generate",
            TaskKind::Perplexity => "perplexity",
        }
    }
}

/// How a generated answer is compared with the reference answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchMode {
    /// Equal after normalisation.
    #[default]
    Exact,
    /// The first number read from each side is equal (digits or number words).
    Numeric,
}

/// One item of a task.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskItem {
    MultipleChoice {
        prompt: String,
        choices: Vec<String>,
        /// Index of the correct choice.
        answer: usize,
    },
    Generate {
        prompt: String,
        /// Any of these counts as correct.
        answers: Vec<String>,
    },
    Perplexity {
        text: String,
    },
}

/// A loaded task: header options and items.
#[derive(Debug, Clone)]
pub struct Task {
    pub name: String,
    pub role: TaskRole,
    pub kind: TaskKind,
    /// The YAML file the task was loaded from.
    pub path: PathBuf,
    /// The JSONL file of items.
    pub data: PathBuf,
    /// Render prompts with the model's chat template (user message + generation prompt).
    pub chat: bool,
    /// Generate only: most new tokens per item.
    pub max_new_tokens: usize,
    /// Generate only: extra stop strings.
    pub stop: Vec<String>,
    /// Generate only: answer extraction (first capture group, else whole match).
    pub regex: Option<Regex>,
    /// Generate only: how answers are compared.
    pub match_mode: MatchMode,
    pub items: Vec<TaskItem>,
    /// Each item's image (an item's `"image"`, resolved against the data file's folder), for
    /// vision-language models; empty when no item has one.
    pub images: Vec<Option<PathBuf>>,
}

impl Task {
    /// Loads a task YAML file and the JSONL items it names.
    pub fn load(path: &std::path::Path) -> Result<Task> {
        spec::load(path)
    }
}

/// Scores `decoder` on the first `max_items` items of `task` (all items when `None`).
pub fn evaluate(
    decoder: &Decoder,
    tok: &ModelTokenizer,
    task: &Task,
    max_items: Option<usize>,
) -> Result<TaskScore> {
    let count = max_items.map_or(task.items.len(), |n| n.min(task.items.len()));
    let items = &task.items[..count];
    if task.chat && task.kind != TaskKind::Perplexity && tok.chat_template.is_none() {
        tracing::warn!(
            "task `{}` asks for the chat template but the model has none; using raw prompts",
            task.name
        );
    }
    let metrics = match task.kind {
        TaskKind::MultipleChoice => score_mc::score(decoder, tok, task, items)?,
        TaskKind::Generate => score_generate::score(decoder, tok, task, items)?,
        TaskKind::Perplexity => score_ppl::score(decoder, tok, items)?,
    };
    let primary = match task.kind {
        TaskKind::MultipleChoice => metrics.get("acc").copied(),
        TaskKind::Generate => metrics.get("exact_match").copied(),
        TaskKind::Perplexity => None,
    };
    Ok(TaskScore {
        name: task.name.clone(),
        role: task.role,
        kind: task.kind,
        items: count,
        score: primary,
        metrics,
    })
}
