//! Which run directories the loop follows for changes: the runs folder (recursively, once it
//! exists) and the attached run when it lives elsewhere.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;

use super::app::App;
use crate::util::fswatch::{Change, DirWatcher, Mode};

/// The watcher of the run directories the App shows.
pub struct Follower {
    watcher: DirWatcher,
    followed: Vec<PathBuf>,
}

impl Follower {
    /// Notifications (or polling every `poll_every`, when `force_poll` asks for it or
    /// notifications are unavailable), reported to `sink`.
    pub fn new(
        poll_every: std::time::Duration,
        force_poll: bool,
        sink: impl Fn(Change) + Send + Sync + 'static,
    ) -> Result<Self> {
        let sink = Arc::new(sink);
        let watcher = if force_poll {
            DirWatcher::polling(poll_every, "asked for".into(), sink)?
        } else {
            DirWatcher::new(poll_every, sink)?
        };
        Ok(Self {
            watcher,
            followed: Vec::new(),
        })
    }

    /// How changes are noticed.
    pub fn mode(&self) -> Mode {
        self.watcher.mode().clone()
    }

    /// Switches to polling after notifications failed.
    pub fn fall_back(&mut self, reason: String) {
        if self.watcher.mode() == &Mode::Notify {
            let _ = self
                .watcher
                .fall_back(format!("notifications failed: {reason}"));
        }
    }

    /// Follows what the App shows now (a runs folder that appeared, a newly attached run).
    pub fn follow(&mut self, app: &App) {
        let mut wanted = vec![app.runs_root.clone()];
        if let Some(reader) = &app.attached {
            let dir = reader.run().path();
            if !dir.starts_with(&app.runs_root) {
                wanted.push(dir.to_path_buf());
            }
        }
        for path in self.followed.clone() {
            if !wanted.contains(&path) {
                self.watcher.unwatch(&path);
                self.followed.retain(|p| p != &path);
            }
        }
        for path in wanted {
            if !self.followed.contains(&path)
                && path.is_dir()
                && self.watcher.watch(&path, true).is_ok()
            {
                self.followed.push(path);
            }
        }
    }

    /// Whether changed `paths` concern what the App shows.
    pub fn concerns(&self, app: &App, paths: &[PathBuf]) -> bool {
        let attached = app.attached.as_ref().map(|r| r.run().path());
        paths.is_empty()
            || paths.iter().any(|p| {
                p.starts_with(&app.runs_root)
                    || attached.is_some_and(|a| p.starts_with(a))
                    || in_followed(&self.followed, p)
            })
    }
}

fn in_followed(followed: &[PathBuf], path: &Path) -> bool {
    followed.iter().any(|f| path.starts_with(f))
}
