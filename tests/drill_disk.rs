//! Drill: a full disk, simulated with `RLIMIT_FSIZE` (SIGXFSZ ignored, so writes past the limit
//! fail with EFBIG), during checkpoint and model-export writes of the real binary. The process
//! reports a clear error, the previous checkpoint stays intact and loadable, nothing
//! half-written is left under a final name or as a temporary, and `--resume` afterwards gives
//! the uninterrupted run's model.
#![cfg(unix)]

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use candle_core::Device;
use common::TinyModel;
use tunescope::model::Architecture;
use tunescope::recipe::Recipe;
use tunescope::run::{Record, RunDir, RunState};
use tunescope::train::{run_training, TrainControl, TrainEvent};

/// 24 short counting examples.
fn write_data(dir: &Path) -> PathBuf {
    let line =
        serde_json::json!({"prompt": "how many apple : apple apple", "response": "2"}).to_string();
    let path = dir.join("data.jsonl");
    std::fs::write(&path, format!("{line}\n").repeat(24)).unwrap();
    path
}

/// Every file under `dir` with its bytes, by path relative to `dir`.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                files.insert(path.strip_prefix(dir).unwrap().to_path_buf(), bytes);
            }
        }
    }
    files
}

/// Temporaries (`.NAME.tmp-PID`, `.step-N.tmp`) anywhere under `dir`.
fn temporaries(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if entry.file_name().to_string_lossy().contains(".tmp") {
                found.push(path.clone());
            }
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
    found
}

/// `tunescope train --resume RUN` with files limited to `limit` bytes.
fn resume_with_file_limit(run: &RunDir, limit: Option<u64>) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tunescope"));
    cmd.arg("train")
        .arg("--resume")
        .arg(run.path())
        .arg("--plain");
    if let Some(limit) = limit {
        // SAFETY: only async-signal-safe calls (setrlimit, signal) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let rlim = libc::rlimit {
                    rlim_cur: limit as libc::rlim_t,
                    rlim_max: limit as libc::rlim_t,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &rlim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                Ok(())
            });
        }
    }
    cmd.output().unwrap()
}

#[test]
fn a_full_disk_during_checkpoint_and_export_keeps_the_previous_checkpoint() {
    let started = Instant::now();
    let tiny = TinyModel::new(Architecture::Qwen2, 23);
    let tmp = tempfile::tempdir().unwrap();
    let recipe = Recipe {
        name: "disk".into(),
        model: Some(tiny.spec_str()),
        data: Some(write_data(tmp.path()).to_string_lossy().into_owned()),
        max_steps: Some(6),
        batch_size: 4,
        checkpoint_every: 2,
        trainable: tunescope::select::preset("sa-proj").unwrap(),
        ..Recipe::default()
    };
    let root = tmp.path().join("runs");

    // The uninterrupted run, for the model the drilled one must end with.
    let reference = RunDir::create(&root, "reference").unwrap();
    reference.write_recipe(&recipe).unwrap();
    let outcome = run_training(
        &recipe,
        &reference,
        false,
        &TrainControl::default(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(outcome.state, RunState::Finished);

    // The drilled run stops after step 2 with its checkpoint written.
    let run = RunDir::create(&root, "drilled").unwrap();
    run.write_recipe(&recipe).unwrap();
    let control = TrainControl::default();
    let outcome = run_training(&recipe, &run, false, &control, &mut |e| {
        if matches!(e, TrainEvent::Step(m) if m.step == 2) {
            control.request_stop();
        }
    })
    .unwrap();
    assert_eq!((outcome.state, outcome.step), (RunState::Stopped, 2));
    let step_2 = snapshot(&run.checkpoint_dir(2));
    let smallest_checkpoint_file = step_2
        .iter()
        .filter(|(name, _)| name.extension().is_some_and(|e| e == "safetensors"))
        .map(|(_, bytes)| bytes.len() as u64)
        .min()
        .unwrap();
    let metrics_len = std::fs::metadata(run.metrics_path()).unwrap().len();
    // Room for the records of the remaining steps, none for a tensor file.
    let limit = smallest_checkpoint_file / 2;
    assert!(
        limit > 4 * metrics_len,
        "the limit {limit} must leave metrics.jsonl ({metrics_len} bytes) room to grow"
    );

    // Resumed on a "full disk": the checkpoints of steps 4 and 6 and the export fail.
    let out = resume_with_file_limit(&run, Some(limit));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert_eq!(
        out.status.code(),
        Some(1),
        "an error exit, not a signal: {stderr}"
    );
    for needle in [
        "checkpoint at step 4 failed",
        "checkpoint at step 6 failed",
        "previous one is intact",
        "cannot export the model to",
        "File too large",
    ] {
        assert!(
            stderr.contains(needle),
            "stderr lacks {needle:?}:\n{stderr}"
        );
    }
    assert_eq!(run.checkpoint_steps(), [2]);
    assert_eq!(
        snapshot(&run.checkpoint_dir(2)),
        step_2,
        "the previous checkpoint is byte for byte what was written"
    );
    let ckpt = run.load_checkpoint(2, &Device::Cpu).unwrap();
    assert_eq!(ckpt.state.step, 2);
    assert!(!run.final_dir().exists(), "no half-written final/");
    assert_eq!(temporaries(run.path()), Vec::<PathBuf>::new());
    let status = run.read_status().unwrap();
    assert_eq!(status.state, RunState::Failed);
    assert_eq!(status.last_checkpoint, Some(2));
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("cannot export")),
        "{status:?}"
    );
    let log = run.read_records().unwrap();
    assert_eq!((log.malformed, log.torn), (0, 0));
    let failed: Vec<usize> = log
        .iter()
        .filter_map(|r| match r {
            Record::CheckpointFailed { step, .. } => Some(*step),
            _ => None,
        })
        .collect();
    assert_eq!(failed, [4, 6]);

    // Disk space back: the resume starts from step 2 again and ends with the reference model.
    let out = resume_with_file_limit(&run, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(run.read_status().unwrap().state, RunState::Finished);
    assert_eq!(temporaries(run.path()), Vec::<PathBuf>::new());
    let log = run.read_records().unwrap();
    let steps: Vec<usize> = log
        .iter()
        .filter_map(|r| match r {
            Record::Train(m) => Some(m.step),
            _ => None,
        })
        .collect();
    assert_eq!(steps, [1, 2, 3, 4, 5, 6]);
    assert!(
        std::fs::read(run.final_dir().join("model.safetensors")).unwrap()
            == std::fs::read(reference.final_dir().join("model.safetensors")).unwrap(),
        "the model after the full disk and a resume equals the uninterrupted run's"
    );

    eprintln!(
        "disk drill: survived 2 failed checkpoint writes and 1 failed export at a {limit}-byte \
         file limit; step-2 checkpoint intact, resume bit-identical ({:.1}s)",
        started.elapsed().as_secs_f64()
    );
}
