//! Hub download progress, without a network: a fake repository serves a tiny model's files
//! through the same code path as the hub (cache first, else a download that reports through
//! hf-hub's progress callbacks); every file downloaded is reported start to finish with its
//! size, cached files are not, and the workbench's status line reads the same reports.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Result};
use common::TinyModel;
use hf_hub::api::Progress;
use tunescope::model::progress::{DownloadProgress, FileFetcher, Reporter};
use tunescope::model::source::download_files;
use tunescope::model::Architecture;
use tunescope::tui::loading::StatusProgress;

/// Serves files of `source`: those in `cached` straight away, the others "downloaded" into
/// `target` in 1000-byte chunks.
struct FakeRepo {
    source: PathBuf,
    target: PathBuf,
    cached: BTreeSet<&'static str>,
}

impl FileFetcher for FakeRepo {
    fn cached(&self, name: &str) -> Option<PathBuf> {
        self.cached.contains(name).then(|| {
            std::fs::copy(self.source.join(name), self.target.join(name)).unwrap();
            self.target.join(name)
        })
    }

    fn download(&self, name: &str, mut progress: Reporter) -> Result<PathBuf> {
        let from = self.source.join(name);
        if !from.is_file() {
            bail!("404: {name}");
        }
        let bytes = std::fs::read(&from)?;
        progress.init(bytes.len(), name);
        for chunk in bytes.chunks(1000) {
            progress.update(chunk.len());
        }
        progress.finish();
        std::fs::write(self.target.join(name), &bytes)?;
        Ok(self.target.join(name))
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Started(String, usize),
    Advanced(String, usize),
    Finished(String),
}

#[derive(Default)]
struct Recorder(Mutex<Vec<Seen>>);

impl DownloadProgress for Recorder {
    fn started(&self, file: &str, bytes: usize) {
        self.0
            .lock()
            .unwrap()
            .push(Seen::Started(file.into(), bytes));
    }
    fn advanced(&self, file: &str, bytes: usize) {
        self.0
            .lock()
            .unwrap()
            .push(Seen::Advanced(file.into(), bytes));
    }
    fn finished(&self, file: &str) {
        self.0.lock().unwrap().push(Seen::Finished(file.into()));
    }
}

fn size(path: &Path) -> usize {
    std::fs::metadata(path).unwrap().len() as usize
}

#[test]
fn downloads_report_their_progress_and_cached_files_do_not() {
    let tiny = TinyModel::new(Architecture::Qwen2, 3);
    let target = tempfile::tempdir().unwrap();
    let repo = FakeRepo {
        source: tiny.path().to_path_buf(),
        target: target.path().to_path_buf(),
        cached: ["tokenizer.json"].into(),
    };
    let recorder = Arc::new(Recorder::default());
    let sink: Option<Arc<dyn DownloadProgress>> = Some(recorder.clone());
    let files = download_files(&repo, &sink).unwrap();
    assert_eq!(files.dir, target.path());
    let seen = recorder.0.lock().unwrap().clone();
    let started: Vec<&str> = seen
        .iter()
        .filter_map(|s| match s {
            Seen::Started(f, _) => Some(f.as_str()),
            _ => None,
        })
        .collect();
    assert!(started.contains(&"config.json") && started.contains(&"model.safetensors"));
    assert!(
        !started.contains(&"tokenizer.json"),
        "a cached file is not downloaded"
    );
    for file in ["config.json", "model.safetensors"] {
        let total = size(&tiny.path().join(file));
        assert!(seen.contains(&Seen::Started(file.into(), total)));
        let advanced: usize = seen
            .iter()
            .filter_map(|s| match s {
                Seen::Advanced(f, n) if f == file => Some(*n),
                _ => None,
            })
            .sum();
        assert_eq!(advanced, total, "{file}: every byte reported");
        assert!(seen.contains(&Seen::Finished(file.into())));
    }
}

#[test]
fn the_status_line_reads_download_progress() {
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = {
        let lines = lines.clone();
        StatusProgress::new(move |line| lines.lock().unwrap().push(line))
    };
    sink.started("model.safetensors", 2_000_000);
    // Updates are sent at most every 100 ms: this one comes after more than that.
    std::thread::sleep(std::time::Duration::from_millis(150));
    sink.advanced("model.safetensors", 1_000_000);
    sink.finished("model.safetensors");
    let lines = lines.lock().unwrap().clone();
    assert!(
        lines[0].starts_with("downloading model.safetensors"),
        "{lines:?}"
    );
    assert!(lines[1].ends_with("(50%)"), "{lines:?}");
    assert_eq!(lines.last().unwrap(), "downloaded model.safetensors");
}
