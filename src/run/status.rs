//! `status.json`: where a run stands.

use serde::{Deserialize, Serialize};

/// Lifecycle of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Created,
    Running,
    Stopped,
    Finished,
    Failed,
}

impl RunState {
    /// Whether the run has ended (successfully or not).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunState::Stopped | RunState::Finished | RunState::Failed
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Created => "created",
            RunState::Running => "running",
            RunState::Stopped => "stopped",
            RunState::Finished => "finished",
            RunState::Failed => "failed",
        }
    }
}

/// Contents of `status.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub state: RunState,
    pub pid: Option<u32>,
    /// Optimizer updates completed.
    pub step: usize,
    pub total_steps: usize,
    pub recipe: String,
    pub model: String,
    pub started_at: String,
    pub updated_at: String,
    /// Newest checkpoint on disk.
    pub last_checkpoint: Option<usize>,
    /// Why the run failed or what last went wrong.
    pub last_error: Option<String>,
}

impl Status {
    /// A fresh status for a run about to start.
    pub fn new(recipe: &str, model: &str, total_steps: usize) -> Self {
        let now = now();
        Self {
            state: RunState::Created,
            pid: Some(std::process::id()),
            step: 0,
            total_steps,
            recipe: recipe.into(),
            model: model.into(),
            started_at: now.clone(),
            updated_at: now,
            last_checkpoint: None,
            last_error: None,
        }
    }

    /// Refreshes `updated_at`.
    pub fn touch(&mut self) {
        self.updated_at = now();
    }
}

/// Local time in RFC 3339.
pub fn now() -> String {
    chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}
