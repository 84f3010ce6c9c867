//! Faults during training: a numeric blow-up fails the run but keeps the last good checkpoint,
//! a stop request checkpoints and stops, a checkpoint write that fails leaves the previous one
//! intact and training goes on, and `tunescope runs` reports each outcome.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::Device;
use common::TinyModel;
use serde_json::Value;
use tunescope::model::Architecture;
use tunescope::recipe::{Recipe, ScheduleKind, ScheduleSpec};
use tunescope::run::{RunDir, RunState};
use tunescope::train::{run_training, TrainControl, TrainEvent, TrainOutcome};

/// 24 short counting examples.
fn write_data(dir: &Path) -> PathBuf {
    let line =
        serde_json::json!({"prompt": "how many apple : apple apple", "response": "2"}).to_string();
    let path = dir.join("data.jsonl");
    std::fs::write(&path, format!("{line}\n").repeat(24)).unwrap();
    path
}

/// A model, a data file and a runs root, kept alive together.
struct Fixture {
    tiny: TinyModel,
    dir: tempfile::TempDir,
    data: PathBuf,
}

impl Fixture {
    fn new(seed: u64) -> Self {
        let tiny = TinyModel::new(Architecture::Qwen2, seed);
        let dir = tempfile::tempdir().unwrap();
        let data = write_data(dir.path());
        Self { tiny, dir, data }
    }

    fn runs_root(&self) -> PathBuf {
        self.dir.path().join("runs")
    }

    /// Six steps of sa-proj, batch 4.
    fn recipe(&self, name: &str) -> Recipe {
        Recipe {
            name: name.into(),
            model: Some(self.tiny.spec_str()),
            data: Some(self.data.to_string_lossy().into_owned()),
            max_steps: Some(6),
            batch_size: 4,
            trainable: tunescope::select::preset("sa-proj").unwrap(),
            ..Recipe::default()
        }
    }
}

/// Creates a run directory for `recipe` under `root` and trains it, collecting the events.
fn train(
    root: &Path,
    recipe: &Recipe,
    before: impl FnOnce(&RunDir),
    mut on_event: impl FnMut(&RunDir, &TrainControl, &TrainEvent),
) -> (RunDir, TrainOutcome, Vec<TrainEvent>) {
    let run = RunDir::create(root, &recipe.name).unwrap();
    run.write_recipe(recipe).unwrap();
    before(&run);
    let control = TrainControl::default();
    let mut events = Vec::new();
    let outcome = run_training(recipe, &run, false, &control, &mut |event| {
        on_event(&run, &control, event);
        events.push(event.clone());
    })
    .expect("a fault during training is an outcome, not an error");
    (run, outcome, events)
}

fn records(run: &RunDir, kind: &str) -> Vec<Value> {
    run.read_metrics()
        .unwrap()
        .into_iter()
        .filter(|m| m["kind"] == kind)
        .collect()
}

/// Every file of a checkpoint directory with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// A learning rate so large that the first update blows the weights up and the next step's
/// loss is not finite.
fn exploding(fixture: &Fixture) -> Recipe {
    let mut recipe = fixture.recipe("nan");
    recipe.optimizer.lr = 1e30;
    recipe.optimizer.max_grad_norm = None;
    recipe.schedule = ScheduleSpec {
        kind: ScheduleKind::Constant,
        warmup_ratio: 0.0,
        warmup_steps: Some(0),
    };
    recipe.checkpoint_every = 1;
    recipe
}

fn run_exploding(fixture: &Fixture) -> (RunDir, TrainOutcome, Vec<TrainEvent>) {
    train(
        &fixture.runs_root(),
        &exploding(fixture),
        |_| {},
        |_, _, _| {},
    )
}

fn run_stopped(fixture: &Fixture) -> (RunDir, TrainOutcome, Vec<TrainEvent>) {
    train(
        &fixture.runs_root(),
        &fixture.recipe("stop"),
        |_| {},
        |_, control, event| {
            if matches!(event, TrainEvent::Step(m) if m.step == 2) {
                control.request_stop();
            }
        },
    )
}

/// Makes the checkpoint of step 4 fail to write: its temporary path is a plain file, which the
/// writer cannot clear away as a directory.
fn block_step_4(run: &RunDir) {
    std::fs::write(run.checkpoints_dir().join(".step-4.tmp"), b"in the way").unwrap();
}

#[test]
fn nan_loss_fails_the_run_and_keeps_the_last_good_checkpoint() {
    let fixture = Fixture::new(11);
    let (run, outcome, events) = run_exploding(&fixture);

    assert_eq!(outcome.state, RunState::Failed, "{outcome:?}");
    let reason = outcome.reason.clone().expect("a failed run says why");
    let lower = reason.to_lowercase();
    assert!(
        (lower.contains("loss") || lower.contains("gradient"))
            && (lower.contains("nan") || lower.contains("inf")),
        "reason: {reason}"
    );

    // Steps completed before the failure, and the step that failed.
    let completed = events
        .iter()
        .filter(|e| matches!(e, TrainEvent::Step(_)))
        .count();
    assert!(completed >= 1, "the first step should complete: {events:?}");
    assert!(
        completed < 6,
        "the run should not reach the end: {events:?}"
    );
    let failed_step = completed + 1;
    assert!(
        matches!(events.last(), Some(TrainEvent::Failed { step, reason: r }) if *step == failed_step && *r == reason),
        "{events:?}"
    );
    assert!(!events
        .iter()
        .any(|e| matches!(e, TrainEvent::Finished { .. })));

    let status = run.read_status().unwrap();
    assert_eq!(status.state, RunState::Failed);
    assert_eq!(status.step, completed);
    assert_eq!(status.last_checkpoint, Some(completed));
    let last_error = status.last_error.expect("status.json records the reason");
    assert_eq!(last_error, reason);
    assert!(
        last_error.contains(&format!("at step {failed_step}")),
        "{last_error}"
    );

    let failed = records(&run, "failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["step"], failed_step);
    assert_eq!(failed[0]["reason"], reason.as_str());
    assert_eq!(records(&run, "train").len(), completed);
    assert!(!run.final_dir().exists(), "a failed run exports no model");

    // The checkpoint before the failure is on disk and loads, with finite values.
    assert_eq!(run.latest_checkpoint(), Some(completed));
    let ckpt = run.load_checkpoint(completed, &Device::Cpu).unwrap();
    assert_eq!(ckpt.state.step, completed);
    assert_eq!(ckpt.state.losses.len(), completed);
    assert!(ckpt.state.losses.iter().all(|l| l.is_finite()));
    assert_eq!(
        ckpt.trained.len(),
        4 * 2 + 3 * 2,
        "q k v o of 2 layers + 3 biases each"
    );
    for (name, tensor) in ckpt.trained.iter().chain(ckpt.optimizer.iter()) {
        let values: Vec<f32> = tensor.flatten_all().unwrap().to_vec1().unwrap();
        assert!(
            values.iter().all(|v| v.is_finite()),
            "{name} holds a non-finite value"
        );
    }
    // The failing step wrote no checkpoint of its own.
    assert!(!run.checkpoint_dir(failed_step).exists());
}

#[test]
fn stop_request_checkpoints_and_stops() {
    let fixture = Fixture::new(12);
    let (run, outcome, events) = run_stopped(&fixture);

    assert_eq!(outcome.state, RunState::Stopped, "{outcome:?}");
    assert_eq!(outcome.step, 2);
    assert_eq!(outcome.reason, None);
    let steps: Vec<usize> = events
        .iter()
        .filter_map(|e| match e {
            TrainEvent::Step(m) => Some(m.step),
            _ => None,
        })
        .collect();
    assert_eq!(steps, [1, 2]);
    assert!(matches!(
        events.last(),
        Some(TrainEvent::Stopped { step: 2 })
    ));
    assert!(events
        .iter()
        .any(|e| matches!(e, TrainEvent::Checkpoint { step: 2, .. })));

    let status = run.read_status().unwrap();
    assert_eq!(status.state, RunState::Stopped);
    assert_eq!(status.step, 2);
    assert_eq!(status.total_steps, 6);
    assert_eq!(status.last_checkpoint, Some(2));

    assert!(run.checkpoints_dir().join("step-2").is_dir());
    assert_eq!(run.checkpoint_steps(), [2]);
    let ckpt = run.load_checkpoint(2, &Device::Cpu).unwrap();
    assert_eq!(ckpt.state.step, 2);
    assert_eq!(ckpt.state.micro_batches, 2);
    let stopped = records(&run, "stopped");
    assert_eq!(stopped.len(), 1);
    assert_eq!(stopped[0]["step"], 2);
    assert!(!run.final_dir().exists());
}

#[test]
fn failed_checkpoint_write_keeps_the_previous_one_and_training_goes_on() {
    let fixture = Fixture::new(13);
    let mut recipe = fixture.recipe("ckptfail");
    recipe.checkpoint_every = 2;

    let mut step_2_files = None;
    let (run, outcome, events) = train(
        &fixture.runs_root(),
        &recipe,
        block_step_4,
        |run, _, event| {
            if let TrainEvent::Checkpoint { step: 2, path } = event {
                assert_eq!(path, &run.checkpoint_dir(2));
                step_2_files = Some(snapshot(path));
            }
        },
    );
    let step_2_files = step_2_files.expect("the step-2 checkpoint was written");
    assert_eq!(step_2_files.len(), 3, "{:?}", step_2_files.keys());

    assert_eq!(outcome.state, RunState::Finished, "{outcome:?}");
    assert_eq!(outcome.step, 6);
    let failed_event = events
        .iter()
        .find_map(|e| match e {
            TrainEvent::CheckpointFailed { step, error } => Some((*step, error.clone())),
            _ => None,
        })
        .expect("a CheckpointFailed event");
    assert_eq!(failed_event.0, 4);

    let failed = records(&run, "checkpoint_failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["step"], 4);
    let error = failed[0]["error"].as_str().unwrap();
    assert!(
        error.contains("step 4") && error.contains("previous one is intact"),
        "{error}"
    );
    assert_eq!(error, failed_event.1);

    // Steps 2 and 6 are on disk, step 4 is not, and step 2 is byte for byte what was written.
    assert_eq!(run.checkpoint_steps(), [2, 6]);
    assert!(!run.checkpoint_dir(4).exists());
    assert_eq!(snapshot(&run.checkpoint_dir(2)), step_2_files);
    assert_eq!(run.load_checkpoint(2, &Device::Cpu).unwrap().state.step, 2);
    let checkpoints: Vec<u64> = records(&run, "checkpoint")
        .iter()
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(checkpoints, [2, 6]);

    let status = run.read_status().unwrap();
    assert_eq!(status.state, RunState::Finished);
    assert_eq!(status.step, 6);
    assert_eq!(status.last_checkpoint, Some(6));
    assert!(run.final_dir().join("model.safetensors").is_file());
    assert_eq!(records(&run, "train").len(), 6);
}

#[test]
fn runs_command_lists_each_outcome() {
    let fixture = Fixture::new(14);
    let root = fixture.runs_root();
    let (failed, ..) = run_exploding(&fixture);
    let (stopped, ..) = run_stopped(&fixture);
    let (finished, outcome, _) = train(&root, &fixture.recipe("done"), |_| {}, |_, _, _| {});
    assert_eq!(outcome.state, RunState::Finished);

    let name = |run: &RunDir| {
        run.path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    let expected = [
        (name(&failed), "failed"),
        (name(&stopped), "stopped"),
        (name(&finished), "finished"),
    ];

    let root_arg = root.to_string_lossy().into_owned();
    let out = Command::new(env!("CARGO_BIN_EXE_tunescope"))
        .args(["runs", "--runs", &root_arg])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    for (run, state) in &expected {
        let row = table
            .lines()
            .find(|l| l.starts_with(run.as_str()))
            .unwrap_or_else(|| panic!("no row for {run} in:\n{table}"));
        assert!(
            row.split_whitespace().nth(1) == Some(state),
            "row for {run} should say {state}: {row}"
        );
    }
    assert!(table.contains("last error: "), "{table}");

    let out = Command::new(env!("CARGO_BIN_EXE_tunescope"))
        .args(["runs", "--runs", &root_arg, "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).expect("runs --json prints JSON");
    assert_eq!(rows.len(), 3, "{rows:?}");
    for (run, state) in &expected {
        let row = rows
            .iter()
            .find(|r| r["run"] == run.as_str())
            .unwrap_or_else(|| panic!("no row for {run} in {rows:?}"));
        assert_eq!(row["state"], *state, "{row}");
        assert_eq!(row["total_steps"], 6, "{row}");
    }
    let stopped_row = rows.iter().find(|r| r["state"] == "stopped").unwrap();
    assert_eq!(stopped_row["step"], 2);
    assert!(stopped_row["loss"].as_f64().is_some_and(f64::is_finite));
    let failed_row = rows.iter().find(|r| r["state"] == "failed").unwrap();
    assert!(failed_row["error"]
        .as_str()
        .is_some_and(|e| e.contains("is NaN") || e.contains("is inf")));
}
