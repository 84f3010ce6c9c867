//! LoRA in the engine: a fresh adapter leaves the model exactly as it was, training moves only
//! the adapters (base weights bit-identical), the PEFT adapter a run writes folds into a model
//! whose logits equal the adapted forward, dropout only applies while training, and selections
//! LoRA cannot adapt are refused before a run directory exists.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use common::{bytes_of, max_abs_diff, TinyModel};
use tunescope::data::Batch;
use tunescope::model::decoder::Inputs;
use tunescope::model::lora::{peft, LoraPlan, LoraSettings};
use tunescope::model::{Architecture, Decoder, Model};
use tunescope::recipe::{OptimizerSpec, Recipe};
use tunescope::run::{RunDir, RunState};
use tunescope::train::optimizer::AdamW;
use tunescope::train::step::{optimizer_step, StepOptions, StepOutcome};
use tunescope::train::{run_training, TrainControl, TrainEvent};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn plan(modules: &[&str], dropout: f64) -> LoraPlan {
    LoraPlan {
        settings: LoraSettings {
            r: 4,
            alpha: 8.0,
            dropout,
            use_rslora: false,
        },
        modules: modules.iter().map(|s| s.to_string()).collect(),
        init_seed: 11,
    }
}

const MODULES: [&str; 4] = [
    "model.layers.0.self_attn.q_proj",
    "model.layers.0.self_attn.v_proj",
    "model.layers.1.mlp.gate_proj",
    "model.layers.1.mlp.down_proj",
];

fn ids(dev: &Device) -> (Tensor, Tensor) {
    let ids = Tensor::new(&[[5u32, 17, 42, 99, 3, 250], [8, 300, 77, 21, 0, 0]], dev).unwrap();
    let mask = Tensor::new(&[[1u32, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], dev).unwrap();
    (ids, mask)
}

fn logits(decoder: &Decoder) -> Tensor {
    let (ids, mask) = ids(decoder.device());
    decoder.forward(&Inputs::text(&ids, Some(&mask))).unwrap()
}

/// Gives every `B` seeded random values, so the adapters change the output.
fn randomise_b(decoder: &Decoder) {
    for (name, var) in decoder.vars() {
        if name.ends_with("lora_B.weight") {
            let b = Tensor::randn(0f32, 0.3, var.dims(), &Device::Cpu).unwrap();
            var.set(&b).unwrap();
        }
    }
}

fn trained(decoder: &Decoder) -> HashMap<String, Tensor> {
    decoder
        .vars()
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect()
}

#[test]
fn a_fresh_adapter_leaves_the_logits_exactly_as_the_base() {
    for arch in [
        Architecture::Llama,
        Architecture::Qwen2,
        Architecture::Gemma,
    ] {
        let tiny = TinyModel::new(arch, 3);
        let model = Model::open(&tiny.spec_str()).unwrap();
        let base = model
            .decoder(&Default::default(), DType::F32, &Device::Cpu)
            .unwrap();
        let adapted = model
            .lora_decoder(&plan(&MODULES, 0.1), DType::F32, &Device::Cpu)
            .unwrap();
        assert_eq!(adapted.vars().len(), 2 * MODULES.len());
        assert_eq!(
            bytes_of(&logits(&base)),
            bytes_of(&logits(&adapted)),
            "{arch:?}"
        );
        // Its frozen snapshot (the monitor's base) agrees too.
        let snapshot = adapted.frozen_snapshot().unwrap();
        assert_eq!(bytes_of(&logits(&base)), bytes_of(&logits(&snapshot)));
    }
}

#[test]
fn folding_the_written_adapter_equals_the_adapted_forward() {
    let tiny = TinyModel::new(Architecture::Qwen2, 4);
    let model = Model::open(&tiny.spec_str()).unwrap();
    let p = plan(&MODULES, 0.0);
    let adapted = model.lora_decoder(&p, DType::F32, &Device::Cpu).unwrap();
    randomise_b(&adapted);
    let live = logits(&adapted);
    let base = logits(
        &model
            .decoder(&Default::default(), DType::F32, &Device::Cpu)
            .unwrap(),
    );
    assert!(
        max_abs_diff(&live, &base) > 1e-3,
        "the adapters change nothing"
    );

    let tmp = tempfile::tempdir().unwrap();
    let adapter = tmp.path().join("adapter");
    peft::write_adapter(&adapter, &p, &tiny.spec_str(), &trained(&adapted)).unwrap();
    let names: Vec<String> = common::load_tensors(&adapter.join(peft::WEIGHTS_FILE))
        .into_keys()
        .collect();
    assert!(
        names.contains(&"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight".into())
    );
    assert_eq!(names.len(), 8);

    // Model::open on the adapter directory folds it in.
    let opened = Model::open(&adapter.to_string_lossy()).unwrap();
    assert_eq!(
        opened.adapter.as_ref().unwrap().modules.len(),
        MODULES.len()
    );
    let folded = opened
        .decoder(&Default::default(), DType::F32, &Device::Cpu)
        .unwrap();
    // f32 rounding of W + scale·B·A against x·Wᵀ + scale·(x·Aᵀ)·Bᵀ: within 1e-5 of the logits' scale.
    let scale = live
        .abs()
        .unwrap()
        .max_keepdim(2)
        .unwrap()
        .max_all()
        .unwrap();
    let tolerance = 1e-5 * scale.to_scalar::<f32>().unwrap().max(1.0);
    let diff = max_abs_diff(&logits(&folded), &live);
    assert!(
        diff < tolerance,
        "folded vs adapted: {diff} (tolerance {tolerance})"
    );

    // `merge` writes the same folded model as a full model directory.
    let merged = tmp.path().join("merged");
    tunescope::merge::fold_to(&adapter.to_string_lossy(), None, &merged).unwrap();
    assert!(merged.join("tokenizer.json").is_file());
    let reopened = Model::open(&merged.to_string_lossy()).unwrap();
    assert!(reopened.adapter.is_none());
    let diff = max_abs_diff(
        &logits(
            &reopened
                .decoder(&Default::default(), DType::F32, &Device::Cpu)
                .unwrap(),
        ),
        &live,
    );
    assert!(diff < tolerance, "merged vs adapted: {diff}");
}

#[test]
fn training_moves_only_the_adapters_and_dropout_is_seeded_and_training_only() {
    let tiny = TinyModel::new(Architecture::Llama, 5);
    let model = Model::open(&tiny.spec_str()).unwrap();
    let decoder = model
        .lora_decoder(&plan(&MODULES, 0.2), DType::F32, &Device::Cpu)
        .unwrap();
    let base_before: Vec<(String, Vec<u8>)> = decoder
        .params()
        .iter()
        .filter(|(_, p)| !p.is_trainable())
        .map(|(n, p)| (n.clone(), bytes_of(p.tensor())))
        .collect();
    assert!(!base_before.is_empty());
    let spec = OptimizerSpec {
        lr: 1e-2,
        ..Default::default()
    };
    let mut optimizer = AdamW::new(decoder.vars(), &spec).unwrap();
    let batch = Batch {
        input_ids: vec![vec![5, 17, 42, 99, 3, 250], vec![8, 300, 77, 21, 0, 0]],
        labels: vec![
            vec![17, 42, 99, 3, 250, 6],
            vec![300, 77, 21, -100, -100, -100],
        ],
        attention_mask: vec![vec![1; 6], vec![1, 1, 1, 1, 0, 0]],
        pixel_values: Vec::new(),
    };
    let mut losses = Vec::new();
    for _ in 0..3 {
        match optimizer_step(
            &decoder,
            &mut optimizer,
            std::slice::from_ref(&batch),
            1e-2,
            StepOptions::default(),
        )
        .unwrap()
        {
            StepOutcome::Updated(report) => losses.push(report.loss),
            StepOutcome::NotFinite(what) => panic!("{what}"),
        }
    }
    assert!(losses[2] < losses[0], "loss does not fall: {losses:?}");
    for (name, before) in &base_before {
        assert_eq!(
            &bytes_of(decoder.params()[name].tensor()),
            before,
            "{name} moved"
        );
    }
    for (name, var) in decoder.vars() {
        assert!(name.contains(".lora_"), "{name} is not an adapter tensor");
        if name.ends_with("lora_B.weight") {
            let norm = var
                .as_tensor()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(norm > 0.0, "{name} did not move");
        }
    }
    // Outside training no dropout: two forwards agree exactly. In training mode the masks
    // change the output, and the same step and micro-batch draw the same masks.
    let eval = bytes_of(&logits(&decoder));
    assert_eq!(eval, bytes_of(&logits(&decoder)));
    let train = |step, micro| {
        let _guard = decoder.training(step, micro);
        bytes_of(&logits(&decoder))
    };
    let (a, b, c) = (train(7, 0), train(7, 0), train(7, 1));
    assert_ne!(a, eval);
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(eval, bytes_of(&logits(&decoder)));
}

fn write_data(dir: &Path) -> PathBuf {
    let mut text = String::new();
    for i in 0..24usize {
        let n = 1 + (i * 5) % 6;
        let items = vec!["apple"; n].join(" ");
        text.push_str(&serde_json::json!({"prompt": format!("how many : {items}"), "response": n.to_string()}).to_string());
        text.push('\n');
    }
    let path = dir.join("count.jsonl");
    std::fs::write(&path, text).unwrap();
    path
}

fn lora_recipe(tiny: &TinyModel, data: &Path, extra: &[&str]) -> anyhow::Result<Recipe> {
    let mut overrides = vec![
        format!("model={}", tiny.spec_str()),
        format!("data={}", data.display()),
        "max_steps=4".to_string(),
        "lora.r=8".to_string(),
        "lora.lr=0.01".to_string(),
        "schedule.warmup_ratio=0".to_string(),
        "batch_size=4".to_string(),
    ];
    overrides.extend(extra.iter().map(|s| s.to_string()));
    Recipe::load(&repo_root().join("recipes/lora-mlp.yaml"), &overrides)
}

fn train(recipe: &Recipe, runs: &Path, stop_at: Option<usize>) -> (RunDir, Vec<f64>) {
    let run = RunDir::create(runs, &recipe.name).unwrap();
    run.write_recipe(recipe).unwrap();
    let control = TrainControl::default();
    let mut losses = Vec::new();
    run_training(recipe, &run, false, &control, &mut |e| {
        if let TrainEvent::Step(m) = e {
            losses.push(m.loss);
            if Some(m.step) == stop_at {
                control.request_stop();
            }
        }
    })
    .unwrap();
    (run, losses)
}

#[test]
fn a_lora_run_writes_a_peft_adapter_and_resumes_bit_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_data(tmp.path());
    let tiny = TinyModel::new(Architecture::Qwen2, 6);
    let recipe = lora_recipe(&tiny, &data, &[]).unwrap();
    let (full, losses) = train(&recipe, &tmp.path().join("a"), None);
    assert_eq!(losses.len(), 4);
    assert_eq!(full.read_status().unwrap().state, RunState::Finished);
    let fin = full.final_dir();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fin.join(peft::CONFIG_FILE)).unwrap())
            .unwrap();
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(config["r"], 8);
    assert_eq!(config["lora_alpha"], 32.0);
    assert_eq!(config["target_modules"].as_array().unwrap().len(), 3 * 2);
    assert!(!fin.join("model.safetensors").exists());
    // The base model's files are untouched and the adapter opens as a model.
    let opened = Model::open(&fin.to_string_lossy()).unwrap();
    assert_eq!(opened.adapter.unwrap().settings.r, 8);

    // Stop after step 2, resume: same losses, same adapter bytes.
    let (run, mut first) = train(&recipe, &tmp.path().join("b"), Some(2));
    assert_eq!(run.read_status().unwrap().state, RunState::Stopped);
    let ckpt = run.load_checkpoint(2, &Device::Cpu).unwrap();
    assert!(
        ckpt.trained.keys().all(|n| n.contains(".lora_")),
        "{:?}",
        ckpt.trained.keys()
    );
    let resumed = RunDir::open(run.path()).unwrap().read_recipe().unwrap();
    run_training(&resumed, &run, true, &TrainControl::default(), &mut |e| {
        if let TrainEvent::Step(m) = e {
            first.push(m.loss);
        }
    })
    .unwrap();
    assert_eq!(first, losses);
    let a = common::load_tensors(&fin.join(peft::WEIGHTS_FILE));
    let b = common::load_tensors(&run.final_dir().join(peft::WEIGHTS_FILE));
    for (name, t) in &a {
        assert_eq!(bytes_of(t), bytes_of(&b[name]), "{name}");
    }
}

#[test]
fn selections_lora_cannot_adapt_are_refused_before_a_run_exists() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_data(tmp.path());
    let tiny = TinyModel::new(Architecture::Qwen2, 7);
    let cases: [(&[&str], &str); 4] = [
        (
            &["trainable.kinds=[gate, norm]"],
            "model.layers.0.input_layernorm.weight",
        ),
        (
            &["trainable.kinds=[q]", "trainable.biases=true"],
            "trainable.biases: false",
        ),
        (&["trainable.kinds=[embed]"], "model.embed_tokens.weight"),
        (&["lora.use_dora=true"], "use_dora"),
    ];
    for (extra, needle) in cases {
        let runs = tmp.path().join("runs");
        let err = lora_recipe(&tiny, &data, extra)
            .and_then(|r| tunescope::train::prepare(&r).map(drop))
            .unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains(needle), "{extra:?}: {text}");
        assert!(!runs.exists());
    }
    // lr_by_kind has no meaning with LoRA.
    let err = lora_recipe(&tiny, &data, &["optimizer.lr_by_kind.up=0.1"]).unwrap_err();
    assert!(format!("{err:#}").contains("lr_by_kind"), "{err:#}");
}
