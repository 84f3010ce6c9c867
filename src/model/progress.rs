//! Download progress of hub files. The library never draws progress itself: a front end installs
//! a [`DownloadProgress`] sink (the CLI an indicatif bar, the workbench its status line) and
//! every hub download reports to it, one file at a time. Without a sink downloads are silent.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use anyhow::Result;

/// Receives the progress of hub downloads.
pub trait DownloadProgress: Send + Sync {
    /// A download of `file`, `bytes` long, starts.
    fn started(&self, file: &str, bytes: usize);
    /// `bytes` more of `file` arrived.
    fn advanced(&self, file: &str, bytes: usize);
    /// `file` is complete.
    fn finished(&self, file: &str);
}

static SINK: RwLock<Option<Arc<dyn DownloadProgress>>> = RwLock::new(None);

/// Installs the process-wide progress sink (or removes it with `None`); returns the previous one.
pub fn set_download_progress(
    sink: Option<Arc<dyn DownloadProgress>>,
) -> Option<Arc<dyn DownloadProgress>> {
    let mut slot = SINK.write().unwrap_or_else(|e| e.into_inner());
    std::mem::replace(&mut *slot, sink)
}

/// The installed progress sink, if any.
pub fn download_progress() -> Option<Arc<dyn DownloadProgress>> {
    SINK.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// hf-hub's progress callbacks, forwarded to a sink.
pub struct Reporter {
    sink: Option<Arc<dyn DownloadProgress>>,
    file: String,
}

impl Reporter {
    /// A reporter for one file, to `sink`.
    pub fn new(sink: Option<Arc<dyn DownloadProgress>>) -> Self {
        Self {
            sink,
            file: String::new(),
        }
    }
}

impl hf_hub::api::Progress for Reporter {
    fn init(&mut self, size: usize, filename: &str) {
        self.file = filename.to_string();
        if let Some(sink) = &self.sink {
            sink.started(filename, size);
        }
    }

    fn update(&mut self, size: usize) {
        if let Some(sink) = &self.sink {
            sink.advanced(&self.file, size);
        }
    }

    fn finish(&mut self) {
        if let Some(sink) = &self.sink {
            sink.finished(&self.file);
        }
    }
}

/// One repository's files: found in the local cache, or downloaded with progress.
pub trait FileFetcher {
    /// The file when the cache already has it.
    fn cached(&self, name: &str) -> Option<PathBuf>;
    /// Downloads the file, reporting to `progress`.
    fn download(&self, name: &str, progress: Reporter) -> Result<PathBuf>;
}

/// Gets `name` from the cache, else downloads it reporting to `sink`.
pub fn fetch(
    fetcher: &dyn FileFetcher,
    name: &str,
    sink: &Option<Arc<dyn DownloadProgress>>,
) -> Result<PathBuf> {
    match fetcher.cached(name) {
        Some(path) => Ok(path),
        None => fetcher.download(name, Reporter::new(sink.clone())),
    }
}
