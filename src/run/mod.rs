//! The run directory: the single source of truth for a run, read by every front end.
//!
//! ```text
//! runs/<date>-<time>-<recipe>/
//!   recipe.yaml        resolved recipe (every field explicit)
//!   status.json        state, pid, step, last error (atomic writes)
//!   metrics.jsonl      one record per line (see `record`): append-only, one write per line
//!   lock               held (flock) by the one process writing the run; holds its pid
//!   train.log          worker output when launched detached
//!   checkpoints/step-N/  trained tensors + optimizer state + position (atomic directory rename)
//!   final/             full Hugging Face model directory
//! ```
//!
//! A sequence of stages (`tunescope sequence`) keeps one such run directory per stage inside a
//! sequence directory with a `sequence.json` ([`sequence`]).

mod checkpoint;
mod export;
mod lock;
pub mod reader;
pub mod record;
pub mod sequence;
mod status;

pub use checkpoint::{CheckpointState, LoadedCheckpoint};
pub use export::export_model;
pub use lock::RunLock;
pub use record::{Record, RecordLog, FORMAT_VERSION};
pub use status::{RunState, Status};

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::recipe::Recipe;
use crate::util::fs::{write_atomic, write_json_atomic};
use record::raw_step;

/// Longest recipe name kept in a run directory's name.
const MAX_NAME_CHARS: usize = 100;

/// Handle to one run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// Creates `root/<YYYYmmdd-HHMMSS>-<name>` (with a numeric suffix if taken; the name cut to
    /// 100 characters).
    pub fn create(root: &Path, name: &str) -> Result<Self> {
        std::fs::create_dir_all(root)
            .with_context(|| format!("cannot create runs directory {}", root.display()))?;
        let stamp = chrono::Local::now().format("%Y%m%d-%H%M%S");
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+' | '.') {
                    c
                } else {
                    '_'
                }
            })
            // Directory names are limited (255 bytes on most file systems).
            .take(MAX_NAME_CHARS)
            .collect();
        for attempt in 0..1000 {
            let dir_name = if attempt == 0 {
                format!("{stamp}-{safe}")
            } else {
                format!("{stamp}-{safe}-{}", attempt + 1)
            };
            let path = root.join(dir_name);
            match std::fs::create_dir(&path) {
                Ok(()) => {
                    std::fs::create_dir_all(path.join("checkpoints"))?;
                    return Ok(Self { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot create {}", path.display()))
                }
            }
        }
        bail!(
            "could not find a free run directory name under {}",
            root.display()
        )
    }

    /// Uses `path` as a run directory, creating it (and `checkpoints/`) when missing.
    pub fn open_or_init(path: &Path) -> Result<Self> {
        std::fs::create_dir_all(path.join("checkpoints"))
            .with_context(|| format!("cannot create run directory {}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    /// Opens an existing run directory.
    pub fn open(path: &Path) -> Result<Self> {
        if !path.join("recipe.yaml").is_file() {
            bail!("{} is not a run directory (no recipe.yaml)", path.display());
        }
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn recipe_path(&self) -> PathBuf {
        self.path.join("recipe.yaml")
    }

    pub fn status_path(&self) -> PathBuf {
        self.path.join("status.json")
    }

    pub fn metrics_path(&self) -> PathBuf {
        self.path.join("metrics.jsonl")
    }

    pub fn checkpoints_dir(&self) -> PathBuf {
        self.path.join("checkpoints")
    }

    pub fn final_dir(&self) -> PathBuf {
        self.path.join("final")
    }

    pub fn log_path(&self) -> PathBuf {
        self.path.join("train.log")
    }

    pub fn lock_path(&self) -> PathBuf {
        self.path.join("lock")
    }

    /// Takes the run's writer lock; fails naming the live process that holds it. Held for as
    /// long as the returned guard lives.
    pub fn lock(&self) -> Result<RunLock> {
        RunLock::acquire(&self.lock_path())
    }

    /// Removes the temporaries a killed writer left in the run directory: `.NAME.tmp-PID` files
    /// and directories (atomic writes, the model export), which no later write reuses. (A
    /// checkpoint's `checkpoints/.step-N.tmp` is cleared by the next save of step N.) Call only
    /// while holding the run's lock. Returns how many were removed.
    pub fn remove_stale_temporaries(&self) -> usize {
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.path)
            .into_iter()
            .flatten()
            .flatten()
        {
            let is_temp = entry.file_name().to_str().is_some_and(|name| {
                name.starts_with('.')
                    && name
                        .rsplit_once(".tmp-")
                        .is_some_and(|(_, pid)| pid.parse::<u32>().is_ok())
            });
            if !is_temp {
                continue;
            }
            let path = entry.path();
            let gone = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            match gone {
                Ok(()) => removed += 1,
                Err(e) => tracing::warn!("cannot remove {}: {e}", path.display()),
            }
        }
        removed
    }

    /// Writes the resolved recipe snapshot.
    pub fn write_recipe(&self, recipe: &Recipe) -> Result<()> {
        write_atomic(&self.recipe_path(), recipe.to_yaml()?.as_bytes())
    }

    /// Reads the recipe snapshot.
    pub fn read_recipe(&self) -> Result<Recipe> {
        Recipe::load(&self.recipe_path(), &[])
    }

    /// Appends one record to `metrics.jsonl` with a single write, so readers never see half a line
    /// from a completed write. A new file starts with the `header` record.
    pub fn append(&self, record: &Record) -> Result<()> {
        let mut line = serde_json::to_string(record)?;
        line.push('\n');
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.metrics_path())
            .with_context(|| format!("cannot open {}", self.metrics_path().display()))?;
        if file.metadata().map(|m| m.len() == 0).unwrap_or(false) {
            let header = serde_json::to_string(&Record::Header { v: FORMAT_VERSION })?;
            line = format!("{header}\n{line}");
        }
        file.write_all(line.as_bytes())
            .with_context(|| format!("cannot append to {}", self.metrics_path().display()))?;
        Ok(())
    }

    /// Every record in `metrics.jsonl`; unknown kinds and bad lines are counted and skipped (with
    /// a warning), a torn last line is ignored.
    pub fn read_records(&self) -> Result<RecordLog> {
        let log = RecordLog::parse(&self.read_metrics_text()?);
        log.warn_skipped(&self.metrics_path().display().to_string());
        Ok(log)
    }

    /// Every complete line of `metrics.jsonl` as raw JSON (a torn last line is ignored): for
    /// tests and tools that check the bytes written. Views read [`RunDir::read_records`].
    pub fn read_metrics(&self) -> Result<Vec<Value>> {
        Ok(self
            .read_metrics_text()?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }

    fn read_metrics_text(&self) -> Result<String> {
        match std::fs::read_to_string(self.metrics_path()) {
            Ok(text) => Ok(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => {
                Err(e).with_context(|| format!("cannot read {}", self.metrics_path().display()))
            }
        }
    }

    /// Rewrites `metrics.jsonl` atomically, keeping the complete lines for which `keep(step,
    /// record)` holds (`step` is read from any line, `record` is `None` for unknown kinds); a
    /// torn last line is dropped and a missing header is added. Returns how many lines were
    /// dropped; nothing is written when none is.
    pub fn retain_records(
        &self,
        keep: impl Fn(Option<usize>, Option<&Record>) -> bool,
    ) -> Result<usize> {
        let text = self.read_metrics_text()?;
        let complete = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
        let mut kept = String::new();
        let mut dropped = usize::from(complete.len() < text.trim_end().len());
        let mut has_header = false;
        for line in complete.lines().filter(|l| !l.trim().is_empty()) {
            let record = match record::parse_line(line) {
                record::Line::Known(record) => Some(record),
                _ => None,
            };
            has_header |= matches!(record, Some(Record::Header { .. }));
            if keep(raw_step(line), record.as_ref()) {
                kept.push_str(line);
                kept.push('\n');
            } else {
                dropped += 1;
            }
        }
        if dropped == 0 {
            return Ok(0);
        }
        if !has_header {
            let header = serde_json::to_string(&Record::Header { v: FORMAT_VERSION })?;
            kept.insert_str(0, &format!("{header}\n"));
        }
        write_atomic(&self.metrics_path(), kept.as_bytes())?;
        Ok(dropped)
    }

    /// On resume from the checkpoint at `step`: drops the records of later steps (the run
    /// replays them), so that every step appears once in `metrics.jsonl`.
    pub fn truncate_after(&self, step: usize) -> Result<usize> {
        self.retain_records(|s, _| s.is_none_or(|s| s <= step))
    }

    /// Writes `status.json` atomically.
    pub fn write_status(&self, status: &Status) -> Result<()> {
        write_json_atomic(&self.status_path(), status)
    }

    /// Reads `status.json`.
    pub fn read_status(&self) -> Result<Status> {
        let text = std::fs::read_to_string(self.status_path())
            .with_context(|| format!("cannot read {}", self.status_path().display()))?;
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a valid status file",
                self.status_path().display()
            )
        })
    }

    /// Steps of the checkpoints on disk, ascending.
    pub fn checkpoint_steps(&self) -> Vec<usize> {
        let mut steps: Vec<usize> = std::fs::read_dir(self.checkpoints_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_prefix("step-")?.parse().ok())
            .filter(|step| self.checkpoint_dir(*step).join("state.json").is_file())
            .collect();
        steps.sort_unstable();
        steps
    }

    /// Directory of the checkpoint after `step` updates.
    pub fn checkpoint_dir(&self, step: usize) -> PathBuf {
        self.checkpoints_dir().join(format!("step-{step}"))
    }

    /// The newest complete checkpoint.
    pub fn latest_checkpoint(&self) -> Option<usize> {
        self.checkpoint_steps().last().copied()
    }
}

/// Run directories under `root`, and the stage runs of the sequence directories under it (those
/// holding a `sequence.json`), newest first.
pub fn list_runs(root: &Path) -> Vec<RunDir> {
    let entries = |dir: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect()
    };
    let mut runs: Vec<RunDir> = entries(root)
        .into_iter()
        .flat_map(|path| {
            if path.join(sequence::FILE).is_file() {
                entries(&path)
            } else {
                vec![path]
            }
        })
        .filter(|path| path.join("recipe.yaml").is_file())
        .map(|path| RunDir { path })
        .collect();
    runs.sort_by(|a, b| b.path.cmp(&a.path));
    runs
}
