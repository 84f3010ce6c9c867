//! File-change notifications for run directories and checkpoint folders, through `notify`: the
//! platform's notifications (inotify, FSEvents, ...) when they start, else our own stat
//! poller ([`super::stat_poll`]). Polling is also used when notifications fail later, and when `TUNESCOPE_WATCH=poll`
//! asks for it (network filesystems deliver no notifications for writes made elsewhere). The
//! mode is always reported ([`DirWatcher::mode`]), never silent.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use notify::{EventKind, RecursiveMode, Watcher};

use super::stat_poll::StatPoller;

/// What a watcher reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// These paths were created, written, renamed or removed.
    Paths(Vec<PathBuf>),
    /// Notifications failed; call [`DirWatcher::fall_back`] to poll instead.
    Failed(String),
}

/// How changes are noticed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// The platform's notifications.
    Notify,
    /// Polling every `every`, because of `reason`.
    Polling { every: Duration, reason: String },
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mode::Notify => write!(f, "file notifications"),
            Mode::Polling { every, reason } => {
                write!(f, "polling every {:.1} s ({reason})", every.as_secs_f64())
            }
        }
    }
}

/// Where changes go.
pub type Sink = Arc<dyn Fn(Change) + Send + Sync>;

/// Watches folders and reports their changes to a sink.
pub struct DirWatcher {
    watcher: Backend,
    mode: Mode,
    every: Duration,
    sink: Sink,
    watched: Vec<(PathBuf, RecursiveMode)>,
}

/// What notices changes.
enum Backend {
    Notify(Box<dyn Watcher + Send>),
    Poll(StatPoller),
}

impl Backend {
    fn watch(&mut self, path: &Path, mode: RecursiveMode) -> notify::Result<()> {
        match self {
            Backend::Notify(watcher) => watcher.watch(path, mode),
            Backend::Poll(poller) => {
                poller.watch(path, mode == RecursiveMode::Recursive);
                Ok(())
            }
        }
    }

    fn unwatch(&mut self, path: &Path) {
        match self {
            Backend::Notify(watcher) => {
                let _ = watcher.unwatch(path);
            }
            Backend::Poll(poller) => poller.unwatch(path),
        }
    }
}

/// Whether `TUNESCOPE_WATCH=poll` asks for polling.
pub fn polling_requested() -> bool {
    std::env::var("TUNESCOPE_WATCH").is_ok_and(|v| v.trim().eq_ignore_ascii_case("poll"))
}

impl DirWatcher {
    /// Platform notifications, or polling every `every` when they cannot start (or are not
    /// wanted: `TUNESCOPE_WATCH=poll`).
    pub fn new(every: Duration, sink: Sink) -> Result<Self> {
        if polling_requested() {
            return Self::polling(every, "TUNESCOPE_WATCH=poll".into(), sink);
        }
        let forward = sink.clone();
        match notify::recommended_watcher(move |event| deliver(&forward, event)) {
            Ok(watcher) => Ok(Self {
                watcher: Backend::Notify(Box::new(watcher)),
                mode: Mode::Notify,
                every,
                sink,
                watched: Vec::new(),
            }),
            Err(e) => Self::polling(every, format!("notifications unavailable: {e}"), sink),
        }
    }

    /// Polling every `every`, for `reason`.
    pub fn polling(every: Duration, reason: String, sink: Sink) -> Result<Self> {
        Ok(Self {
            watcher: Backend::Poll(StatPoller::start(
                every,
                Arc::new({
                    let sink = sink.clone();
                    move |paths| sink(Change::Paths(paths))
                }),
            )),
            mode: Mode::Polling { every, reason },
            every,
            sink,
            watched: Vec::new(),
        })
    }

    /// How changes are noticed now.
    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    /// Whether `path` is watched.
    pub fn watches(&self, path: &Path) -> bool {
        self.watched.iter().any(|(p, _)| p == path)
    }

    /// Watches `path` (and everything below it when `recursive`); a path notifications refuse
    /// (too many watches, say) switches the watcher to polling.
    pub fn watch(&mut self, path: &Path, recursive: bool) -> Result<()> {
        if self.watches(path) {
            return Ok(());
        }
        let mode = if recursive {
            RecursiveMode::Recursive
        } else {
            RecursiveMode::NonRecursive
        };
        if let Err(e) = self.watcher.watch(path, mode) {
            if self.mode != Mode::Notify || !path.exists() {
                return Err(e).with_context(|| format!("cannot watch {}", path.display()));
            }
            self.watched.push((path.to_path_buf(), mode));
            return self.fall_back(format!("cannot watch {}: {e}", path.display()));
        }
        self.watched.push((path.to_path_buf(), mode));
        Ok(())
    }

    /// Stops watching `path`.
    pub fn unwatch(&mut self, path: &Path) {
        if self.watches(path) {
            self.watcher.unwatch(path);
            self.watched.retain(|(p, _)| p != path);
        }
    }

    /// Switches to polling (for `reason`), watching the same paths.
    pub fn fall_back(&mut self, reason: String) -> Result<()> {
        let mut polling = Self::polling(self.every, reason, self.sink.clone())?;
        for (path, mode) in &self.watched {
            if let Err(e) = polling.watcher.watch(path, *mode) {
                tracing::warn!("cannot poll {}: {e}", path.display());
            }
        }
        polling.watched = std::mem::take(&mut self.watched);
        *self = polling;
        Ok(())
    }
}

/// Forwards a notify event: changes (not reads) as paths, errors as failures.
fn deliver(sink: &Sink, event: notify::Result<notify::Event>) {
    match event {
        Ok(event) if matches!(event.kind, EventKind::Access(_)) => {}
        Ok(event) => sink(Change::Paths(event.paths)),
        Err(e) => sink(Change::Failed(e.to_string())),
    }
}
