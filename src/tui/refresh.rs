//! Reading run directories off the loop: a worker thread owns its own [`RunReader`]s, reads
//! what a [`RefreshRequest`] names and sends back copies of the readers that changed; the App
//! swaps them in. Drawing never waits on a file.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use super::app::{App, RunEntry, Tab};
use crate::run::reader::RunReader;
use crate::run::{list_runs, RunDir};

/// What to read: the attached run, and (with `scan`) every run under `root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRequest {
    pub attached: Option<PathBuf>,
    pub root: PathBuf,
    pub scan: bool,
}

/// What changed since the last request.
#[derive(Clone, Default)]
pub struct RefreshUpdate {
    /// The attached run's reader, when it changed.
    pub attached: Option<RunReader>,
    /// After a scan: what the scan found.
    pub runs: Option<Scan>,
}

/// What a scan of the runs folder found.
#[derive(Clone)]
pub struct Scan {
    pub root: PathBuf,
    /// Every run there.
    pub paths: Vec<PathBuf>,
    /// The entries that changed.
    pub changed: Vec<(PathBuf, RunEntry)>,
}

impl RefreshUpdate {
    /// Whether anything changed.
    pub fn is_empty(&self) -> bool {
        self.attached.is_none() && self.runs.as_ref().is_none_or(|s| s.changed.is_empty())
    }
}

/// The worker reading run directories.
pub struct Refresher {
    requests: mpsc::Sender<RefreshRequest>,
}

impl Refresher {
    /// Starts the worker; each request is answered through `reply`.
    pub fn start(reply: impl Fn(RefreshUpdate) + Send + 'static) -> Self {
        let (requests, rx) = mpsc::channel::<RefreshRequest>();
        std::thread::spawn(move || {
            let mut worker = Worker::default();
            while let Ok(request) = rx.recv() {
                reply(worker.serve(&request));
            }
        });
        Self { requests }
    }

    /// Asks for a read; false when the worker is gone.
    pub fn request(&self, request: RefreshRequest) -> bool {
        self.requests.send(request).is_ok()
    }
}

#[derive(Default)]
struct Worker {
    readers: HashMap<PathBuf, (RunReader, String)>,
}

impl Worker {
    fn serve(&mut self, request: &RefreshRequest) -> RefreshUpdate {
        let mut update = RefreshUpdate::default();
        let mut changed = BTreeSet::new();
        if let Some(path) = &request.attached {
            if self.read(path, None) {
                changed.insert(path.clone());
            }
            update.attached = self.readers.get(path).map(|(r, _)| r.clone());
            if !changed.contains(path) {
                update.attached = None;
            }
        }
        if request.scan {
            let dirs = list_runs(&request.root);
            let paths: Vec<PathBuf> = dirs.iter().map(|d| d.path().to_path_buf()).collect();
            let mut entries = Vec::new();
            for dir in dirs {
                let path = dir.path().to_path_buf();
                if changed.contains(&path) || self.read(&path, Some(dir)) {
                    let (reader, recipe) = &self.readers[&path];
                    entries.push((
                        path,
                        RunEntry {
                            reader: reader.clone(),
                            recipe: recipe.clone(),
                        },
                    ));
                }
            }
            self.readers
                .retain(|p, _| paths.contains(p) || request.attached.as_ref() == Some(p));
            update.runs = Some(Scan {
                root: request.root.clone(),
                paths,
                changed: entries,
            });
        }
        update
    }

    /// Reads `path` (opening a reader on first sight); true when something changed.
    fn read(&mut self, path: &Path, dir: Option<RunDir>) -> bool {
        let fresh = !self.readers.contains_key(path);
        if fresh {
            let Some(dir) = dir.or_else(|| RunDir::open(path).ok()) else {
                return false;
            };
            let recipe = dir.read_recipe().map(|r| r.name).unwrap_or_default();
            self.readers
                .insert(path.to_path_buf(), (RunReader::new(dir), recipe));
        }
        let (reader, _) = self.readers.get_mut(path).expect("inserted above");
        reader.refresh() || fresh
    }
}

impl App {
    /// What the next background read should cover: the attached run, and every run when a
    /// pane lists them (or they were never listed).
    pub fn refresh_request(&self) -> RefreshRequest {
        RefreshRequest {
            attached: self.attached.as_ref().map(|r| r.run().path().to_path_buf()),
            root: self.runs_root.clone(),
            scan: matches!(self.tab, Tab::Runs | Tab::Compare) || self.last_scan.is_none(),
        }
    }

    /// Swaps in what a background read found; returns whether anything visible changed.
    pub fn apply_refresh(&mut self, update: RefreshUpdate) -> bool {
        let mut changed = false;
        if let Some(reader) = update.attached {
            let current = self.attached.as_ref().map(|r| r.run().path());
            if current == Some(reader.run().path()) {
                self.attached = Some(reader);
                changed = true;
            }
        }
        if let Some(Scan {
            root,
            paths,
            changed: entries,
        }) = update.runs
        {
            if root == self.runs_root {
                self.last_scan = Some(Instant::now());
                let before = self.runs.len();
                self.runs.retain(|path, _| paths.contains(path));
                changed |= before != self.runs.len() || !entries.is_empty();
                self.runs.extend(entries);
            }
        }
        changed
    }
}
