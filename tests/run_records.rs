//! The run directory's contract: `metrics.jsonl` records (old files still read, unknown kinds and
//! torn lines are skipped), one writer per run (the lock), and each step once after a resume.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::TinyModel;
use tunescope::model::Architecture;
use tunescope::recipe::Recipe;
use tunescope::run::reader::RunReader;
use tunescope::run::record::{parse_line, Line};
use tunescope::run::{Record, RecordLog, RunDir, RunLock, RunState, FORMAT_VERSION};
use tunescope::train::{run_training, TrainControl, TrainEvent};

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/metrics-v0")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn kinds(log: &RecordLog) -> Vec<&'static str> {
    log.iter().map(Record::kind).collect()
}

fn steps_of(log: &RecordLog, kind: &str) -> Vec<usize> {
    log.iter()
        .filter(|r| r.kind() == kind)
        .filter_map(Record::step)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Records

/// Lines written by the trainer before records were typed (version 0, no header) still parse,
/// every one of them, with their values.
#[test]
fn version_0_training_records_still_read() {
    let text = fixture("train.jsonl");
    let log = RecordLog::parse(&text);
    assert_eq!(log.version, None, "a version-0 file has no header");
    assert_eq!((log.unknown, log.malformed), (0, 0), "{log:?}");
    assert_eq!(log.records.len(), text.lines().count());
    assert_eq!(steps_of(&log, "train"), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(steps_of(&log, "probe"), vec![0, 3, 6]);
    assert_eq!(steps_of(&log, "eval"), vec![0, 3, 6]);
    assert_eq!(steps_of(&log, "layer_drift"), vec![0, 3, 6]);
    assert_eq!(steps_of(&log, "checkpoint"), vec![2, 3, 4, 6]);
    assert_eq!(steps_of(&log, "resume"), vec![3]);
    let k = kinds(&log);
    assert_eq!(k.first(), Some(&"start"));
    assert_eq!(k.last(), Some(&"finished"));
    assert!(k.contains(&"guard") && k.contains(&"stopped"), "{k:?}");

    for record in log.iter() {
        match record {
            Record::Start(s) => {
                assert_eq!((s.step, s.start_step, s.total_steps), (0, 0, 6));
                assert_eq!(s.examples, 24);
                assert!(s.trainable > 0 && s.trainable < s.total_params);
            }
            Record::Resume(s) => assert_eq!((s.step, s.start_step), (3, 3)),
            Record::Train(m) => {
                assert!(m.loss.is_finite() && m.loss > 0.0);
                assert!(m.lr >= 0.0 && m.tokens > 0 && m.total_steps == 6);
            }
            Record::Probe(p) => {
                let heldout = p.heldout.as_ref().expect("held-out summary");
                assert!(p.target.is_some());
                assert!(heldout.now.prompts > 0);
                if p.step == 0 {
                    assert!(heldout.divergence.kl.mean.abs() < 1e-6);
                }
            }
            Record::Eval(e) => {
                assert_eq!(e.tasks.len(), 2);
                assert_eq!(e.base.len(), 2);
                if e.step == 0 {
                    assert_eq!(e.delta_heldout, Some(0.0));
                }
            }
            Record::LayerDrift { layers, .. } => assert!(!layers.is_empty()),
            Record::Guard { reason, .. } => assert!(reason.contains("numeric mass")),
            Record::Checkpoint { path, step } => {
                assert!(path.ends_with(format!("step-{step}")))
            }
            Record::Finished { final_dir, .. } => assert!(final_dir.ends_with("final")),
            _ => {}
        }
    }
}

#[test]
fn version_0_fault_and_watch_records_still_read() {
    let log = RecordLog::parse(&fixture("faults.jsonl"));
    assert_eq!((log.unknown, log.malformed), (0, 0), "{log:?}");
    assert!(log.iter().any(|r| matches!(r,
        Record::CheckpointFailed { step: 1, error } if error.contains("step 1"))));
    assert!(log
        .iter()
        .any(|r| matches!(r, Record::Failed { reason, .. } if reason.contains("loss is"))));

    let log = RecordLog::parse(&fixture("watch.jsonl"));
    assert_eq!((log.unknown, log.malformed), (0, 0), "{log:?}");
    assert_eq!(
        kinds(&log).first().copied(),
        Some("watch_start"),
        "{:?}",
        kinds(&log)
    );
    let watches: Vec<_> = log
        .iter()
        .filter_map(|r| match r {
            Record::Watch(w) => Some(w),
            _ => None,
        })
        .collect();
    assert_eq!(watches.len(), 2);
    assert_eq!((watches[0].step, watches[0].base), (0, Some(true)));
    assert_eq!((watches[1].step, watches[1].base), (6, Some(false)));
    assert!(watches[1].weights.as_ref().is_some_and(|w| w.len() == 1));
    assert!(log.iter().any(
        |r| matches!(r, Record::Guard { note: Some(n), .. } if n.contains("nothing is stopped"))
    ));
    assert_eq!(kinds(&log).last().copied(), Some("stopped"));
}

/// The views' reader builds the same picture from an old file as from a new one.
#[test]
fn the_reader_reads_an_old_run_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let run = RunDir::open_or_init(tmp.path()).unwrap();
    std::fs::write(run.metrics_path(), fixture("train.jsonl")).unwrap();
    let mut reader = RunReader::new(run);
    assert!(reader.refresh());
    let s = reader.snapshot();
    assert_eq!(
        s.loss.iter().map(|(x, _)| *x as usize).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6]
    );
    assert_eq!(s.probes.len(), 3);
    assert_eq!(s.eval_step, Some(6));
    assert_eq!(s.scores.len(), 2);
    assert!(!s.layer_drift.is_empty());
    assert_eq!(s.guard_messages.len(), 3);
    assert!(s.trainable.is_some() && s.elapsed.is_some());
    assert_eq!(s.last_event.as_deref(), Some("finished at step 6"));
    assert_eq!(reader.unknown_records(), 0);
}

/// New files start with a header; records of unknown kinds are skipped and counted, never a
/// panic; a torn last line is ignored until it is complete.
#[test]
fn unknown_kinds_and_torn_lines_are_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let run = RunDir::open_or_init(tmp.path()).unwrap();
    run.append(&Record::Stopped { step: 1 }).unwrap();
    let first = std::fs::read_to_string(run.metrics_path()).unwrap();
    assert_eq!(
        first.lines().next().unwrap(),
        format!("{{\"kind\":\"header\",\"v\":{FORMAT_VERSION}}}")
    );
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(run.metrics_path())
        .unwrap();
    use std::io::Write;
    write!(
        file,
        "{{\"kind\":\"hologram\",\"step\":2,\"x\":[1]}}\nnot json\n{{\"kind\":\"stopped\",\"step\":3}}\n{{\"kind\":\"train\",\"step\":4,\"lo"
    )
    .unwrap();
    let log = run.read_records().unwrap();
    assert_eq!(log.version, Some(FORMAT_VERSION));
    assert_eq!((log.unknown, log.malformed), (1, 1));
    assert_eq!(kinds(&log), vec!["stopped", "stopped"]);
    assert_eq!(parse_line("{\"kind\":\"hologram\"}"), Line::Unknown);
    assert_eq!(
        parse_line("{\"kind\":\"train\",\"step\":4}"),
        Line::Malformed
    );

    let mut reader = RunReader::new(run.clone());
    reader.refresh();
    assert_eq!(reader.unknown_records(), 1);
    assert_eq!(
        reader.snapshot().last_event.as_deref(),
        Some("stopped at step 3")
    );
}

// ---------------------------------------------------------------------------------------------
// The lock

#[test]
fn a_held_lock_refuses_a_second_writer_naming_the_pid() {
    let tmp = tempfile::tempdir().unwrap();
    let run = RunDir::open_or_init(tmp.path()).unwrap();
    let held = run.lock().unwrap();
    let error = format!("{:#}", run.lock().unwrap_err());
    assert!(
        error.contains(&format!("process {}", std::process::id())),
        "{error}"
    );
    drop(held);
    run.lock().expect("free again once released");
}

#[test]
fn a_lock_left_by_a_dead_process_is_taken_over() {
    let tmp = tempfile::tempdir().unwrap();
    let run = RunDir::open_or_init(tmp.path()).unwrap();
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    std::fs::write(run.lock_path(), format!("{dead}\n")).unwrap();
    let lock = RunLock::acquire(&run.lock_path()).expect("a dead holder does not block");
    assert_eq!(
        std::fs::read_to_string(lock.path()).unwrap().trim(),
        std::process::id().to_string()
    );
}

/// 24 short counting examples.
fn write_data(dir: &Path) -> PathBuf {
    let line =
        serde_json::json!({"prompt": "how many apple : apple apple", "response": "2"}).to_string();
    let path = dir.join("data.jsonl");
    std::fs::write(&path, format!("{line}\n").repeat(24)).unwrap();
    path
}

fn recipe(tiny: &TinyModel, dir: &Path) -> Recipe {
    Recipe {
        name: "contract".into(),
        model: Some(tiny.spec_str()),
        data: Some(write_data(dir).to_string_lossy().into_owned()),
        max_steps: Some(6),
        batch_size: 4,
        checkpoint_every: 2,
        trainable: tunescope::select::preset("sa-proj").unwrap(),
        output_dir: dir.join("runs").to_string_lossy().into_owned(),
        ..Recipe::default()
    }
}

/// Training, resuming or watching a run another live process writes is refused before anything
/// is written; the trainer releases the lock when it ends, on success or error.
#[test]
fn a_live_run_is_not_trained_resumed_or_watched_twice() {
    let tiny = TinyModel::new(Architecture::Qwen2, 3);
    let tmp = tempfile::tempdir().unwrap();
    let recipe = recipe(&tiny, tmp.path());
    let run = RunDir::create(&tmp.path().join("runs"), "live").unwrap();
    run.write_recipe(&recipe).unwrap();
    let held = run.lock().unwrap();
    let pid = format!("process {}", std::process::id());

    let error = run_training(&recipe, &run, false, &TrainControl::default(), &mut |_| {})
        .expect_err("the lock is held");
    assert!(format!("{error:#}").contains(&pid), "{error:#}");
    assert!(!run.status_path().exists() && !run.metrics_path().exists());

    let bin = env!("CARGO_BIN_EXE_tunescope");
    for args in [
        vec![
            "train".into(),
            "--resume".into(),
            run.path().display().to_string(),
        ],
        vec![
            "train".into(),
            run.recipe_path().display().to_string(),
            "--run-dir".into(),
            run.path().display().to_string(),
        ],
    ] {
        let out = Command::new(bin).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should be refused");
        assert!(stderr.contains(&pid), "{args:?}: {stderr}");
    }
    assert!(!run.status_path().exists() && !run.metrics_path().exists());

    drop(held);
    let outcome =
        run_training(&recipe, &run, false, &TrainControl::default(), &mut |_| {}).unwrap();
    assert_eq!(outcome.state, RunState::Finished);
    run.lock().expect("released after a finished run");
    let mut bad = recipe.clone();
    bad.data = Some("/nonexistent/data.jsonl".into());
    run_training(&bad, &run, true, &TrainControl::default(), &mut |_| {}).unwrap_err();
    run.lock().expect("released after a failed run");
}

// ---------------------------------------------------------------------------------------------
// Resume: each step once

/// A run dies after step 5 with its newest checkpoint at step 4 (simulated: it stops at 5 and
/// the step-5 checkpoint is removed, as if the process had been killed before writing it).
/// Resuming trains step 5 again; `metrics.jsonl` then holds every step once.
#[test]
fn resume_after_a_crash_records_each_step_once() {
    let tiny = TinyModel::new(Architecture::Qwen2, 4);
    let tmp = tempfile::tempdir().unwrap();
    let recipe = recipe(&tiny, tmp.path());
    let run = RunDir::create(&tmp.path().join("runs"), "crash").unwrap();
    run.write_recipe(&recipe).unwrap();
    let control = TrainControl::default();
    let outcome = run_training(&recipe, &run, false, &control, &mut |e| {
        if matches!(e, TrainEvent::Step(m) if m.step == 5) {
            control.request_stop();
        }
    })
    .unwrap();
    assert_eq!((outcome.state, outcome.step), (RunState::Stopped, 5));
    std::fs::remove_dir_all(run.checkpoint_dir(5)).unwrap();
    assert_eq!(run.latest_checkpoint(), Some(4));
    // A torn line from the killed writer.
    let mut text = std::fs::read_to_string(run.metrics_path()).unwrap();
    text.push_str("{\"kind\":\"train\",\"st");
    std::fs::write(run.metrics_path(), text).unwrap();

    let mut reader = RunReader::new(run.clone());
    reader.refresh();
    let outcome = run_training(&recipe, &run, true, &TrainControl::default(), &mut |_| {}).unwrap();
    assert_eq!(outcome.state, RunState::Finished);

    let log = run.read_records().unwrap();
    assert_eq!((log.unknown, log.malformed), (0, 0));
    assert_eq!(steps_of(&log, "train"), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(steps_of(&log, "checkpoint"), vec![2, 4, 6]);
    assert_eq!(steps_of(&log, "resume"), vec![4]);
    assert!(steps_of(&log, "stopped").is_empty(), "{:?}", kinds(&log));
    assert_eq!(log.version, Some(FORMAT_VERSION));

    // A reader that followed the run before the resume sees the rewritten file from the start.
    reader.refresh();
    let loss_steps: Vec<f64> = reader.snapshot().loss.iter().map(|(x, _)| *x).collect();
    assert_eq!(loss_steps, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
}
