//! One writer per run directory: the trainer (or `watch`) holds `lock` for as long as it writes.
//!
//! The lock is an advisory `flock` on the file `lock`, which also holds the holder's pid for
//! error messages. The kernel releases a `flock` when its process dies, so a lock left by a
//! killed process never blocks: the next writer takes it over. Where `flock` is unavailable
//! (non-Unix, or a file system without it) the pid in the file decides: a live pid blocks, a
//! dead one is taken over. Dropping the [`RunLock`] releases it, on success and on error.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::util::process::pid_alive;

/// The held lock of a run directory; released when dropped.
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock file at `path`, or fails naming the process that holds it.
    pub fn acquire(path: &Path) -> Result<Self> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        match try_flock(&file) {
            Flock::Taken => {}
            Flock::Busy => refuse(path, holder(&mut file))?,
            Flock::Unsupported => {
                // No kernel lock: a live pid in the file blocks (ours too: one writer per run).
                if let Some(pid) = holder(&mut file).filter(|p| pid_alive(*p)) {
                    refuse(path, Some(pid))?;
                }
            }
        }
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{}", std::process::id()))
            .and_then(|()| file.sync_all())
            .with_context(|| format!("cannot write the lock file {}", path.display()))?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Emptied, not removed: removing it would let a waiter lock the old, unlinked file while
        // a third process creates a new one. Closing the file releases the flock.
        let _ = self.file.set_len(0);
    }
}

/// The pid written in a lock file.
fn holder(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

fn refuse(path: &Path, pid: Option<u32>) -> Result<()> {
    let dir = path.parent().unwrap_or(path);
    match pid {
        Some(pid) => bail!(
            "{} is in use by process {pid}, which holds its lock file {}; wait for it to end or stop it \
             (tunescope ui, or kill {pid}) before writing to this run",
            dir.display(),
            path.display()
        ),
        None => bail!(
            "{} is in use by another process, which holds its lock file {}; wait for it to end or stop it",
            dir.display(),
            path.display()
        ),
    }
}

enum Flock {
    Taken,
    Busy,
    Unsupported,
}

#[cfg(unix)]
fn try_flock(file: &File) -> Flock {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock only reads the descriptor, which `file` keeps open.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Flock::Taken;
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EWOULDBLOCK) => Flock::Busy,
        _ => Flock::Unsupported,
    }
}

#[cfg(not(unix))]
fn try_flock(_file: &File) -> Flock {
    Flock::Unsupported
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_refuses_naming_the_pid_and_is_free_after_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let held = RunLock::acquire(&path).unwrap();
        let error = format!("{:#}", RunLock::acquire(&path).unwrap_err());
        assert!(
            error.contains(&format!("process {}", std::process::id())),
            "{error}"
        );
        drop(held);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        RunLock::acquire(&path).unwrap();
    }
}
