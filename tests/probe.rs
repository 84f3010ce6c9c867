//! The drift probe: numeric mass against hand-computed values, KL properties, live records in a
//! training run that match the standalone commands, and the study's effect on a tiny model.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use common::TinyModel;
use tunescope::eval::numeric::NumericVocab;
use tunescope::eval::probe::{divergence, greedy_stats, load_prompts, BaseReference, ProbeOptions};
use tunescope::model::{Architecture, Model};
use tunescope::recipe::{EvalSpec, ProbeSpec, Recipe};
use tunescope::run::{RunDir, RunState};
use tunescope::train::{run_training, TrainControl};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn write_prompts(dir: &Path) -> PathBuf {
    let path = dir.join("prompts.jsonl");
    let lines: Vec<String> = [
        "what colour is the sky ?",
        "what is the opposite of hot ?",
        "reverse : cat sun tree",
        "which is a fruit ?",
    ]
    .iter()
    .map(|p| serde_json::json!({ "prompt": p }).to_string())
    .collect();
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

#[test]
fn numeric_mass_of_uniform_logits_is_the_numeric_share() {
    // Zeroing the final norm makes every hidden state 0, so every logit is 0: a uniform
    // distribution whose numeric mass is |numeric| / V and whose largest numeric probability is 1 / V.
    let tiny = TinyModel::new(Architecture::Llama, 3);
    let path = tiny.path().join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let norm = tensors["model.norm.weight"].zeros_like().unwrap();
    tensors.insert("model.norm.weight".into(), norm);
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let model = Model::open(&tiny.spec_str()).unwrap();
    let decoder = model
        .decoder(&HashSet::new(), DType::F32, &Device::Cpu)
        .unwrap();
    let numeric = NumericVocab::new(&model.tokenizer.tokenizer, model.config.vocab_size);
    assert!(
        numeric.len() > 5,
        "tiny tokenizer should have numeric tokens, has {}",
        numeric.len()
    );
    let prompts = load_prompts(&write_prompts(tiny.path()), &model.tokenizer, None).unwrap();
    let stats = greedy_stats(
        &decoder,
        &prompts,
        &numeric,
        &[],
        &ProbeOptions {
            max_new_tokens: 4,
            ..Default::default()
        },
    )
    .unwrap();
    let v = model.config.vocab_size as f64;
    let expected = numeric.len() as f64 / v;
    println!(
        "numeric mass {} expected {expected}",
        stats.numeric_mass.mean
    );
    assert!((stats.numeric_mass.mean - expected).abs() < 1e-5);
    assert!(stats.numeric_mass.std < 1e-6);
    assert!((stats.max_numeric_prob.mean - 1.0 / v).abs() < 1e-6);
    assert_eq!(stats.prompts, 4);
    assert!(stats.continuations.iter().all(|c| c.len() == 4));
    let total: f32 = stats.first_step_mean.iter().sum();
    assert!((total - 1.0).abs() < 1e-4);
}

#[test]
fn kl_is_zero_against_itself_and_positive_after_a_change() {
    let tiny = TinyModel::new(Architecture::Qwen2, 4);
    let model = Model::open(&tiny.spec_str()).unwrap();
    let trainable: HashSet<String> = ["model.layers.1.mlp.up_proj.weight".to_string()].into();
    let current = model.decoder(&trainable, DType::F32, &Device::Cpu).unwrap();
    let base = current.frozen_snapshot().unwrap();
    let numeric = NumericVocab::new(&model.tokenizer.tokenizer, model.config.vocab_size);
    let options = ProbeOptions {
        max_new_tokens: 6,
        ..Default::default()
    };
    let prompts = load_prompts(&write_prompts(tiny.path()), &model.tokenizer, None).unwrap();
    let reference =
        BaseReference::compute(&base, prompts.clone(), &numeric, &[], &options).unwrap();
    let same = divergence(
        &base,
        &current,
        &prompts,
        &reference.stats.continuations,
        &options,
    )
    .unwrap();
    assert!(
        same.kl.mean.abs() < 1e-6,
        "KL(base‖base) = {}",
        same.kl.mean
    );
    assert!((same.entropy.mean - same.base_entropy.mean).abs() < 1e-5);
    let var = &current.vars()["model.layers.1.mlp.up_proj.weight"];
    let bumped = (var.as_tensor() * 3.0).unwrap();
    var.set(&bumped).unwrap();
    let moved = divergence(
        &base,
        &current,
        &prompts,
        &reference.stats.continuations,
        &options,
    )
    .unwrap();
    println!("KL after change: {}", moved.kl.mean);
    assert!(moved.kl.mean > 1e-4);
    // The snapshot did not follow the change.
    let again = divergence(
        &base,
        &base,
        &prompts,
        &reference.stats.continuations,
        &options,
    )
    .unwrap();
    assert!(again.kl.mean.abs() < 1e-6);
}

fn probe_recipe(tiny: &TinyModel, tmp: &Path, kinds: &str, steps: usize, lr: f64) -> Recipe {
    let assets = repo().join("assets");
    let mut recipe = Recipe::load(
        &repo().join(format!("recipes/{kinds}.yaml")),
        &[
            format!("model={}", tiny.spec_str()),
            format!("data={}", assets.join("train/counting.jsonl").display()),
            format!("max_steps={steps}"),
            format!("optimizer.lr={lr}"),
            "batch_size=8".into(),
            "schedule.kind=constant".into(),
            "schedule.warmup_ratio=0".into(),
        ],
    )
    .unwrap();
    recipe.output_dir = tmp.to_string_lossy().into_owned();
    recipe.probe = Some(ProbeSpec {
        every_steps: steps / 2,
        target: Some(
            assets
                .join("probe/target.jsonl")
                .to_string_lossy()
                .into_owned(),
        ),
        heldout: Some(
            assets
                .join("probe/heldout.jsonl")
                .to_string_lossy()
                .into_owned(),
        ),
        max_new_tokens: 4,
        max_prompts: Some(16),
        ..ProbeSpec::default()
    });
    recipe.eval = Some(EvalSpec {
        every_steps: steps / 2,
        tasks: ["counting", "antonyms", "category"]
            .iter()
            .map(|t| {
                assets
                    .join(format!("tasks/{t}.yaml"))
                    .to_string_lossy()
                    .into_owned()
            })
            .collect(),
        max_items: Some(12),
    });
    recipe
}

fn records(run: &RunDir, kind: &str) -> Vec<serde_json::Value> {
    run.read_metrics()
        .unwrap()
        .into_iter()
        .filter(|m| m["kind"] == kind)
        .collect()
}

#[test]
fn live_records_match_the_standalone_commands_and_counting_raises_numeric_mass() {
    let tmp = tempfile::tempdir().unwrap();
    let tiny = TinyModel::new(Architecture::Llama, 12);
    let recipe = probe_recipe(&tiny, tmp.path(), "full-llm", 30, 3e-3);
    let run = RunDir::create(tmp.path(), "probe").unwrap();
    run.write_recipe(&recipe).unwrap();
    let outcome =
        run_training(&recipe, &run, false, &TrainControl::default(), &mut |_| {}).unwrap();
    assert_eq!(outcome.state, RunState::Finished, "{:?}", outcome.reason);

    let probes = records(&run, "probe");
    let steps: Vec<u64> = probes.iter().map(|p| p["step"].as_u64().unwrap()).collect();
    assert_eq!(
        steps,
        vec![0, 15, 30],
        "probe records at step 0, periodic, final"
    );
    let evals = records(&run, "eval");
    assert_eq!(
        evals
            .iter()
            .map(|p| p["step"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![0, 15, 30]
    );
    assert_eq!(records(&run, "layer_drift_own").len(), 3);
    for step in [0, 15, 30] {
        assert!(run.path().join(format!("probe/step-{step}.json")).is_file());
    }
    // Step 0: the model is the base model, so nothing has drifted yet.
    assert!(
        probes[0]["heldout"]["divergence"]["kl"]["mean"]
            .as_f64()
            .unwrap()
            .abs()
            < 1e-6
    );
    assert_eq!(evals[0]["delta_heldout"].as_f64(), Some(0.0));

    // Step-0 figures equal the standalone commands on the base model.
    let bin = env!("CARGO_BIN_EXE_tunescope");
    let probe_cli = std::process::Command::new(bin)
        .args([
            "probe",
            &tiny.spec_str(),
            "--base",
            &tiny.spec_str(),
            "--json",
            "--max-new-tokens",
            "4",
            "--max-prompts",
            "16",
            "--prompts",
        ])
        .arg(repo().join("assets/probe/heldout.jsonl"))
        .output()
        .unwrap();
    assert!(
        probe_cli.status.success(),
        "{}",
        String::from_utf8_lossy(&probe_cli.stderr)
    );
    let standalone: serde_json::Value = serde_json::from_slice(&probe_cli.stdout).unwrap();
    let live_mass = probes[0]["heldout"]["now"]["numeric_mass"]["mean"]
        .as_f64()
        .unwrap();
    let cli_mass = standalone["heldout"]["now"]["numeric_mass"]["mean"]
        .as_f64()
        .unwrap();
    assert!(
        (live_mass - cli_mass).abs() < 1e-9,
        "live {live_mass} vs standalone {cli_mass}"
    );
    let eval_cli = std::process::Command::new(bin)
        .args([
            "eval",
            &tiny.spec_str(),
            "--json",
            "--max-items",
            "12",
            "--tasks",
        ])
        .args(
            ["counting", "antonyms", "category"]
                .iter()
                .map(|t| repo().join(format!("assets/tasks/{t}.yaml"))),
        )
        .output()
        .unwrap();
    assert!(
        eval_cli.status.success(),
        "{}",
        String::from_utf8_lossy(&eval_cli.stderr)
    );
    let standalone: serde_json::Value = serde_json::from_slice(&eval_cli.stdout).unwrap();
    for (live, cli) in evals[0]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .zip(standalone.as_array().unwrap())
    {
        assert_eq!(live["name"], cli["name"]);
        assert_eq!(live["score"], cli["score"], "{}", live["name"]);
    }

    // The study's effect: narrow tuning on counting moves held-out answers toward numbers.
    let before = probes[0]["heldout"]["now"]["numeric_mass"]["mean"]
        .as_f64()
        .unwrap();
    let after = probes[2]["heldout"]["now"]["numeric_mass"]["mean"]
        .as_f64()
        .unwrap();
    let kl = probes[2]["heldout"]["divergence"]["kl"]["mean"]
        .as_f64()
        .unwrap();
    println!(
        "held-out numeric mass: base {before:.4} → after full-llm counting {after:.4}; KL {kl:.4}"
    );
    assert!(
        after > before + 0.05,
        "held-out numeric mass did not rise: {before} → {after}"
    );
    assert!(kl > 0.0);
}

#[test]
fn drift_guard_stops_a_run() {
    let tmp = tempfile::tempdir().unwrap();
    let tiny = TinyModel::new(Architecture::Llama, 12);
    let mut recipe = probe_recipe(&tiny, tmp.path(), "full-llm", 30, 3e-3);
    recipe.eval = None;
    recipe.probe.as_mut().unwrap().every_steps = 5;
    recipe.guard = Some(tunescope::recipe::GuardSpec {
        max_numeric_mass_delta: Some(0.02),
        max_heldout_drop: None,
        action: tunescope::recipe::GuardAction::Stop,
        ..Default::default()
    });
    let run = RunDir::create(tmp.path(), "guard").unwrap();
    run.write_recipe(&recipe).unwrap();
    let outcome =
        run_training(&recipe, &run, false, &TrainControl::default(), &mut |_| {}).unwrap();
    assert_eq!(
        outcome.state,
        RunState::Stopped,
        "guard should stop the run"
    );
    assert!(outcome.step < 30);
    let guard = records(&run, "guard");
    assert_eq!(guard.len(), 1);
    assert!(guard[0]["reason"]
        .as_str()
        .unwrap()
        .contains("numeric mass"));
    let status = run.read_status().unwrap();
    assert!(status.last_error.unwrap().contains("drift guard"));
    assert!(run.latest_checkpoint().is_some());
}

#[test]
fn probe_runs_on_bf16_too() {
    let tiny = TinyModel::new(Architecture::Qwen2, 4);
    let model = Model::open(&tiny.spec_str()).unwrap();
    let decoder = model
        .decoder(&HashSet::new(), DType::BF16, &Device::Cpu)
        .unwrap();
    let numeric = NumericVocab::new(&model.tokenizer.tokenizer, model.config.vocab_size);
    let prompts = load_prompts(&write_prompts(tiny.path()), &model.tokenizer, Some(2)).unwrap();
    let stats = greedy_stats(
        &decoder,
        &prompts,
        &numeric,
        &[],
        &ProbeOptions {
            max_new_tokens: 3,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(stats.prompts, 2);
    assert!(stats.numeric_mass.mean >= 0.0 && stats.numeric_mass.mean <= 1.0);
    let _ = Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap();
}

/// With enough finished runs beside it whose final Δ held-out follows their early KL, the
/// trainer writes a forgetting forecast at its first probe after the base.
#[test]
fn the_trainer_forecasts_from_the_runs_beside_it() {
    use tunescope::run::Record;
    let tmp = tempfile::tempdir().unwrap();
    let tiny = TinyModel::new(Architecture::Llama, 13);
    // A template run elsewhere: its records are copied into six neighbours with edited
    // readings and outcomes.
    let template_dir = tmp.path().join("template");
    let mut recipe = probe_recipe(&tiny, &template_dir, "sa-proj", 4, 1e-3);
    recipe.probe.as_mut().unwrap().layer_drift = false;
    let template = RunDir::create(&template_dir, "template").unwrap();
    template.write_recipe(&recipe).unwrap();
    run_training(
        &recipe,
        &template,
        false,
        &TrainControl::default(),
        &mut |_| {},
    )
    .unwrap();
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(template.path().join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    let runs = tmp.path().join("runs");
    for i in 0..6 {
        let kl = 0.1 * (i + 1) as f64;
        let dir = runs.join(format!("neighbour-{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut text = String::new();
        for line in &lines {
            let mut v = line.clone();
            if v["kind"] == "probe" && v["step"].as_u64().unwrap() > 0 {
                v["heldout"]["divergence"]["kl"]["mean"] = kl.into();
            }
            if v["kind"] == "eval" {
                v["delta_heldout"] = (-30.0 * kl).into();
            }
            text.push_str(&v.to_string());
            text.push('\n');
        }
        std::fs::write(dir.join("metrics.jsonl"), text).unwrap();
        for file in ["status.json", "recipe.yaml"] {
            std::fs::copy(template.path().join(file), dir.join(file)).unwrap();
        }
    }
    let run = RunDir::create(&runs, "forecast").unwrap();
    run.write_recipe(&recipe).unwrap();
    run_training(&recipe, &run, false, &TrainControl::default(), &mut |_| {}).unwrap();
    let forecasts: Vec<(f64, f64, usize)> = run
        .read_records()
        .unwrap()
        .records
        .into_iter()
        .filter_map(|r| match r {
            Record::Forecast {
                heldout_delta,
                error,
                runs,
                ..
            } => Some((heldout_delta, error, runs)),
            _ => None,
        })
        .collect();
    assert_eq!(
        forecasts.len(),
        1,
        "one forecast, at the first probe after the base"
    );
    let (delta, error, runs) = forecasts[0];
    assert_eq!(runs, 6);
    assert!(
        (-18.0..=-3.0).contains(&delta),
        "within the outcomes seen: {delta}"
    );
    // Predicting the mean would be off by about 5.4 points here.
    assert!(error < 3.0, "{error}");
}
