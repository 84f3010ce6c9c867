//! The training engine end to end on tiny models: only the selected tensors change, loss falls,
//! a stopped and resumed run equals the uninterrupted one, and `plan` counts agree with a hand count.

mod common;

use std::path::{Path, PathBuf};

use common::{bytes_of, load_tensors, write_counting_data, TinyModel};
use tunescope::model::{Architecture, Model};
use tunescope::recipe::Recipe;
use tunescope::run::{RunDir, RunState};
use tunescope::train::{run_training, TrainControl, TrainEvent};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn train(recipe: &Recipe, runs: &Path) -> (RunDir, Vec<f64>) {
    let run = RunDir::create(runs, &recipe.name).unwrap();
    run.write_recipe(recipe).unwrap();
    let mut losses = Vec::new();
    let outcome = run_training(recipe, &run, false, &TrainControl::default(), &mut |e| {
        if let TrainEvent::Step(m) = e {
            losses.push(m.loss);
        }
    })
    .unwrap();
    assert_eq!(outcome.state, RunState::Finished, "{:?}", outcome.reason);
    (run, losses)
}

#[test]
fn every_shipped_recipe_changes_exactly_its_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_counting_data(tmp.path(), 32);
    for arch in [
        Architecture::Qwen2,
        Architecture::Llama,
        Architecture::Qwen3,
        Architecture::SmolLM3,
        Architecture::Gemma,
        Architecture::Phi3,
    ] {
        let tiny = TinyModel::new(arch, 101);
        let original = load_tensors(&tiny.path().join("model.safetensors"));
        let map = Model::open(&tiny.spec_str()).unwrap().module_map();
        let mut recipes: Vec<PathBuf> = std::fs::read_dir(repo_root().join("recipes"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.extension().is_some_and(|e| e == "yaml")
                    && !p
                        .file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with("demo-")
                    && !vision_only(p)
                    // LoRA recipes write an adapter, not a model: tests/lora.rs covers them.
                    && Recipe::load(p, &[]).is_ok_and(|r| r.lora.is_none())
            })
            .collect();
        recipes.sort();
        assert!(recipes.len() >= 6, "shipped recipes: {recipes:?}");
        for path in recipes {
            let overrides = vec![
                format!("model={}", tiny.spec_str()),
                format!("data={}", data.display()),
                "max_steps=3".to_string(),
                "optimizer.lr=0.01".to_string(),
                "schedule.warmup_ratio=0".to_string(),
            ];
            let recipe = Recipe::load(&path, &overrides).unwrap();
            let selection = tunescope::select::resolve(&recipe.trainable, &map).unwrap();
            let (run, _) = train(&recipe, &tmp.path().join("runs"));
            let final_dir = run.final_dir();
            for file in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
                assert!(final_dir.join(file).is_file(), "final/ lacks {file}");
            }
            let trained = load_tensors(&final_dir.join("model.safetensors"));
            assert_eq!(
                trained.len(),
                original.len(),
                "{}: tensor count",
                recipe.name
            );
            let mut changed = 0;
            for (name, before) in &original {
                let after = trained
                    .get(name)
                    .unwrap_or_else(|| panic!("{name} missing from final/"));
                assert_eq!(after.dtype(), before.dtype());
                assert_eq!(after.dims(), before.dims());
                // A fused tensor (Phi-3) is checked part by part: its rows for each part.
                let config = &Model::open(&tiny.spec_str()).unwrap().config;
                let pieces: Vec<(String, candle_core::Tensor, candle_core::Tensor)> =
                    match tunescope::model::fused::parts(config, name) {
                        Some(parts) => parts
                            .into_iter()
                            .map(|p| {
                                let rows = |t: &candle_core::Tensor| {
                                    t.narrow(0, p.rows.start, p.rows.len()).unwrap()
                                };
                                (p.name, rows(before), rows(after))
                            })
                            .collect(),
                        None => vec![(name.clone(), before.clone(), after.clone())],
                    };
                for (piece, before, after) in pieces {
                    let same = bytes_of(&before) == bytes_of(&after);
                    if selection.contains(&piece) {
                        changed += usize::from(!same);
                    } else {
                        assert!(same, "{} ({arch:?}): frozen {piece} changed", recipe.name);
                    }
                }
            }
            // Nearly every trained tensor moves (a norm or bias can in principle stay put).
            assert!(
                changed * 10 >= selection.names.len() * 8,
                "{}: only {changed} of {} trained tensors changed",
                recipe.name,
                selection.names.len()
            );
            // final/ is an ordinary model directory for every other command.
            let reopened = Model::open(&final_dir.to_string_lossy()).unwrap();
            assert_eq!(reopened.module_map().total(), map.total());
            println!("{} on {arch:?}: {} trainable tensors, {changed} changed, frozen ones bit-identical", recipe.name, selection.names.len());
        }
    }
}

#[test]
fn loss_falls_on_a_narrow_task() {
    let tmp = tempfile::tempdir().unwrap();
    let tiny = TinyModel::new(Architecture::Llama, 5);
    let recipe = Recipe::load(
        &repo_root().join("recipes/sa-proj.yaml"),
        &[
            format!("model={}", tiny.spec_str()),
            format!("data={}", write_counting_data(tmp.path(), 32).display()),
            "max_steps=24".into(),
            "optimizer.lr=0.01".into(),
        ],
    )
    .unwrap();
    let (_, losses) = train(&recipe, tmp.path());
    let first = losses[0];
    let last: f64 = losses[losses.len() - 3..].iter().sum::<f64>() / 3.0;
    println!("loss: first {first:.3}, mean of last three {last:.3}");
    assert!(last < 0.5 * first, "loss did not fall: {losses:?}");
}

#[test]
fn stopped_and_resumed_run_equals_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let tiny = TinyModel::new(Architecture::Qwen2, 8);
    let recipe = Recipe::load(
        &repo_root().join("recipes/mlp-gate-up.yaml"),
        &[
            format!("model={}", tiny.spec_str()),
            format!("data={}", write_counting_data(tmp.path(), 32).display()),
            "max_steps=7".into(),
            "batch_size=3".into(),
            "grad_accum=2".into(),
            "optimizer.lr=0.005".into(),
            "optimizer.weight_decay=0.01".into(),
        ],
    )
    .unwrap();
    let (full_run, full_losses) = train(&recipe, &tmp.path().join("a"));

    let run = RunDir::create(&tmp.path().join("b"), "resumed").unwrap();
    run.write_recipe(&recipe).unwrap();
    let control = TrainControl::default();
    let mut first_losses = Vec::new();
    let outcome = run_training(&recipe, &run, false, &control, &mut |e| {
        if let TrainEvent::Step(m) = e {
            first_losses.push(m.loss);
            if m.step == 3 {
                control.request_stop();
            }
        }
    })
    .unwrap();
    assert_eq!(outcome.state, RunState::Stopped);
    assert_eq!(run.read_status().unwrap().state, RunState::Stopped);
    assert_eq!(run.latest_checkpoint(), Some(3));

    let resumed_recipe = RunDir::open(run.path()).unwrap().read_recipe().unwrap();
    let mut rest = Vec::new();
    let outcome = run_training(
        &resumed_recipe,
        &run,
        true,
        &TrainControl::default(),
        &mut |e| {
            if let TrainEvent::Step(m) = e {
                rest.push(m.loss);
            }
        },
    )
    .unwrap();
    assert_eq!(outcome.state, RunState::Finished);
    first_losses.extend(rest);
    assert_eq!(first_losses, full_losses, "losses differ after resume");

    let a = load_tensors(&full_run.final_dir().join("model.safetensors"));
    let b = load_tensors(&run.final_dir().join("model.safetensors"));
    for (name, ta) in &a {
        assert_eq!(
            bytes_of(ta),
            bytes_of(&b[name]),
            "{name} differs after resume"
        );
    }
    let status = run.read_status().unwrap();
    assert_eq!(
        (status.state, status.step, status.total_steps),
        (RunState::Finished, 7, 7)
    );
}

#[test]
fn plan_counts_match_a_hand_count() {
    let tiny = TinyModel::new(Architecture::Qwen2, 1);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tunescope"))
        .args(["plan", "recipes/sa-proj.yaml", "--json", "--set"])
        .arg(format!("model={}", tiny.spec_str()))
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Tiny qwen2: hidden 64, 4 heads of 16, 2 KV heads (kv dim 32), 2 layers, q/k/v biases.
    let (h, kv) = (64u64, 32u64);
    let per_layer = (h * h + h) + 2 * (kv * h + kv) + h * h;
    assert_eq!(plan["trainable"].as_u64().unwrap(), 2 * per_layer);
    assert_eq!(plan["tensors"].as_array().unwrap().len(), 2 * 7);
    assert_eq!(plan["by_kind"]["q"].as_u64().unwrap(), 2 * (h * h + h));
    assert_eq!(plan["by_layer"]["1"].as_u64().unwrap(), per_layer);
    let total = plan["total"].as_u64().unwrap() as f64;
    assert!((plan["fraction"].as_f64().unwrap() - (2 * per_layer) as f64 / total).abs() < 1e-12);
    assert!(
        plan["memory"]["total"].as_u64().unwrap() > plan["memory"]["weights"].as_u64().unwrap()
    );

    let text = std::process::Command::new(env!("CARGO_BIN_EXE_tunescope"))
        .args(["plan", "recipes/sa-proj.yaml", "--set"])
        .arg(format!("model={}", tiny.spec_str()))
        .current_dir(repo_root())
        .output()
        .unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("24,832 of"), "{text}");
    assert!(text.contains("memory estimate"), "{text}");
}

/// Recipes that train only vision-side kinds (projector, vision) need a vision-language model;
/// tests/llava_train.rs covers them.
fn vision_only(path: &Path) -> bool {
    let recipe = tunescope::recipe::Recipe::load(path, &[]).unwrap();
    !recipe.trainable.kinds.is_empty()
        && recipe
            .trainable
            .kinds
            .iter()
            .all(|k| k == "projector" || k == "vision")
}

/// Phi-3: training k and up alone updates exactly their rows of the fused qkv_proj and
/// gate_up_proj; q, v and gate rows stay bit-identical. With weight decay (which would move the
/// frozen rows) the run is refused before it starts.
#[test]
fn parts_of_a_fused_tensor_train_exactly_their_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_counting_data(tmp.path(), 32);
    let tiny = TinyModel::new(Architecture::Phi3, 7);
    let original = load_tensors(&tiny.path().join("model.safetensors"));
    let overrides = |extra: &[&str]| -> Vec<String> {
        let mut v = vec![
            format!("model={}", tiny.spec_str()),
            format!("data={}", data.display()),
            "trainable.kinds=[k, up]".to_string(),
            "max_steps=3".to_string(),
            "optimizer.lr=0.01".to_string(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let recipe = Recipe::load(&repo_root().join("recipes/sa-proj.yaml"), &overrides(&[])).unwrap();
    let (run, _) = train(&recipe, &tmp.path().join("runs"));
    let trained = load_tensors(&run.final_dir().join("model.safetensors"));
    let config = Model::open(&tiny.spec_str()).unwrap().config;
    let mut moved = Vec::new();
    for layer in 0..config.num_hidden_layers {
        for fused in [
            format!("model.layers.{layer}.self_attn.qkv_proj.weight"),
            format!("model.layers.{layer}.mlp.gate_up_proj.weight"),
        ] {
            for part in tunescope::model::fused::parts(&config, &fused).unwrap() {
                let rows = |t: &candle_core::Tensor| {
                    t.narrow(0, part.rows.start, part.rows.len()).unwrap()
                };
                let same = bytes_of(&rows(&original[&fused])) == bytes_of(&rows(&trained[&fused]));
                let selected = part.name.ends_with("[k]") || part.name.ends_with("[up]");
                assert_eq!(!same, selected, "{}: changed = {}", part.name, !same);
                if selected {
                    moved.push(part.name.clone());
                }
            }
        }
    }
    println!("rows changed exactly for {moved:?}");
    let decayed = Recipe::load(
        &repo_root().join("recipes/sa-proj.yaml"),
        &overrides(&["optimizer.weight_decay=0.01"]),
    )
    .unwrap();
    let run = RunDir::create(&tmp.path().join("runs-wd"), &decayed.name).unwrap();
    let err = run_training(&decayed, &run, false, &TrainControl::default(), &mut |_| {})
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    assert!(
        err.contains("weight decay") && err.contains("fused tensor"),
        "{err}"
    );
}
