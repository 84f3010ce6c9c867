//! `tunescope watch`: checkpoints written by "another trainer" into a watched folder are probed
//! and evaluated in step order into a run directory, once each, across restarts; half-written
//! ones wait; the watched folder is never touched.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use common::TinyModel;
use serde_json::Value;
use tunescope::model::Architecture;
use tunescope::recipe::Recipe;
use tunescope::run::{RunDir, RunState};
use tunescope::watch::{watch_with, Follow, Mode, WatchEvent, WatchOptions};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A recipe with small probe and evaluation sections over the shipped assets.
fn write_recipe(dir: &Path, model: &Path) -> PathBuf {
    let assets = repo().join("assets");
    let a = |p: &str| assets.join(p).display().to_string();
    let text = format!(
        "name: watched\n\
         model: {model}\n\
         probe:\n  target: {target}\n  heldout: {heldout}\n  max_new_tokens: 4\n  max_prompts: 3\n  top_k: 5\n\
         eval:\n  tasks: [{counting}, {antonyms}, {category}]\n  max_items: 3\n",
        model = model.display(),
        target = a("probe/target.jsonl"),
        heldout = a("probe/heldout.jsonl"),
        counting = a("tasks/counting.yaml"),
        antonyms = a("tasks/antonyms.yaml"),
        category = a("tasks/category.yaml"),
    );
    let path = dir.join("watch.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// What another trainer leaves behind: config.json and model.safetensors (no tokenizer), with
/// every up_proj scaled by `scale`, plus a trainer file.
fn write_checkpoint(watched: &Path, base: &Path, step: usize, scale: f64) -> PathBuf {
    let dir = watched.join(format!("checkpoint-{step}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(base.join("config.json"), dir.join("config.json")).unwrap();
    let tensors =
        candle_core::safetensors::load(base.join("model.safetensors"), &Device::Cpu).unwrap();
    let scaled: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(name, t)| {
            let t = if name.contains("up_proj") {
                (t * scale).unwrap()
            } else {
                t
            };
            (name, t)
        })
        .collect();
    candle_core::safetensors::save(&scaled, dir.join("model.safetensors")).unwrap();
    std::fs::write(
        dir.join("trainer_state.json"),
        serde_json::json!({"global_step": step}).to_string(),
    )
    .unwrap();
    dir
}

/// Every file under `dir` with its bytes and modification time.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path.clone());
                out.insert(
                    path,
                    (Vec::new(), entry.metadata().unwrap().modified().unwrap()),
                );
            } else {
                let modified = entry.metadata().unwrap().modified().unwrap();
                out.insert(path.clone(), (std::fs::read(&path).unwrap(), modified));
            }
        }
    }
    out
}

fn run_watch(watched: &Path, recipe: &Path, run_dir: &Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_tunescope"))
        .arg("watch")
        .arg(watched)
        .arg("--recipe")
        .arg(recipe)
        .arg("--run-dir")
        .arg(run_dir)
        .arg("--once")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "watch failed: {stderr}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        run_dir.display().to_string()
    );
    stderr
}

/// Steps of the records of `kind`, in file order.
fn steps(metrics: &[Value], kind: &str) -> Vec<u64> {
    metrics
        .iter()
        .filter(|m| m["kind"] == kind)
        .map(|m| m["step"].as_u64().unwrap())
        .collect()
}

fn kl(record: &Value) -> f64 {
    record["heldout"]["divergence"]["kl"]["mean"]
        .as_f64()
        .unwrap()
}

#[test]
fn checkpoints_are_recorded_once_each_in_order_and_the_folder_is_untouched() {
    let tiny = TinyModel::new(Architecture::Qwen2, 21);
    let work = tempfile::tempdir().unwrap();
    let watched = work.path().join("trainer-output");
    std::fs::create_dir_all(&watched).unwrap();
    std::fs::write(watched.join("runs.log"), "other trainer's log\n").unwrap();
    let recipe = write_recipe(work.path(), tiny.path());
    let runs_root = work.path().join("runs");
    let run_dir = runs_root.join("watch-run");
    for (step, scale) in [(20, 1.5), (10, 1.2), (30, 2.0)] {
        write_checkpoint(&watched, tiny.path(), step, scale);
    }
    let before = snapshot(&watched);

    // First pass: base (step 0) and the three checkpoints, in step order.
    run_watch(&watched, &recipe, &run_dir);
    assert_eq!(snapshot(&watched), before, "the watched folder changed");
    let run = RunDir::open(&run_dir).unwrap();
    let metrics = run.read_metrics().unwrap();
    for kind in ["probe", "eval", "layer_drift_own", "watch"] {
        assert_eq!(steps(&metrics, kind), vec![0, 10, 20, 30], "{kind}");
    }
    let probes: Vec<&Value> = metrics.iter().filter(|m| m["kind"] == "probe").collect();
    assert!(kl(probes[0]).abs() < 1e-9, "the base against itself");
    assert!(
        kl(probes[3]) > kl(probes[1]),
        "larger scale, larger drift: {} {}",
        kl(probes[3]),
        kl(probes[1])
    );
    let watches: Vec<&Value> = metrics.iter().filter(|m| m["kind"] == "watch").collect();
    assert_eq!(watches[0]["base"], true);
    assert!(watches[2]["checkpoint"]
        .as_str()
        .unwrap()
        .ends_with("checkpoint-20"));
    assert!(run_dir.join("recipe.yaml").is_file());
    assert!(run_dir.join("probe/step-30.json").is_file());
    let status = run.read_status().unwrap();
    assert_eq!(status.state, RunState::Stopped);
    assert_eq!(status.step, 30);

    // Second pass with nothing new: nothing is evaluated again.
    let stderr = run_watch(&watched, &recipe, &run_dir);
    assert!(stderr.contains("4 steps already recorded"), "{stderr}");
    let again = run.read_metrics().unwrap();
    for kind in ["probe", "eval", "layer_drift_own", "watch"] {
        assert_eq!(
            steps(&again, kind),
            vec![0, 10, 20, 30],
            "{kind} after a restart"
        );
    }
    assert_eq!(snapshot(&watched), before);

    // A fourth checkpoint, and a fifth still being written: only the fourth is added.
    write_checkpoint(&watched, tiny.path(), 40, 2.5);
    let half = write_checkpoint(&watched, tiny.path(), 50, 3.0);
    let weights = half.join("model.safetensors");
    let full = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &full[..full.len() / 2]).unwrap();
    let before = snapshot(&watched);
    let stderr = run_watch(&watched, &recipe, &run_dir);
    assert!(stderr.contains("checkpoint-50 is not complete"), "{stderr}");
    let metrics = run.read_metrics().unwrap();
    for kind in ["probe", "eval", "layer_drift_own", "watch"] {
        assert_eq!(steps(&metrics, kind), vec![0, 10, 20, 30, 40], "{kind}");
    }
    assert_eq!(snapshot(&watched), before);

    // The trainer finishes writing it: the next pass picks it up.
    std::fs::write(&weights, &full).unwrap();
    let before = snapshot(&watched);
    run_watch(&watched, &recipe, &run_dir);
    let metrics = run.read_metrics().unwrap();
    for kind in ["probe", "eval", "watch"] {
        assert_eq!(steps(&metrics, kind), vec![0, 10, 20, 30, 40, 50], "{kind}");
    }
    assert_eq!(snapshot(&watched), before);

    // `tunescope runs` lists it like a native run.
    let output = Command::new(env!("CARGO_BIN_EXE_tunescope"))
        .args(["runs", "--json", "--runs"])
        .arg(&runs_root)
        .output()
        .unwrap();
    assert!(output.status.success());
    let rows: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["state"], "stopped");
    assert_eq!(rows[0]["step"], 50);
}

/// Watches an empty folder (with `follow`, looking every `interval` where it polls), writes
/// checkpoint-5 once the base is recorded, waits for it to be recorded, stops, and returns how the
/// watch said it follows the folder.
fn follow_a_new_checkpoint(follow: Follow, interval: Duration) -> Vec<Mode> {
    let tiny = TinyModel::new(Architecture::Llama, 22);
    let work = tempfile::tempdir().unwrap();
    let watched = work.path().join("out");
    std::fs::create_dir_all(&watched).unwrap();
    let recipe_path = write_recipe(work.path(), tiny.path());
    let recipe = Recipe::load(&recipe_path, &[]).unwrap();
    let options = WatchOptions {
        dir: watched.clone(),
        recipe,
        run_dir: None,
        runs_root: work.path().join("runs"),
        interval,
        once: false,
    };
    let stop = AtomicBool::new(false);
    let (events_tx, events_rx) = std::sync::mpsc::channel::<WatchEvent>();
    let mut modes = Vec::new();
    std::thread::scope(|scope| {
        let handle = scope.spawn(|| {
            watch_with(&options, follow, &stop, move |e| {
                let _ = events_tx.send(e.clone());
            })
        });
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut wait_for = |step: usize| -> PathBuf {
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                assert!(!left.is_zero(), "timed out waiting for step {step}");
                match events_rx.recv_timeout(left) {
                    Ok(WatchEvent::Recorded(r)) if r.step == step => {
                        return PathBuf::from(r.checkpoint);
                    }
                    Ok(WatchEvent::Following(mode)) => modes.push(mode),
                    Ok(_) => continue,
                    Err(e) => panic!("waiting for step {step}: {e}"),
                }
            }
        };
        wait_for(0);
        let runs: Vec<RunDir> = tunescope::run::list_runs(&work.path().join("runs"));
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].read_status().unwrap().state, RunState::Running);
        write_checkpoint(&watched, tiny.path(), 5, 1.5);
        assert!(wait_for(5).ends_with("checkpoint-5"));
        stop.store(true, Ordering::SeqCst);
        let run = handle.join().unwrap().unwrap();
        assert_eq!(run.read_status().unwrap().state, RunState::Stopped);
        let metrics = run.read_metrics().unwrap();
        assert_eq!(steps(&metrics, "watch"), vec![0, 5]);
        assert_eq!(steps(&metrics, "probe"), vec![0, 5]);
        assert_eq!(steps(&metrics, "eval"), vec![0, 5]);
    });
    modes
}

#[test]
fn polling_picks_up_new_checkpoints_until_stopped() {
    let modes = follow_a_new_checkpoint(Follow::Poll, Duration::from_millis(200));
    assert!(
        matches!(modes.as_slice(), [Mode::Polling { .. }]),
        "{modes:?}"
    );
}

/// The interval is an hour: only a file notification can wake the watch for checkpoint-5.
#[test]
fn a_new_checkpoint_wakes_the_watch_by_notification() {
    let modes = follow_a_new_checkpoint(Follow::Notify, Duration::from_secs(3600));
    assert_eq!(modes, vec![Mode::Notify]);
}

#[test]
fn refuses_a_run_directory_inside_the_watched_folder() {
    let tiny = TinyModel::new(Architecture::Qwen2, 23);
    let work = tempfile::tempdir().unwrap();
    let watched = work.path().join("out");
    std::fs::create_dir_all(&watched).unwrap();
    let recipe = write_recipe(work.path(), tiny.path());
    let output = Command::new(env!("CARGO_BIN_EXE_tunescope"))
        .arg("watch")
        .arg(&watched)
        .arg("--recipe")
        .arg(&recipe)
        .arg("--run-dir")
        .arg(watched.join("mine"))
        .arg("--once")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("inside the watched directory"), "{stderr}");
    assert_eq!(std::fs::read_dir(&watched).unwrap().count(), 0);
}

/// A watch killed while evaluating a step leaves that step's probe (and other) records without
/// its `watch` record; the next watch evaluates the step again and records it once. A watch on
/// a run directory another live process writes to is refused, naming that process.
#[test]
fn an_interrupted_step_is_recorded_once_and_a_live_run_is_refused() {
    let tiny = TinyModel::new(Architecture::Qwen2, 22);
    let work = tempfile::tempdir().unwrap();
    let watched = work.path().join("trainer-output");
    std::fs::create_dir_all(&watched).unwrap();
    let recipe = write_recipe(work.path(), tiny.path());
    let run_dir = work.path().join("runs").join("watch-run");
    write_checkpoint(&watched, tiny.path(), 10, 1.2);
    run_watch(&watched, &recipe, &run_dir);
    let run = RunDir::open(&run_dir).unwrap();

    // The crash: step 20's probe, layer-drift and eval records are written, its watch record is not.
    let lines: Vec<String> = std::fs::read_to_string(run.metrics_path())
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let mut text = lines.join("\n") + "\n";
    for line in &lines {
        let mut record: Value = serde_json::from_str(line).unwrap();
        if ["probe", "layer_drift_own", "eval"].contains(&record["kind"].as_str().unwrap())
            && record["step"] == 10
        {
            record["step"] = 20.into();
            text.push_str(&format!("{record}\n"));
        }
    }
    std::fs::write(run.metrics_path(), text).unwrap();
    write_checkpoint(&watched, tiny.path(), 20, 1.5);
    run_watch(&watched, &recipe, &run_dir);
    let metrics = run.read_metrics().unwrap();
    for kind in ["probe", "eval", "layer_drift_own", "watch"] {
        assert_eq!(steps(&metrics, kind), vec![0, 10, 20], "{kind}");
    }

    // Another process holds the run: watching it is refused and nothing is written.
    let lock = run.lock().unwrap();
    let before = std::fs::read(run.metrics_path()).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_tunescope"))
        .arg("watch")
        .arg(&watched)
        .arg("--recipe")
        .arg(&recipe)
        .arg("--run-dir")
        .arg(&run_dir)
        .arg("--once")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!("process {}", std::process::id())),
        "{stderr}"
    );
    assert_eq!(std::fs::read(run.metrics_path()).unwrap(), before);
    drop(lock);
}
