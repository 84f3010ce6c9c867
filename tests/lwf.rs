//! LwF (`regularize: {method: lwf}`) end to end on tiny models: λ 0 trains as plain training
//! through the regularizer's code path (to float rounding: plain training's loss head is the
//! fused one, LwF's keeps the logits for the KL), the teacher is the model at the start of the
//! stage (also on resume), it shares every frozen tensor, it holds the model closer to its
//! start, and bad settings fail before a run directory exists.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use common::{bytes_of, load_tensors, write_counting_data, TinyModel};
use tunescope::model::{Architecture, Model};
use tunescope::recipe::Recipe;
use tunescope::run::{Record, RecordLog, RunDir, RunState};
use tunescope::train::regularize::TeacherMemory;
use tunescope::train::{run_training, TrainControl, TrainEvent};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn recipe(tiny: &TinyModel, dir: &Path, extra: &[&str]) -> Recipe {
    let mut overrides = vec![
        format!("model={}", tiny.spec_str()),
        format!("data={}", write_counting_data(dir, 24).display()),
        "max_steps=6".into(),
        "batch_size=3".into(),
        "grad_accum=2".into(),
        "optimizer.lr=0.01".into(),
    ];
    overrides.extend(extra.iter().map(|s| s.to_string()));
    Recipe::load(&repo_root().join("recipes/mlp.yaml"), &overrides).unwrap()
}

/// Trains into a new run under `runs`; the step records of the run.
fn train(recipe: &Recipe, runs: &Path) -> (RunDir, Vec<tunescope::train::StepMetrics>) {
    let run = RunDir::create(runs, &recipe.name).unwrap();
    run.write_recipe(recipe).unwrap();
    let outcome = run_training(recipe, &run, false, &TrainControl::default(), &mut |_| {}).unwrap();
    assert_eq!(outcome.state, RunState::Finished, "{:?}", outcome.reason);
    let steps = step_records(&run);
    (run, steps)
}

fn step_records(run: &RunDir) -> Vec<tunescope::train::StepMetrics> {
    let text = std::fs::read_to_string(run.metrics_path()).unwrap();
    RecordLog::parse(&text)
        .iter()
        .filter_map(|r| match r {
            Record::Train(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

fn assert_same_weights(a: &RunDir, b: &RunDir) {
    let a = load_tensors(&a.final_dir().join("model.safetensors"));
    let b = load_tensors(&b.final_dir().join("model.safetensors"));
    assert_eq!(a.len(), b.len());
    for (name, ta) in &a {
        assert_eq!(bytes_of(ta), bytes_of(&b[name]), "{name} differs");
    }
}

/// Every weight of `b` within `tolerance` of the same weight of `a`.
fn assert_close_weights(a: &RunDir, b: &RunDir, tolerance: f32) {
    let a = load_tensors(&a.final_dir().join("model.safetensors"));
    let b = load_tensors(&b.final_dir().join("model.safetensors"));
    assert_eq!(a.len(), b.len());
    for (name, ta) in &a {
        let diff = common::max_abs_diff(ta, &b[name]);
        assert!(diff <= tolerance, "{name} differs by {diff}");
    }
}

#[test]
fn lambda_zero_trains_as_plain_training() {
    let tmp = tempfile::tempdir().unwrap();
    let tiny = TinyModel::new(Architecture::Qwen2, 21);
    let plain = recipe(&tiny, tmp.path(), &[]);
    let lwf = recipe(
        &tiny,
        tmp.path(),
        &["regularize.method=lwf", "regularize.lambda=0"],
    );
    assert_eq!(lwf.regularize.as_ref().unwrap().temperature, 2.0);
    let (plain_run, plain_steps) = train(&plain, &tmp.path().join("plain"));
    let (lwf_run, lwf_steps) = train(&lwf, &tmp.path().join("lwf"));
    // The same sums in another order: plain training's loss head is fused, LwF's keeps the
    // logits for the KL.
    assert_eq!(plain_steps.len(), lwf_steps.len());
    for (p, l) in plain_steps.iter().zip(&lwf_steps) {
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * a.abs().max(1e-3);
        assert!(
            close(p.loss, l.loss) && close(p.grad_norm, l.grad_norm),
            "step {}: loss {} vs {}, norm {} vs {}",
            p.step,
            p.loss,
            l.loss,
            p.grad_norm,
            l.grad_norm
        );
    }
    assert_close_weights(&plain_run, &lwf_run, 1e-5);
    // The KL was computed all along: 0 at the first step (student = teacher), then growing.
    assert!(plain_steps.iter().all(|m| m.lwf_kl.is_none()));
    let kl: Vec<f64> = lwf_steps.iter().map(|m| m.lwf_kl.unwrap()).collect();
    println!("KL per step at λ 0: {kl:?}");
    assert!(kl[0].abs() < 1e-12, "first-step KL {}", kl[0]);
    assert!(kl[kl.len() - 1] > 1e-4, "the model moved, KL {kl:?}");
}

#[test]
fn lwf_holds_the_model_closer_to_its_start() {
    let tmp = tempfile::tempdir().unwrap();
    let tiny = TinyModel::new(Architecture::Llama, 22);
    let free = recipe(
        &tiny,
        tmp.path(),
        &[
            "regularize.method=lwf",
            "regularize.lambda=0",
            "max_steps=8",
        ],
    );
    let held = recipe(
        &tiny,
        tmp.path(),
        &[
            "regularize.method=lwf",
            "regularize.lambda=10",
            "max_steps=8",
        ],
    );
    let (_, free_steps) = train(&free, &tmp.path().join("free"));
    let (_, held_steps) = train(&held, &tmp.path().join("held"));
    let last = |s: &[tunescope::train::StepMetrics]| s[s.len() - 1].lwf_kl.unwrap();
    println!(
        "last-step KL: λ 0 {:.5}, λ 10 {:.5}",
        last(&free_steps),
        last(&held_steps)
    );
    assert!(last(&held_steps) < 0.5 * last(&free_steps));
}

#[test]
fn resumed_lwf_run_equals_uninterrupted_run() {
    // The teacher of a resumed run is the model the run started from, not the checkpoint.
    let tmp = tempfile::tempdir().unwrap();
    let tiny = TinyModel::new(Architecture::Qwen2, 23);
    let recipe = recipe(
        &tiny,
        tmp.path(),
        &[
            "regularize.method=lwf",
            "regularize.lambda=1",
            "max_steps=7",
        ],
    );
    let (full_run, full_steps) = train(&recipe, &tmp.path().join("a"));

    let run = RunDir::create(&tmp.path().join("b"), "resumed").unwrap();
    run.write_recipe(&recipe).unwrap();
    let control = TrainControl::default();
    let outcome = run_training(&recipe, &run, false, &control, &mut |e| {
        if let TrainEvent::Step(m) = e {
            if m.step == 3 {
                control.request_stop();
            }
        }
    })
    .unwrap();
    assert_eq!(outcome.state, RunState::Stopped);
    let resumed = RunDir::open(run.path()).unwrap().read_recipe().unwrap();
    assert_eq!(resumed.regularize, recipe.regularize);
    let outcome =
        run_training(&resumed, &run, true, &TrainControl::default(), &mut |_| {}).unwrap();
    assert_eq!(outcome.state, RunState::Finished);
    let steps = step_records(&run);
    let key = |s: &[tunescope::train::StepMetrics]| -> Vec<(usize, u64, u64)> {
        s.iter()
            .map(|m| (m.step, m.loss.to_bits(), m.lwf_kl.unwrap().to_bits()))
            .collect()
    };
    assert_eq!(
        key(&steps),
        key(&full_steps),
        "losses or KL differ after resume"
    );
    assert_same_weights(&full_run, &run);
}

#[test]
fn teacher_shares_frozen_tensors_and_copies_trainable_ones() {
    for arch in [Architecture::Llama, Architecture::Qwen2] {
        let tiny = TinyModel::new(arch, 24);
        let model = Model::open(&tiny.spec_str()).unwrap();
        let map = model.module_map();
        let trainable: HashSet<String> = map
            .params
            .iter()
            .map(|p| p.name.clone())
            .filter(|n| n.contains(".mlp."))
            .collect();
        let student = model.decoder(&trainable, DType::F32, &Device::Cpu).unwrap();
        let teacher = student.frozen_snapshot().unwrap();
        assert!(teacher.vars().is_empty());
        for (name, param) in student.params() {
            let t = &teacher.params()[name];
            let shared = t.tensor().id() == param.tensor().id();
            assert_eq!(shared, !trainable.contains(name), "{name}");
            assert_eq!(bytes_of(t.tensor()), bytes_of(param.tensor()), "{name}");
        }
        // A snapshot of the all-frozen teacher (the monitor's base) copies nothing.
        let again = teacher.frozen_snapshot().unwrap();
        assert_eq!(TeacherMemory::measure(&again, &teacher).copied, 0);
        let measured = TeacherMemory::measure(&teacher, &student);
        let numel: usize = trainable.iter().map(|n| map.get(n).unwrap().numel).sum();
        assert_eq!(
            measured,
            TeacherMemory::estimate(numel, map.total(), 4),
            "{arch:?}"
        );
        assert!(measured.copied < measured.full_copy / 2);
        // The copy does not follow later updates of the student.
        let var = student.vars().values().next().unwrap();
        var.set(&(var.as_tensor() * 2.0).unwrap()).unwrap();
        let name = student.vars().keys().next().unwrap();
        assert_ne!(
            bytes_of(teacher.params()[name].tensor()),
            bytes_of(var.as_tensor())
        );
    }
}

#[test]
fn bad_settings_fail_naming_the_key() {
    let cases: [(&str, &str); 5] = [
        ("regularize: {method: ewc}", "unknown variant `ewc`"),
        (
            "regularize: {method: lwf, lamda: 1}",
            "did you mean `lambda`",
        ),
        ("regularize: {lambda: 1}", "missing field `method`"),
        ("regularize: {method: lwf, lambda: -1}", "regularize.lambda"),
        (
            "regularize: {method: lwf, temperature: 0}",
            "regularize.temperature",
        ),
    ];
    for (yaml, expected) in cases {
        let error = Recipe::from_yaml_str(yaml, "r.yaml")
            .and_then(|r| r.validate().map(|_| r))
            .unwrap_err();
        let text = format!("{error:#}");
        assert!(text.contains(expected), "{yaml}: {text}");
    }
    // Through the command line: nothing is created.
    let tmp = tempfile::tempdir().unwrap();
    let tiny = TinyModel::new(Architecture::Llama, 25);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tunescope"))
        .arg("train")
        .arg(repo_root().join("recipes/mlp.yaml"))
        .args(["--set", &format!("model={}", tiny.spec_str())])
        .args([
            "--set",
            &format!("data={}", write_counting_data(tmp.path(), 24).display()),
        ])
        .args([
            "--set",
            &format!("output_dir={}", tmp.path().join("runs").display()),
        ])
        .args([
            "--set",
            "regularize.method=lwf",
            "--set",
            "regularize.temperature=-2",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("regularize.temperature"), "{stderr}");
    assert!(!tmp.path().join("runs").exists());
}

#[test]
fn plan_prints_the_teachers_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let tiny = TinyModel::new(Architecture::Llama, 26);
    let map = Model::open(&tiny.spec_str()).unwrap().module_map();
    let run = |json: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tunescope"));
        cmd.arg("plan")
            .arg(repo_root().join("recipes/mlp.yaml"))
            .args(["--set", &format!("model={}", tiny.spec_str())])
            .args([
                "--set",
                &format!("data={}", write_counting_data(tmp.path(), 24).display()),
            ])
            .args(["--set", "regularize.method=lwf"]);
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let value: serde_json::Value = serde_json::from_str(&run(true)).unwrap();
    let trainable = value["trainable"].as_u64().unwrap();
    assert_eq!(value["lwf_teacher"]["bytes"].as_u64(), Some(trainable * 4));
    assert_eq!(
        value["lwf_teacher"]["full_copy_bytes"].as_u64(),
        Some(map.total() as u64 * 4)
    );
    assert_eq!(value["lwf_teacher"]["temperature"].as_f64(), Some(2.0));
    let text = run(false);
    assert!(
        text.contains("teacher") && text.contains("LwF λ 1, T 2"),
        "{text}"
    );
}
