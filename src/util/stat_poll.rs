//! A polling watcher that compares each file's size, modification time and inode between
//! rounds. notify's own `PollWatcher` compares modification times only, and a coarse
//! filesystem clock (a few milliseconds on Linux, seconds elsewhere) can leave an append within
//! the same tick unnoticed forever; a growing file always changes size, and an atomic rewrite
//! always changes inode.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// What is compared between rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

/// Where the changed paths of a round go.
pub type PathSink = Arc<dyn Fn(Vec<PathBuf>) + Send + Sync>;

/// Roots polled, each recursive or not, with what was seen under it last round.
type Roots = Arc<Mutex<Vec<(PathBuf, bool)>>>;

/// Polls watched roots on a thread of its own; dropping it ends the thread.
pub struct StatPoller {
    roots: Roots,
    stop: Arc<AtomicBool>,
}

impl StatPoller {
    /// Polls every `every`, sending the changed paths of a round to `sink`.
    pub fn start(every: Duration, sink: PathSink) -> Self {
        let roots: Roots = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (thread_roots, thread_stop) = (roots.clone(), stop.clone());
        std::thread::spawn(move || {
            // The first round reports what the roots watched so far hold, as new, like the
            // round after any later `watch`: skipping it would lose a change made between a
            // `watch` and the thread's first scan.
            let mut seen: HashMap<PathBuf, Stamp> = HashMap::new();
            while !thread_stop.load(Ordering::SeqCst) {
                let now = scan(&thread_roots.lock().map(|r| r.clone()).unwrap_or_default());
                let changed = differences(&seen, &now);
                if !changed.is_empty() {
                    sink(changed);
                }
                seen = now;
                std::thread::sleep(every);
            }
        });
        Self { roots, stop }
    }

    /// Adds `path` (with everything below it when `recursive`); the next round reports what is
    /// already there once, as new.
    pub fn watch(&self, path: &Path, recursive: bool) {
        if let Ok(mut roots) = self.roots.lock() {
            roots.push((path.to_path_buf(), recursive));
        }
    }

    /// Stops polling `path`.
    pub fn unwatch(&self, path: &Path) {
        if let Ok(mut roots) = self.roots.lock() {
            roots.retain(|(p, _)| p != path);
        }
    }
}

impl Drop for StatPoller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The stamps of every file and folder under the roots.
fn scan(roots: &[(PathBuf, bool)]) -> HashMap<PathBuf, Stamp> {
    let mut found = HashMap::new();
    for (root, recursive) in roots {
        visit(root, *recursive, true, &mut found);
    }
    found
}

fn visit(path: &Path, recursive: bool, top: bool, found: &mut HashMap<PathBuf, Stamp>) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    found.insert(path.to_path_buf(), stamp(&meta));
    if meta.is_dir() && (top || recursive) {
        let Ok(entries) = std::fs::read_dir(path) else {
            return;
        };
        for entry in entries.flatten() {
            visit(&entry.path(), recursive, false, found);
        }
    }
}

fn stamp(meta: &std::fs::Metadata) -> Stamp {
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(meta);
    #[cfg(not(unix))]
    let inode = 0;
    Stamp {
        len: meta.len(),
        modified: meta.modified().ok(),
        inode,
    }
}

/// Paths created, changed or removed between two rounds, sorted.
fn differences(before: &HashMap<PathBuf, Stamp>, now: &HashMap<PathBuf, Stamp>) -> Vec<PathBuf> {
    let mut changed: Vec<PathBuf> = now
        .iter()
        .filter(|(path, stamp)| before.get(*path) != Some(stamp))
        .map(|(path, _)| path.clone())
        .chain(
            before
                .keys()
                .filter(|path| !now.contains_key(*path))
                .cloned(),
        )
        .collect();
    changed.sort();
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_append_within_one_clock_tick_is_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("metrics.jsonl");
        std::fs::write(&file, "a\n").unwrap();
        let roots = vec![(dir.path().to_path_buf(), true)];
        let before = scan(&roots);
        // Same modification time forced back: only the size tells.
        let modified = std::fs::metadata(&file).unwrap().modified().unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"b\n"))
            .unwrap();
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(modified)
            .unwrap();
        let after = scan(&roots);
        assert_eq!(differences(&before, &after), vec![file.clone()]);
        std::fs::remove_file(&file).unwrap();
        assert!(differences(&after, &scan(&roots)).contains(&file));
    }
}
