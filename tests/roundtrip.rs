//! Opt-in round trips with the real Python stack (transformers, TRL), run by
//! `scripts/roundtrip.sh`. Without the pinned environment (`TUNESCOPE_PYTHON`, or the venv that
//! `scripts/conformance-env.sh` builds) every test prints why it skipped and passes.
//!
//! - `export --to trl`, then the script trains a few CPU steps: exactly the recipe's tensors change;
//!   `watch` on its checkpoints reads the same probe figures as `probe` on the same files.
//! - tunescope's `final/` loads in transformers with logits equal to tunescope's.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use tunescope::model::decoder::Inputs;

use candle_core::{DType, Device, IndexOp, Tensor};
use serde_json::Value;
use tunescope::model::{Model, ModuleMap, WeightStore};
use tunescope::recipe::Recipe;
use tunescope::select;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python named by `var` when it is set and imports `modules`; otherwise why the test skips.
/// The tests are opt-in: nothing runs unless the variable is set (scripts/roundtrip.sh sets them).
fn python(var: &str, modules: &str) -> Result<PathBuf, String> {
    let Some(path) = std::env::var_os(var) else {
        return Err(format!(
            "{var} is not set (scripts/roundtrip.sh builds the Python environments and sets it)"
        ));
    };
    let candidate = PathBuf::from(path);
    let check = Command::new(&candidate)
        .args(["-c", &format!("import {modules}")])
        .output()
        .map_err(|e| format!("{var}: cannot run {}: {e}", candidate.display()))?;
    if !check.status.success() {
        return Err(format!(
            "{var}: {} cannot import {modules}: {}",
            candidate.display(),
            String::from_utf8_lossy(&check.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ));
    }
    Ok(candidate)
}

macro_rules! python_or_skip {
    ($var:expr, $modules:expr) => {
        match python($var, $modules) {
            Ok(p) => p,
            Err(why) => {
                // Straight to stderr: cargo's capture would hide a println! of a passing test.
                use std::io::Write;
                let _ = writeln!(std::io::stderr(), "roundtrip: skipped: {why}");
                return;
            }
        }
    };
}

/// A Python process for the trainers: offline, CPU only, no telemetry.
/// The one run directory under `runs`.
fn only_run(runs: &Path) -> PathBuf {
    std::fs::read_dir(runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
}

fn python_command(python: &Path) -> Command {
    let mut cmd = Command::new(python);
    cmd.env("HF_HUB_OFFLINE", "1")
        .env("HF_DATASETS_OFFLINE", "1")
        .env("CUDA_VISIBLE_DEVICES", "")
        .env("DO_NOT_TRACK", "1")
        .env("AXOLOTL_DO_NOT_TRACK", "1");
    cmd
}

/// The recipe's resolved trainable names on `model`.
fn recipe_names(recipe: &str, model: &Path) -> BTreeSet<String> {
    let recipe = Recipe::load(&repo().join("recipes").join(recipe), &[]).unwrap();
    let store = WeightStore::open(&[model.join("model.safetensors")]).unwrap();
    select::resolve(&recipe.trainable, &ModuleMap::from_store(&store))
        .unwrap()
        .names
}

/// Both config generations of every fixture case.
const CONFIGS: [&str; 2] = ["config.json", "config.legacy.json"];

/// The conformance fixture cases (tiny models written by transformers).
fn cases() -> Vec<String> {
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("tests/fixtures/conformance/MANIFEST.json")).unwrap(),
    )
    .unwrap();
    serde_json::from_value(manifest["cases"].clone()).unwrap()
}

/// Compares what a trainer changed with what the recipe selects. A key projection's bias may
/// stay unchanged: its gradient is zero in exact arithmetic (softmax ignores a shift shared by
/// every key), so only rounding noise can move it.
fn assert_trained_exactly(got: &BTreeSet<String>, want: &BTreeSet<String>, what: &str) {
    let extra: Vec<&String> = got.difference(want).collect();
    assert!(
        extra.is_empty(),
        "{what}: changed tensors outside the recipe: {extra:?}"
    );
    let missing: Vec<&String> = want.difference(got).collect();
    assert!(
        missing.iter().all(|n| n.ends_with("k_proj.bias")),
        "{what}: recipe tensors left unchanged: {missing:?}"
    );
    println!(
        "{what}: changed {} tensors, the recipe selects {}{}",
        got.len(),
        want.len(),
        if missing.is_empty() {
            String::new()
        } else {
            format!(
                " (unchanged: {} k_proj biases, zero gradient)",
                missing.len()
            )
        }
    );
}

/// A tiny model of the conformance fixtures (`case`, written by transformers), as a model directory.
/// `config` picks the generation: `config.json` (transformers 5) or `config.legacy.json`
/// (transformers 4), copied in as `config.json`.
fn fixture_model(dir: &Path, case: &str, config: &str) -> PathBuf {
    let src = repo().join("tests/fixtures/conformance");
    let out = dir.join(format!("model-{case}"));
    std::fs::create_dir_all(&out).unwrap();
    let case_dir = src.join("models").join(case);
    std::fs::copy(
        case_dir.join("model.safetensors"),
        out.join("model.safetensors"),
    )
    .unwrap();
    std::fs::copy(case_dir.join(config), out.join("config.json")).unwrap();
    for name in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(src.join("tokenizer").join(name), out.join(name)).unwrap();
    }
    let templates: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("templates.json")).unwrap())
            .unwrap();
    let chatml = templates
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["template_name"] == "chatml")
        .unwrap()["template"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(out.join("chat_template.jinja"), chatml).unwrap();
    out
}

fn tunescope(args: &[&str], cwd: &Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_tunescope"))
        .args(args)
        .current_dir(cwd)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "tunescope {args:?} failed:\n{stderr}"
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn tensors(path: &Path) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

fn changed(before: &Path, after: &Path) -> BTreeSet<String> {
    let a = tensors(before);
    let b = tensors(after);
    a.iter()
        .filter(|(name, t)| {
            let other = b
                .get(*name)
                .unwrap_or_else(|| panic!("{name} missing after training"));
            common::bytes_of(t) != common::bytes_of(&other.to_dtype(t.dtype()).unwrap())
        })
        .map(|(name, _)| name.clone())
        .collect()
}

fn trainable_names(script: &str) -> BTreeSet<String> {
    let block = script
        .split("TRAINABLE = {")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .expect("TRAINABLE block");
    block
        .lines()
        .map(|l| l.trim().trim_end_matches(',').trim_matches('"').to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn trl_export_trains_exactly_the_recipe_tensors_and_watch_agrees_with_probe() {
    let python = python_or_skip!("TUNESCOPE_PYTHON", "torch, transformers, trl, datasets");
    let runs = [
        "mistral", "qwen2", "qwen3", "smollm3", "gemma2", "gemma3", "llama",
    ]
    .into_iter()
    .flat_map(|case| CONFIGS.map(|config| (case, config)));
    for (case, config) in runs {
        let (work, model, export) = export_fixture(
            case,
            config,
            "sa-proj.yaml",
            "trl",
            &[
                "optimizer.lr=1e-3",
                "max_steps=4",
                "batch_size=2",
                "checkpoint_every=2",
                "max_length=256",
            ],
        );
        let script = std::fs::read_to_string(export.join("train_trl.py")).unwrap();
        let started = std::time::Instant::now();
        let run = python_command(&python)
            .arg("train_trl.py")
            .current_dir(&export)
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{case}: train_trl.py failed:\n{}",
            String::from_utf8_lossy(&run.stderr)
        );
        println!(
            "TRL {case} ({config}): 4 steps in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let want = trainable_names(&script);
        assert_eq!(
            want,
            recipe_names("sa-proj.yaml", &model),
            "TRAINABLE is the recipe's set"
        );
        let got = changed(
            &model.join("model.safetensors"),
            &export.join("output/final/model.safetensors"),
        );
        assert_trained_exactly(&got, &want, &format!("TRL {case} ({config})"));
        if case == "llama" && config == "config.json" {
            watch_agrees_with_probe(work.path(), &model, &export);
        }
    }
}

/// `watch` on the TRL checkpoints, then `probe` on the last one: the same figures.
fn watch_agrees_with_probe(work: &Path, model: &Path, export: &Path) {
    let assets = repo().join("assets");
    let recipe = work.join("watch.yaml");
    std::fs::write(
        &recipe,
        format!(
            "name: watched\nmodel: {}\nprobe:\n  heldout: {}\n  target: {}\n  max_new_tokens: 4\n  max_prompts: 4\n",
            model.display(),
            assets.join("probe/heldout.jsonl").display(),
            assets.join("probe/target.jsonl").display()
        ),
    )
    .unwrap();
    let run_dir = work.join("watched-run");
    tunescope(
        &[
            "watch",
            export.join("output").to_str().unwrap(),
            "--recipe",
            recipe.to_str().unwrap(),
            "--run-dir",
            run_dir.to_str().unwrap(),
            "--once",
        ],
        work,
    );
    let metrics: Vec<Value> = std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = metrics
        .iter()
        .filter(|m| m["kind"] == "probe")
        .max_by_key(|m| m["step"].as_u64().unwrap())
        .expect("watch wrote probe records");
    let step = last["step"].as_u64().unwrap();
    assert_eq!(step, 4, "the last checkpoint is step 4");
    let probe = tunescope(
        &[
            "probe",
            export
                .join(format!("output/checkpoint-{step}"))
                .to_str()
                .unwrap(),
            "--base",
            model.to_str().unwrap(),
            "--prompts",
            assets.join("probe/heldout.jsonl").to_str().unwrap(),
            "--target",
            assets.join("probe/target.jsonl").to_str().unwrap(),
            "--max-new-tokens",
            "4",
            "--max-prompts",
            "4",
            "--json",
        ],
        work,
    );
    let probe: Value = serde_json::from_str(&probe).unwrap();
    for set in ["heldout", "target"] {
        let watched = last[set]["now"]["numeric_mass"]["mean"].as_f64().unwrap();
        let probed = probe[set]["now"]["numeric_mass"]["mean"].as_f64().unwrap();
        let kl_w = last[set]["divergence"]["kl"]["mean"].as_f64().unwrap();
        let kl_p = probe[set]["divergence"]["kl"]["mean"].as_f64().unwrap();
        println!("{set}: numeric mass watch {watched:.6} probe {probed:.6}; KL watch {kl_w:.6} probe {kl_p:.6}");
        assert!(
            (watched - probed).abs() < 1e-9 && (kl_w - kl_p).abs() < 1e-9,
            "{set}"
        );
    }
}

#[test]
fn tunescope_final_loads_in_transformers_with_equal_logits() {
    let python = python_or_skip!("TUNESCOPE_PYTHON", "torch, transformers");
    let runs = cases()
        .into_iter()
        .flat_map(|case| CONFIGS.map(|config| (case.clone(), config)));
    for (case, config) in runs {
        let work = tempfile::tempdir().unwrap();
        let model = fixture_model(work.path(), &case, config);
        let runs = work.path().join("runs");
        tunescope(
            &[
                "train",
                repo()
                    .join("recipes/sa-proj+gate-up.yaml")
                    .to_str()
                    .unwrap(),
                "--set",
                &format!("model={}", model.display()),
                "--set",
                &format!(
                    "data={}",
                    repo().join("assets/train/counting.jsonl").display()
                ),
                "--set",
                "optimizer.lr=1e-2",
                "--set",
                "max_steps=3",
                "--set",
                &format!("output_dir={}", runs.display()),
            ],
            work.path(),
        );
        let run = only_run(&runs);
        let final_dir = run.join("final");
        let ours = Model::open(final_dir.to_str().unwrap()).unwrap();
        let trained = changed(
            &model.join("model.safetensors"),
            &final_dir.join("model.safetensors"),
        );
        assert!(!trained.is_empty(), "{case}: training changed nothing");
        let seqs: Vec<Vec<u32>> = vec![vec![5, 17, 42, 99, 3, 250, 11, 8, 9, 10], vec![8, 300, 77]];
        let output = python_command(&python)
            .arg(repo().join("scripts/hf-logits.py"))
            .arg(&final_dir)
            .arg(serde_json::to_string(&seqs).unwrap())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{case}: transformers could not load final/: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let theirs: Value = serde_json::from_slice(&output.stdout).unwrap();
        let decoder = ours
            .decoder(&HashSet::new(), DType::F32, &Device::Cpu)
            .unwrap();
        let mut worst = 0f32;
        for (i, seq) in seqs.iter().enumerate() {
            let ids = Tensor::new(seq.as_slice(), &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let logits = decoder
                .forward(&Inputs::text(&ids, None))
                .unwrap()
                .i(0)
                .unwrap();
            let rows: Vec<Vec<f32>> = serde_json::from_value(theirs["logits"][i].clone()).unwrap();
            let reference = Tensor::new(rows, &Device::Cpu).unwrap();
            worst = worst.max(common::max_abs_diff(&logits, &reference));
        }
        println!(
            "final/ of {case} ({config}, {} tensors trained) in transformers: max |Δ logits| = {worst:.2e}",
            trained.len()
        );
        assert!(worst <= 1e-4, "{case}: {worst}");
    }
}

/// A LoRA run's `final/` (a PEFT adapter) loads in PEFT (`PeftModel.from_pretrained`) on its
/// base with logits equal to tunescope's adapted model.
#[test]
fn tunescope_lora_adapter_loads_in_peft_with_equal_logits() {
    let python = python_or_skip!("TUNESCOPE_PYTHON", "torch, transformers, peft");
    for case in ["llama", "qwen2"] {
        let work = tempfile::tempdir().unwrap();
        let model = fixture_model(work.path(), case, "config.json");
        let runs = work.path().join("runs");
        let data = repo().join("assets/train/counting.jsonl");
        tunescope(
            &[
                "train",
                repo().join("recipes/lora-mlp.yaml").to_str().unwrap(),
                "--set",
                &format!("model={}", model.display()),
                "--set",
                &format!("data={}", data.display()),
                "--set",
                "trainable.kinds=[q, v, gate, up, down]",
                "--set",
                "lora.r=4",
                "--set",
                "lora.lr=2e-2",
                "--set",
                "max_steps=3",
                "--set",
                &format!("output_dir={}", runs.display()),
            ],
            work.path(),
        );
        let run = only_run(&runs);
        let final_dir = run.join("final");
        assert!(final_dir.join("adapter_model.safetensors").is_file());
        let seqs: Vec<Vec<u32>> = vec![vec![5, 17, 42, 99, 3, 250, 11, 8, 9, 10], vec![8, 300, 77]];
        let output = python_command(&python)
            .arg(repo().join("scripts/hf-logits.py"))
            .arg(&model)
            .arg(serde_json::to_string(&seqs).unwrap())
            .arg(&final_dir)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{case}: PEFT could not load final/: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let theirs: Value = serde_json::from_slice(&output.stdout).unwrap();
        let ours = Model::open(final_dir.to_str().unwrap()).unwrap();
        let base = Model::open(model.to_str().unwrap()).unwrap();
        let forward = |m: &Model, seq: &[u32]| {
            let ids = Tensor::new(seq, &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            m.decoder(&HashSet::new(), DType::F32, &Device::Cpu)
                .unwrap()
                .forward(&Inputs::text(&ids, None))
                .unwrap()
                .i(0)
                .unwrap()
        };
        let (mut worst, mut moved) = (0f32, 0f32);
        for (i, seq) in seqs.iter().enumerate() {
            let rows: Vec<Vec<f32>> = serde_json::from_value(theirs["logits"][i].clone()).unwrap();
            let reference = Tensor::new(rows, &Device::Cpu).unwrap();
            worst = worst.max(common::max_abs_diff(&forward(&ours, seq), &reference));
            moved = moved.max(common::max_abs_diff(&forward(&base, seq), &reference));
        }
        println!("LoRA final/ of {case} in PEFT: max |Δ logits| = {worst:.2e} (base vs adapted: {moved:.2e})");
        assert!(worst <= 1e-4, "{case}: {worst}");
        assert!(moved > 1e-4, "{case}: the trained adapter changes nothing");
    }
}

/// Exports the recipe for `target` on the fixture model; returns (work dir, model dir, export dir).
fn export_fixture(
    case: &str,
    config: &str,
    recipe: &str,
    target: &str,
    extra: &[&str],
) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let work = tempfile::tempdir().unwrap();
    let model = fixture_model(work.path(), case, config);
    let export = work.path().join("export");
    let model_set = format!("model={}", model.display());
    let data_set = format!(
        "data={}",
        repo().join("assets/train/counting.jsonl").display()
    );
    let recipe_path = repo().join("recipes").join(recipe);
    let mut args = vec![
        "export",
        recipe_path.to_str().unwrap(),
        "--set",
        &model_set,
        "--set",
        &data_set,
    ];
    for kv in extra {
        args.push("--set");
        args.push(kv);
    }
    args.extend(["--to", target, "--out", export.to_str().unwrap()]);
    tunescope(&args, work.path());
    (work, model, export)
}

#[test]
fn llama_factory_trains_exactly_the_recipe_tensors() {
    let python = python_or_skip!("TUNESCOPE_LLAMAFACTORY_PYTHON", "llamafactory");
    for case in ["llama", "qwen2"] {
        let (_work, model, export) = export_fixture(
            case,
            "config.json",
            "sa-proj.yaml",
            "llama-factory",
            &[
                "max_steps=2",
                "batch_size=2",
                "optimizer.lr=1e-3",
                "max_length=256",
            ],
        );
        let started = std::time::Instant::now();
        let run = python_command(&python)
            .args(["-m", "llamafactory.cli", "train", "llama_factory.yaml"])
            .current_dir(&export)
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{case}: llamafactory-cli train failed:\n{}",
            String::from_utf8_lossy(&run.stderr)
        );
        println!(
            "LLaMA-Factory {case}: 2 steps in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let got = changed(
            &model.join("model.safetensors"),
            &export.join("outputs/model.safetensors"),
        );
        assert_trained_exactly(
            &got,
            &recipe_names("sa-proj.yaml", &model),
            &format!("LLaMA-Factory {case}"),
        );
    }
}

#[test]
fn axolotl_reads_the_config_and_unfreezes_exactly_the_recipe_tensors() {
    let python = python_or_skip!("TUNESCOPE_AXOLOTL_PYTHON", "axolotl");
    let runs = [
        ("llama", "sa-proj.yaml"),
        ("llama", "mlp-gate-up.yaml"),
        ("llama", "mlp.yaml"),
        ("llama", "full-llm.yaml"),
        ("mistral", "sa-proj.yaml"),
        ("qwen2", "sa-proj.yaml"),
        ("qwen2", "mlp-gate-up.yaml"),
        ("qwen3", "sa-proj.yaml"),
        ("smollm3", "mlp.yaml"),
        ("gemma3", "sa-proj.yaml"),
    ];
    for (case, recipe) in runs {
        let (_work, model, export) =
            export_fixture(case, "config.json", recipe, "axolotl", &["max_steps=2"]);
        let run = python_command(&python)
            .arg(repo().join("scripts/axolotl-check.py"))
            .arg("axolotl.yaml")
            .current_dir(&export)
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{case} {recipe}: Axolotl rejected the config:\n{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let stdout = String::from_utf8_lossy(&run.stdout);
        let line = stdout.lines().last().unwrap_or_default();
        let report: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("axolotl-check.py printed no JSON ({e}): {stdout}"));
        let got: BTreeSet<String> = serde_json::from_value(report["trainable"].clone()).unwrap();
        let want = recipe_names(recipe, &model);
        println!(
            "Axolotl {case} {recipe}: config valid, unfreezes {} tensors, the recipe selects {}",
            got.len(),
            want.len()
        );
        assert_eq!(
            got, want,
            "{case} {recipe}: Axolotl's unfrozen set differs from the recipe's"
        );
    }
}
