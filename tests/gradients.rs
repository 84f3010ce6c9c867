//! Backward through the decoder: gradients reach exactly the trainable set, agree with finite
//! differences, and frozen linears skip the weight gradient.

mod common;

use std::collections::HashSet;
use tunescope::model::decoder::Inputs;

use candle_core::{DType, Device, Tensor, Var};
use common::TinyModel;
use tunescope::model::decoder::Decoder;
use tunescope::model::linear::frozen_matmul;
use tunescope::model::{Architecture, Model};

fn batch(dev: &Device) -> (Tensor, Tensor, Tensor) {
    let ids = Tensor::new(&[[5u32, 17, 42, 99, 3, 250], [8, 300, 77, 21, 0, 0]], dev).unwrap();
    let mask = Tensor::new(&[[1u32, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], dev).unwrap();
    let targets = Tensor::new(&[[17u32, 42, 99, 3, 250, 6], [300, 77, 21, 9, 0, 0]], dev).unwrap();
    (ids, mask, targets)
}

/// Mean next-token cross entropy over the real tokens.
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
    let n = weights.sum_all().unwrap().to_scalar::<f32>().unwrap() as f64;
    ((picked * weights)
        .unwrap()
        .sum_all()
        .unwrap()
        .neg()
        .unwrap()
        / n)
        .unwrap()
}

fn trainable(names: &[&str]) -> HashSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn gradients_reach_only_the_trainable_set() {
    let dev = Device::Cpu;
    for arch in [
        Architecture::Llama,
        Architecture::Qwen2,
        Architecture::Qwen3,
        Architecture::SmolLM3,
        Architecture::Gemma,
    ] {
        let tiny = TinyModel::new(arch, 21);
        let model = Model::open(&tiny.spec_str()).unwrap();
        let mut names = vec![
            "model.layers.0.self_attn.q_proj.weight",
            "model.layers.1.mlp.gate_proj.weight",
            "model.norm.weight",
        ];
        if arch == Architecture::Qwen2 {
            names.push("model.layers.0.self_attn.q_proj.bias");
        }
        if arch == Architecture::Qwen3 {
            names.push("model.layers.1.self_attn.q_norm.weight");
            names.push("model.layers.0.self_attn.k_norm.weight");
        }
        let set = trainable(&names);
        let decoder = model.decoder(&set, DType::F32, &dev).unwrap();
        assert_eq!(decoder.vars().len(), names.len());
        let store = loss(&decoder, &dev).backward().unwrap();
        let grads = decoder.trainable_grads(&store).unwrap();
        decoder.check_all_trainable_have_grads(&grads).unwrap();
        let mut with_grad = 0;
        for (name, param) in decoder.params() {
            if set.contains(name) {
                let g = grads
                    .get(name)
                    .unwrap_or_else(|| panic!("{name} has no gradient"));
                let norm = g
                    .sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(
                    norm > 0.0 && norm.is_finite(),
                    "{name}: gradient norm {norm}"
                );
                with_grad += 1;
            } else {
                assert!(
                    store.get(param.tensor()).is_none() && !grads.contains_key(name),
                    "frozen {name} received a gradient"
                );
            }
        }
        assert_eq!(with_grad, names.len());
    }
}

#[test]
fn finite_differences_agree_for_q_and_gate() {
    finite_differences_agree(
        Architecture::Qwen2,
        &[
            "model.layers.0.self_attn.q_proj.weight",
            "model.layers.1.mlp.gate_proj.weight",
            "model.layers.0.self_attn.q_proj.bias",
        ],
    );
}

/// Qwen3's per-head q/k norms (before rope), and a projection of SmolLM3's rope-less layer.
#[test]
fn finite_differences_agree_for_qk_norm_and_rope_less_layers() {
    finite_differences_agree(
        Architecture::Qwen3,
        &[
            "model.layers.0.self_attn.q_norm.weight",
            "model.layers.1.self_attn.k_norm.weight",
            "model.layers.0.self_attn.k_proj.weight",
        ],
    );
    finite_differences_agree(
        Architecture::SmolLM3,
        &[
            "model.layers.1.self_attn.q_proj.weight",
            "model.layers.1.self_attn.k_proj.weight",
        ],
    );
}

/// Gemma: (1 + w) norms around attention and MLP, per-head (1 + w) q/k norms, GELU-tanh gating,
/// and (switched on here) attention and final-logit softcapping.
#[test]
fn finite_differences_agree_for_gemma_norms_gating_and_softcapping() {
    let names = [
        "model.layers.0.post_attention_layernorm.weight",
        "model.layers.0.pre_feedforward_layernorm.weight",
        "model.layers.1.post_feedforward_layernorm.weight",
        "model.layers.1.self_attn.q_norm.weight",
        "model.layers.0.mlp.gate_proj.weight",
        "model.embed_tokens.weight",
    ];
    finite_differences_agree(Architecture::Gemma, &names);
    let tiny = TinyModel::new(Architecture::Gemma, 33);
    let path = tiny.path().join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["attn_logit_softcapping"] = serde_json::json!(1.5);
    config["final_logit_softcapping"] = serde_json::json!(2.0);
    std::fs::write(&path, config.to_string()).unwrap();
    finite_differences_agree_in(&tiny, &names[3..5]);
}

/// The three largest gradient entries of each named tensor against central differences.
fn finite_differences_agree(arch: Architecture, names: &[&str]) {
    finite_differences_agree_in(&TinyModel::new(arch, 33), names);
}

fn finite_differences_agree_in(tiny: &TinyModel, names: &[&str]) {
    let dev = Device::Cpu;
    let model = Model::open(&tiny.spec_str()).unwrap();
    let decoder = model.decoder(&trainable(names), DType::F32, &dev).unwrap();
    let store = loss(&decoder, &dev).backward().unwrap();
    let grads = decoder.trainable_grads(&store).unwrap();
    for &name in names {
        let var: &Var = &decoder.vars()[name];
        // The three elements with the largest gradients (well above f32 noise).
        let all = 0..var.as_tensor().elem_count();
        check_against_finite_differences(&decoder, grads.get(name), var, all, name);
    }
}

/// Central differences for the `candidates` elements of `var` with the largest analytic
/// gradient, within 1 % relative.
fn check_against_finite_differences(
    decoder: &Decoder,
    grad: Option<&Tensor>,
    var: &Var,
    candidates: std::ops::Range<usize>,
    label: &str,
) {
    let dev = Device::Cpu;
    let grad: Vec<f32> = grad
        .unwrap_or_else(|| panic!("{label} has no gradient"))
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let original = var.as_tensor().copy().unwrap();
    let values: Vec<f32> = original.flatten_all().unwrap().to_vec1().unwrap();
    let mut order: Vec<usize> = candidates.collect();
    order.sort_by(|&a, &b| grad[b].abs().total_cmp(&grad[a].abs()));
    for &index in order.iter().take(3) {
        let eps = 1e-2f32;
        let eval = |delta: f32| -> f64 {
            let mut v = values.clone();
            v[index] += delta;
            var.set(&Tensor::from_vec(v, original.shape(), &dev).unwrap())
                .unwrap();
            loss(decoder, &dev).to_scalar::<f32>().unwrap() as f64
        };
        let numeric = (eval(eps) - eval(-eps)) / (2.0 * eps as f64);
        var.set(&original).unwrap();
        let analytic = grad[index] as f64;
        let rel = (numeric - analytic).abs() / analytic.abs().max(1e-8);
        println!("{label}[{index}]: analytic {analytic:.6e} numeric {numeric:.6e} rel {rel:.2e}");
        assert!(rel <= 1e-2, "{label}[{index}]: relative error {rel}");
    }
}

#[test]
fn frozen_linear_gives_input_gradient_only() {
    let dev = Device::Cpu;
    let x = Var::from_tensor(
        &Tensor::arange(0f32, 12.0, &dev)
            .unwrap()
            .reshape((3, 4))
            .unwrap()
            .affine(0.1, -0.3)
            .unwrap(),
    )
    .unwrap();
    let w = Tensor::arange(0f32, 20.0, &dev)
        .unwrap()
        .reshape((5, 4))
        .unwrap()
        .affine(0.05, -0.4)
        .unwrap();
    let upstream = Tensor::arange(0f32, 15.0, &dev)
        .unwrap()
        .reshape((3, 5))
        .unwrap()
        .cos()
        .unwrap();

    let ours = frozen_matmul(x.as_tensor(), &w).unwrap();
    let plain = x.as_tensor().matmul(&w.t().unwrap()).unwrap();
    assert_eq!(
        ours.to_vec2::<f32>().unwrap(),
        plain.to_vec2::<f32>().unwrap()
    );

    let g_ours = (ours * &upstream)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let g_plain = (plain * &upstream)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let a = g_ours.get(x.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
    let b = g_plain
        .get(x.as_tensor())
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    for (ra, rb) in a.iter().zip(&b) {
        for (va, vb) in ra.iter().zip(rb) {
            assert!((va - vb).abs() < 1e-6);
        }
    }
    // candle's own matmul stores one more gradient (the frozen weight's); ours does not.
    assert_eq!(g_plain.get_ids().count(), g_ours.get_ids().count() + 1);
    assert!(g_ours.get(&w).is_none());
}

#[test]
fn layers_below_the_lowest_trainable_one_are_not_differentiated() {
    let dev = Device::Cpu;
    let tiny = TinyModel::new(Architecture::Llama, 4);
    let model = Model::open(&tiny.spec_str()).unwrap();
    let decoder = model
        .decoder(
            &trainable(&["model.layers.1.mlp.up_proj.weight"]),
            DType::F32,
            &dev,
        )
        .unwrap();
    let store = loss(&decoder, &dev).backward().unwrap();
    let grads = decoder.trainable_grads(&store).unwrap();
    decoder.check_all_trainable_have_grads(&grads).unwrap();
    for (name, param) in decoder.params() {
        if name != "model.layers.1.mlp.up_proj.weight" {
            assert!(store.get(param.tensor()).is_none(), "{name}");
        }
    }
}

/// Phi-3: selecting k alone makes the fused qkv_proj a `Var` with a row mask on k's rows; the
/// gradient of those rows agrees with finite differences (the trainer zeroes the other rows).
#[test]
fn finite_differences_agree_for_a_part_of_a_fused_tensor() {
    let dev = Device::Cpu;
    let tiny = TinyModel::new(Architecture::Phi3, 33);
    let model = Model::open(&tiny.spec_str()).unwrap();
    let fused = "model.layers.0.self_attn.qkv_proj.weight";
    let part = format!("{fused}[k]");
    let decoder = model
        .decoder(&trainable(&[part.as_str()]), DType::F32, &dev)
        .unwrap();
    let mask: Vec<f32> = decoder.row_masks()[fused]
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let (q, kv) = (model.config.q_dim(), model.config.kv_dim());
    let expected: Vec<f32> = (0..q + 2 * kv)
        .map(|r| if (q..q + kv).contains(&r) { 1.0 } else { 0.0 })
        .collect();
    assert_eq!(mask, expected, "the mask covers exactly k's rows");
    let store = loss(&decoder, &dev).backward().unwrap();
    let grads = decoder.trainable_grads(&store).unwrap();
    let var: &Var = &decoder.vars()[fused];
    let cols = model.config.hidden_size;
    let k_rows = q * cols..(q + kv) * cols;
    check_against_finite_differences(&decoder, grads.get(fused), var, k_rows, &part);
}

/// LoRA adapters: with `B` moved off zero (a fresh `B` is zero, so `A` would get no gradient),
/// the analytic gradients of `A` and `B` agree with finite differences, and the base weights
/// get none (the decoder's only vars are the adapters).
#[test]
fn finite_differences_agree_for_lora_a_and_b() {
    use tunescope::model::lora::{LoraPlan, LoraSettings};
    let dev = Device::Cpu;
    let tiny = TinyModel::new(Architecture::Llama, 34);
    let model = Model::open(&tiny.spec_str()).unwrap();
    let plan = LoraPlan {
        settings: LoraSettings {
            r: 3,
            alpha: 6.0,
            dropout: 0.0,
            use_rslora: false,
        },
        modules: [
            "model.layers.0.self_attn.q_proj",
            "model.layers.1.mlp.down_proj",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        init_seed: 5,
    };
    let decoder = model.lora_decoder(&plan, DType::F32, &dev).unwrap();
    let names: Vec<&String> = decoder.vars().keys().collect();
    assert_eq!(names.len(), 4);
    assert!(names
        .iter()
        .all(|n| n.ends_with(".lora_A.weight") || n.ends_with(".lora_B.weight")));
    for (name, var) in decoder.vars() {
        if name.ends_with("lora_B.weight") {
            let b = Tensor::randn(0f32, 0.5, var.dims(), &dev).unwrap();
            var.set(&b).unwrap();
        }
    }
    let store = loss(&decoder, &dev).backward().unwrap();
    let grads = decoder.trainable_grads(&store).unwrap();
    decoder.check_all_trainable_have_grads(&grads).unwrap();
    for (name, param) in decoder.params() {
        if !param.is_trainable() {
            assert!(store.get(param.tensor()).is_none(), "{name} got a gradient");
        }
    }
    for (name, var) in decoder.vars() {
        let all = 0..var.as_tensor().elem_count();
        check_against_finite_differences(&decoder, grads.get(name), var, all, name);
    }
}

/// The layers' projection weights leave their gradients beside candle's store; a forward
/// starts a new record, so a backward nobody read does not leak into the next step's
/// gradients, and reading empties the record.
#[test]
fn unread_gradients_do_not_reach_the_next_backward() {
    let dev = Device::Cpu;
    let tiny = TinyModel::new(Architecture::Llama, 8);
    let model = Model::open(&tiny.spec_str()).unwrap();
    let name = "model.layers.0.mlp.up_proj.weight";
    let decoder = model
        .decoder(&trainable(&[name]), DType::F32, &dev)
        .unwrap();
    let once = decoder
        .trainable_grads(&loss(&decoder, &dev).backward().unwrap())
        .unwrap();
    let _unread = loss(&decoder, &dev).backward().unwrap();
    let store = loss(&decoder, &dev).backward().unwrap();
    assert!(store.get(decoder.vars()[name].as_tensor()).is_none());
    let again = decoder.trainable_grads(&store).unwrap();
    let diff = common::max_abs_diff(&once[name], &again[name]);
    assert_eq!(diff, 0.0, "an unread backward's gradient was added in");
    assert!(decoder.trainable_grads(&store).unwrap().is_empty());
}
