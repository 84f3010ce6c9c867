//! How a watch waits between rounds: on file notifications from the watched folder (a new
//! checkpoint, a file of one completing), or on notify's polling watcher where notifications
//! fail or polling was asked for.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::{Follow, WatchEvent};
use crate::util::fswatch::{Change, DirWatcher, Mode};

/// How often the stop flag is looked at while waiting.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// Changes under the watched folder.
pub struct Changes {
    watcher: DirWatcher,
    events: Receiver<Change>,
}

impl Changes {
    /// Starts noticing changes under `dir` (recursively).
    pub fn start(dir: &Path, interval: Duration, follow: Follow) -> Result<Self> {
        let (tx, events) = mpsc::channel();
        let sink = Arc::new(move |change| {
            let _ = tx.send(change);
        });
        let mut watcher = match follow {
            Follow::Notify => DirWatcher::new(interval, sink)?,
            Follow::Poll => DirWatcher::polling(interval, "asked for".into(), sink)?,
        };
        watcher.watch(dir, true)?;
        Ok(Self { watcher, events })
    }

    /// How changes are noticed.
    pub fn mode(&self) -> &Mode {
        self.watcher.mode()
    }

    /// Waits for a change under the folder, or until `deadline`; false when `stop` was set
    /// first. A failure of notifications switches to polling and is reported.
    pub fn wait(
        &mut self,
        deadline: Option<Instant>,
        stop: &AtomicBool,
        on_event: &mut impl FnMut(&WatchEvent),
    ) -> Result<bool> {
        loop {
            if stop.load(Ordering::SeqCst) {
                return Ok(false);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(true);
            }
            let slice = deadline.map_or(STOP_CHECK, |d| (d - now).min(STOP_CHECK));
            match self.events.recv_timeout(slice) {
                Ok(Change::Paths(_)) => {
                    // One round handles everything that arrived together.
                    while let Ok(change) = self.events.try_recv() {
                        if let Change::Failed(reason) = change {
                            self.fall_back(reason, on_event)?;
                        }
                    }
                    return Ok(true);
                }
                Ok(Change::Failed(reason)) => self.fall_back(reason, on_event)?,
                Err(RecvTimeoutError::Timeout) => {}
                // The watcher holds the sender for as long as it lives, and so do we.
                Err(RecvTimeoutError::Disconnected) => std::thread::sleep(slice),
            }
        }
    }

    fn fall_back(&mut self, reason: String, on_event: &mut impl FnMut(&WatchEvent)) -> Result<()> {
        if matches!(self.mode(), Mode::Notify) {
            self.watcher
                .fall_back(format!("notifications failed: {reason}"))?;
            on_event(&WatchEvent::Following(self.mode().clone()));
        }
        Ok(())
    }
}
