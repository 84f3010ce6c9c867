//! Launching runs as detached worker processes (their own session, output in the run
//! directory), so closing the workbench or losing SSH never stops training; and stopping them
//! gracefully with SIGTERM (the worker finishes its step and checkpoints first).

use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::recipe::Recipe;
use crate::run::{RunDir, RunState};

/// Creates a run directory for `recipe` and starts `tunescope train` on it in the background.
/// The recipe is checked first (model, selection, data, probe and eval files), so a bad one
/// leaves no directory behind; the worker takes the run's lock, and refuses a run directory
/// another live process writes to. The worker's handle comes back too, for whoever waits on it
/// (the workbench's loop notices its exit that way).
pub fn launch_detached(recipe: &Recipe) -> Result<(RunDir, Child)> {
    recipe.validate()?;
    crate::train::check(recipe)?;
    let run = RunDir::create(Path::new(&recipe.output_dir), &recipe.name)?;
    run.write_recipe(recipe)?;
    let log = std::fs::File::create(run.log_path())
        .with_context(|| format!("cannot create {}", run.log_path().display()))?;
    let exe = std::env::current_exe().context("cannot find the tunescope executable")?;
    let mut command = Command::new(exe);
    command
        .arg("train")
        .arg(run.recipe_path())
        .arg("--run-dir")
        .arg(run.path())
        .arg("--plain")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    detach(&mut command);
    let child = command
        .spawn()
        .context("cannot start the training worker")?;
    Ok((run, child))
}

#[cfg(unix)]
fn detach(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(unix))]
fn detach(_command: &mut Command) {}

/// Asks a running run to stop: SIGTERM to its worker, which checkpoints and exits.
pub fn stop_run(run: &RunDir) -> Result<()> {
    let status = run.read_status()?;
    if status.state.is_terminal() {
        bail!("the run is already {}", status.state.as_str());
    }
    let Some(pid) = status.pid else {
        bail!("status.json names no worker process")
    };
    if status.state == RunState::Running || status.state == RunState::Created {
        signal_terminate(pid)?;
    }
    Ok(())
}

#[cfg(unix)]
fn signal_terminate(pid: u32) -> Result<()> {
    // SAFETY: kill has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    if rc != 0 {
        bail!(
            "cannot signal worker {pid}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn signal_terminate(pid: u32) -> Result<()> {
    bail!("stopping worker {pid} is only supported on Unix")
}
