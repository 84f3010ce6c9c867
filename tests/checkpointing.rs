//! Activation checkpointing: recomputing each layer in the backward gives the gradients that
//! keeping its activations gives (every family's layer shape, frozen layers below, LoRA dropout
//! masks replayed), trains the same run, and `plan` counts what it keeps.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use common::{bytes_of, load_tensors, max_abs_diff, write_counting_data, TinyModel};
use tunescope::model::decoder::{Decoder, HeadPath, Inputs};
use tunescope::model::tiny::TinySpec;
use tunescope::model::{Architecture, Model};
use tunescope::plan::{estimate, StepShape};
use tunescope::recipe::Recipe;
use tunescope::run::{Record, RecordLog, RunDir, RunState};
use tunescope::select;
use tunescope::train::{run_training, TrainControl};

fn batch(dev: &Device) -> (Tensor, Tensor, Tensor) {
    let ids = Tensor::new(&[[5u32, 17, 42, 99, 3, 250], [0, 0, 77, 21, 8, 300]], dev).unwrap();
    let mask = Tensor::new(&[[1u32, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]], dev).unwrap();
    let targets = Tensor::new(&[[17u32, 42, 99, 3, 250, 6], [0, 0, 21, 9, 300, 1]], dev).unwrap();
    (ids, mask, targets)
}

/// Summed next-token cross entropy over the real tokens.
fn loss(decoder: &Decoder, dev: &Device) -> Tensor {
    let (ids, mask, targets) = batch(dev);
    let logits = decoder.forward(&Inputs::text(&ids, Some(&mask))).unwrap();
    let (b, t, v) = logits.dims3().unwrap();
    let logp = candle_nn::ops::log_softmax(&logits.reshape((b * t, v)).unwrap(), 1).unwrap();
    let picked = logp
        .gather(&targets.reshape((b * t, 1)).unwrap(), 1)
        .unwrap()
        .squeeze(1)
        .unwrap();
    let weights = mask.reshape(b * t).unwrap().to_dtype(DType::F32).unwrap();
    (picked * weights)
        .unwrap()
        .sum_all()
        .unwrap()
        .neg()
        .unwrap()
}

/// Each trainable parameter's gradient after one backward, with checkpointing on or off; and
/// how many of them the backward's own store held (the rest came from recomputation).
fn gradients(
    model: &Model,
    trainable: &HashSet<String>,
    checkpointing: bool,
) -> (Vec<(String, Tensor)>, usize) {
    let dev = Device::Cpu;
    let mut decoder = model.decoder(trainable, DType::F32, &dev).unwrap();
    decoder.set_activation_checkpointing(checkpointing);
    let store = loss(&decoder, &dev).backward().unwrap();
    let in_store = decoder
        .vars()
        .values()
        .filter(|var| store.get(var.as_tensor()).is_some())
        .count();
    let all = decoder.trainable_grads(&store).unwrap();
    decoder.check_all_trainable_have_grads(&all).unwrap();
    let grads = all.into_iter().collect();
    (grads, in_store)
}

/// Each gradient of `b` within 1e-5 (relative to the largest entry) of the same one in `a`.
fn assert_same_gradients(label: &str, a: &[(String, Tensor)], b: &[(String, Tensor)]) {
    assert_eq!(a.len(), b.len(), "{label}");
    for ((name, a), (other, b)) in a.iter().zip(b) {
        assert_eq!(name, other, "{label}");
        let scale = a
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let diff = max_abs_diff(a, b);
        assert!(
            diff <= 1e-5 * scale.max(1e-3),
            "{label} {name}: |Δ| {diff} (scale {scale})"
        );
    }
}

/// Every parameter name of `model`.
fn every_param(model: &Model) -> HashSet<String> {
    model
        .module_map()
        .params
        .iter()
        .map(|p| p.name.clone())
        .collect()
}

fn names(list: &[&str]) -> HashSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn recomputed_layers_give_the_kept_gradients() {
    for arch in [
        Architecture::Llama,
        Architecture::Qwen2,
        Architecture::Qwen3,
        Architecture::SmolLM3,
        Architecture::Gemma,
    ] {
        let tiny = TinyModel::new(arch, 31);
        let model = Model::open(&tiny.spec_str()).unwrap();
        let all = every_param(&model);
        // Everything, and a selection whose lowest trained layer sits above frozen ones (the
        // stream entering it carries no graph).
        let upper = names(&[
            "model.layers.1.self_attn.q_proj.weight",
            "model.layers.1.mlp.down_proj.weight",
        ]);
        for (label, set) in [("all", &all), ("upper", &upper)] {
            let (kept, kept_in_store) = gradients(&model, set, false);
            let (recomputed, recomputed_in_store) = gradients(&model, set, true);
            // The layers' projection weights leave their gradients beside the store (the GEMM
            // linear's sink); everything else is in it.
            let projections = set
                .iter()
                .filter(|n| n.contains(".layers.") && n.ends_with("_proj.weight"))
                .count();
            assert!(projections > 0, "{arch:?} {label}");
            assert_eq!(kept_in_store, kept.len() - projections, "{arch:?} {label}");
            // Layer parameters get their gradients from the recomputation only.
            let layer_params = set.iter().filter(|n| n.contains(".layers.")).count();
            assert_eq!(
                recomputed_in_store,
                kept.len() - layer_params,
                "{arch:?} {label}: the layers were not checkpointed"
            );
            assert_same_gradients(&format!("{arch:?} {label}"), &kept, &recomputed);
        }
    }
}

fn recipe(tiny: &TinyModel, dir: &Path, file: &str, extra: &[&str]) -> Recipe {
    let mut overrides = vec![
        format!("model={}", tiny.spec_str()),
        format!("data={}", write_counting_data(dir, 24).display()),
        "max_steps=4".into(),
        "batch_size=3".into(),
        "grad_accum=2".into(),
        "optimizer.lr=0.01".into(),
    ];
    overrides.extend(extra.iter().map(|s| s.to_string()));
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    Recipe::load(&root.join("recipes").join(file), &overrides).unwrap()
}

/// Trains into a new run under `runs`: the run and its (loss, grad norm) per step.
fn train(recipe: &Recipe, runs: &Path) -> (RunDir, Vec<(f64, f64)>) {
    let run = RunDir::create(runs, &recipe.name).unwrap();
    run.write_recipe(recipe).unwrap();
    let outcome = run_training(recipe, &run, false, &TrainControl::default(), &mut |_| {}).unwrap();
    assert_eq!(outcome.state, RunState::Finished, "{:?}", outcome.reason);
    let text = std::fs::read_to_string(run.metrics_path()).unwrap();
    let steps = RecordLog::parse(&text)
        .iter()
        .filter_map(|r| match r {
            Record::Train(m) => Some((m.loss, m.grad_norm)),
            _ => None,
        })
        .collect();
    (run, steps)
}

/// Runs `file` with and without checkpointing and compares the steps and the final tensors.
fn assert_same_training(file: &str, extra: &[&str], final_file: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let tiny = TinyModel::new(Architecture::Qwen2, 21);
    let plain = recipe(&tiny, tmp.path(), file, extra);
    let mut with = extra.to_vec();
    with.push("activation_checkpointing=true");
    let checkpointed = recipe(&tiny, tmp.path(), file, &with);
    assert!(checkpointed.activation_checkpointing && !plain.activation_checkpointing);
    let (plain_run, plain_steps) = train(&plain, &tmp.path().join("plain"));
    let (ck_run, ck_steps) = train(&checkpointed, &tmp.path().join("ck"));
    assert_eq!(plain_steps.len(), ck_steps.len());
    for (i, (a, b)) in plain_steps.iter().zip(&ck_steps).enumerate() {
        assert!(
            (a.0 - b.0).abs() <= 1e-5 * a.0.abs() && (a.1 - b.1).abs() <= 1e-4 * a.1.abs(),
            "{file} step {}: plain {a:?}, checkpointed {b:?}",
            i + 1
        );
    }
    let a = load_tensors(&plain_run.final_dir().join(final_file));
    let b = load_tensors(&ck_run.final_dir().join(final_file));
    assert_eq!(a.len(), b.len());
    let mut identical = 0;
    for (name, ta) in &a {
        if bytes_of(ta) == bytes_of(&b[name]) {
            identical += 1;
        }
        let diff = max_abs_diff(ta, &b[name]);
        assert!(diff < 1e-5, "{file} {name}: |Δ| {diff}");
    }
    println!(
        "{file}: {identical} of {} final tensors bit-identical",
        a.len()
    );
}

#[test]
fn checkpointed_training_matches_plain_training() {
    assert_same_training("mlp.yaml", &[], "model.safetensors");
}

#[test]
fn lora_dropout_masks_are_replayed_in_the_recomputation() {
    // With dropout the recomputed forward must draw the masks of the first forward: another
    // mask would give another gradient and the runs would part at the first step.
    assert_same_training(
        "lora-mlp.yaml",
        &["lora.r=4", "lora.dropout=0.3", "lora.lr=0.01"],
        "adapter_model.safetensors",
    );
}

#[test]
fn plan_counts_what_checkpointing_and_fused_ops_keep() {
    let tiny = TinyModel::new(Architecture::Llama, 5);
    let model = Model::open(&tiny.spec_str()).unwrap();
    let map = model.module_map();
    let spec = tunescope::select::TrainableSpec {
        kinds: vec!["q".into(), "k".into(), "v".into(), "o".into()],
        ..Default::default()
    };
    let selection = select::resolve(&spec, &map).unwrap();
    let shape = StepShape {
        batch: 2,
        seq: 16,
        dtype_bytes: 4,
        activation_checkpointing: false,
        fused_ops: true,
        // The graph's head, as on a GPU; the fused head is checked below.
        fused_head: false,
    };
    let kept = estimate(&model.config, &map, &selection, shape);
    let checkpointed = estimate(
        &model.config,
        &map,
        &selection,
        StepShape {
            activation_checkpointing: true,
            ..shape
        },
    );
    let c = &model.config;
    let tokens = (shape.batch * shape.seq) as u64;
    let (layers, h, vocab) = (
        c.num_hidden_layers as u64,
        c.hidden_size as u64,
        c.vocab_size as u64,
    );
    let kept_head = tokens * vocab * 4 * 3;
    // The estimate's per-layer activations, from the kept figure.
    let per_layer = (kept.activations - kept_head) / layers;
    // Each layer's input and attention output and log-sum-exp, one layer's activations and
    // their gradients; one block holds every row
    // at this size: the logits as before, plus the rows' gradient.
    let (q, heads) = (c.q_dim() as u64, c.num_attention_heads as u64);
    let expected =
        layers * tokens * (h + q + heads) * 4 + 2 * per_layer + kept_head + tokens * h * 4;
    // (With this model's two layers that is no less than keeping everything.)
    assert_eq!(checkpointed.activations, expected);
    // The weight files (f32 here) are mapped while the model is open.
    assert_eq!(kept.mapped_files, map.total() as u64 * 4);
    // Without the fused kernels (a GPU) the scores, probabilities and their gradient are kept:
    // 3·heads·seq values per token and layer instead of one log-sum-exp per head; and SiLU's
    // output, one intermediate row per token and layer.
    let composed = estimate(
        &model.config,
        &map,
        &selection,
        StepShape {
            fused_ops: false,
            ..shape
        },
    );
    let heads = c.num_attention_heads as u64;
    assert_eq!(
        composed.activations - kept.activations,
        layers * tokens * (3 * heads * shape.seq as u64 - heads + c.intermediate_size as u64) * 4
    );
    assert_eq!(
        checkpointed.total - checkpointed.activations,
        kept.total - kept.activations
    );
    // The fused head keeps one block of logits (every row at this size) and the rows' gradient,
    // with or without checkpointing.
    for activation_checkpointing in [false, true] {
        let graph = StepShape {
            activation_checkpointing,
            ..shape
        };
        let fused = estimate(
            &model.config,
            &map,
            &selection,
            StepShape {
                fused_head: true,
                ..graph
            },
        );
        let graph = estimate(&model.config, &map, &selection, graph);
        let graph_head = if activation_checkpointing {
            kept_head + tokens * h * 4
        } else {
            kept_head
        };
        assert_eq!(
            graph.activations - graph_head + tokens * vocab * 4 + tokens * h * 4,
            fused.activations
        );
    }
}

#[test]
fn every_head_path_gives_the_whole_heads_loss_and_gradients() {
    // An own unembedding (Llama), a tied one (Qwen2: the unembedding's gradient joins the
    // lookup's) and Gemma 2's softcapped logits; everything trains, or only the layers (the
    // head frozen), or only the own unembedding (the rows carry no graph).
    let untied_head = || {
        let mut spec = TinySpec::new(Architecture::Llama, 8);
        spec.tie_embeddings = Some(false);
        spec
    };
    let mut gemma2 = TinySpec::new(Architecture::Gemma, 8);
    gemma2.gemma2 = true;
    let cases = [
        ("llama, all", TinySpec::new(Architecture::Llama, 8), None),
        (
            "qwen2 tied, all",
            TinySpec::new(Architecture::Qwen2, 8),
            None,
        ),
        ("gemma2 softcapped, all", gemma2, None),
        ("llama, layers only", untied_head(), Some("layers.")),
        ("llama, head only", untied_head(), Some("lm_head")),
    ];
    for (label, spec, only) in cases {
        let tiny = TinyModel::with_spec(spec);
        let model = Model::open(&tiny.spec_str()).unwrap();
        let trainable: HashSet<String> = every_param(&model)
            .into_iter()
            .filter(|name| only.is_none_or(|part| name.contains(part)))
            .collect();
        head_paths_match(label, &model, &trainable);
    }
}

fn head_paths_match(label: &str, model: &Model, trainable: &HashSet<String>) {
    let dev = Device::Cpu;
    let (ids, mask, targets) = batch(&dev);
    let index = Tensor::new(&[0u32, 1, 2, 3, 4, 5, 8, 9, 10, 11], &dev).unwrap();
    let picked_targets = targets
        .flatten_all()
        .unwrap()
        .index_select(&index, 0)
        .unwrap();
    let run = |path: Option<HeadPath>| {
        let mut decoder = model.decoder(trainable, DType::F32, &dev).unwrap();
        decoder.set_activation_checkpointing(matches!(path, Some(HeadPath::Blocks(_))));
        let hidden = decoder
            .hidden_states(&Inputs::text(&ids, Some(&mask)))
            .unwrap();
        let (b, t, h) = hidden.dims3().unwrap();
        let rows = hidden
            .reshape((b * t, h))
            .unwrap()
            .index_select(&index, 0)
            .unwrap();
        let loss = match path {
            Some(path) => decoder.rows_nll_by(path, &rows, &picked_targets).unwrap(),
            // The reference: the logits, then the composed cross entropy.
            None => tunescope::model::ops::cross_entropy_sum_composed(
                &decoder.logits(&rows).unwrap(),
                &picked_targets,
            )
            .unwrap(),
        };
        if path == Some(HeadPath::Fused) {
            assert_eq!(decoder.head_path(&rows), HeadPath::Fused, "{label}");
        }
        // Scaled as the step scales it, so the op's backward sees a gradient other than 1.
        let scaled = (loss.clone() * 0.25).unwrap();
        let store = scaled.backward().unwrap();
        let all = decoder.trainable_grads(&store).unwrap();
        decoder.check_all_trainable_have_grads(&all).unwrap();
        let grads: Vec<(String, Tensor)> = all.into_iter().collect();
        (loss.to_scalar::<f32>().unwrap(), grads)
    };
    let (reference_loss, reference) = run(None);
    for path in [HeadPath::Whole, HeadPath::Blocks(3), HeadPath::Fused] {
        let (loss, grads) = run(Some(path));
        let label = format!("{label}, {path:?}");
        assert!(
            (reference_loss - loss).abs() <= 1e-5 * reference_loss.abs(),
            "{label}: loss {reference_loss} vs {loss}"
        );
        assert_same_gradients(&label, &reference, &grads);
    }
}
