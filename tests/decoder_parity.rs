//! Our differentiable decoder must produce the same logits as candle-transformers' reference
//! implementations on the same weights, with padding in the batch, and with the KV cache.

mod common;

use std::collections::HashSet;
use tunescope::model::decoder::Inputs;

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use common::{max_abs_diff, TinyModel};
use tunescope::model::{Architecture, Model};

const TOLERANCE: f32 = 1e-4;

/// config.json in the transformers-4 layout that candle-transformers reads: make-tiny writes
/// transformers 5's `rope_parameters`, and candle would silently take theta 10000 without
/// a top-level `rope_theta`.
fn legacy_config(path: &std::path::Path) -> serde_json::Value {
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let theta = config["rope_parameters"]["rope_theta"].clone();
    assert!(
        theta.is_number(),
        "make-tiny writes rope_parameters.rope_theta"
    );
    config["rope_theta"] = theta;
    config
}

/// Two sequences of different lengths.
fn sequences() -> Vec<Vec<u32>> {
    vec![vec![5, 17, 42, 99, 3, 250, 11], vec![8, 300, 77, 21]]
}

/// Pads `seqs` to one length (left or right), returning ids and the attention mask.
fn pad(seqs: &[Vec<u32>], left: bool, pad_id: u32) -> (Tensor, Tensor) {
    let len = seqs.iter().map(Vec::len).max().unwrap();
    let mut ids = Vec::new();
    let mut mask = Vec::new();
    for s in seqs {
        let padding = len - s.len();
        let (mut row, mut m) = (Vec::new(), Vec::new());
        if left {
            row.extend(std::iter::repeat_n(pad_id, padding));
            m.extend(std::iter::repeat_n(0u32, padding));
        }
        row.extend_from_slice(s);
        m.extend(std::iter::repeat_n(1u32, s.len()));
        if !left {
            row.extend(std::iter::repeat_n(pad_id, padding));
            m.extend(std::iter::repeat_n(0u32, padding));
        }
        ids.extend(row);
        mask.extend(m);
    }
    let dev = Device::Cpu;
    (
        Tensor::from_vec(ids, (seqs.len(), len), &dev).unwrap(),
        Tensor::from_vec(mask, (seqs.len(), len), &dev).unwrap(),
    )
}

/// `reference` gives the logits of every position of one sequence, `(T, V)`.
fn check_batch_against_reference(model: &Model, reference: &dyn Fn(&[u32]) -> Tensor) {
    let dev = Device::Cpu;
    let decoder = model.decoder(&HashSet::new(), DType::F32, &dev).unwrap();
    let seqs = sequences();
    for left in [false, true] {
        let (ids, mask) = pad(&seqs, left, 0);
        let logits = decoder.forward(&Inputs::text(&ids, Some(&mask))).unwrap();
        let len = ids.dim(1).unwrap();
        for (row, seq) in seqs.iter().enumerate() {
            let expected = reference(seq);
            let start = if left { len - seq.len() } else { 0 };
            let ours = logits.i((row, start..start + seq.len(), ..)).unwrap();
            let diff = max_abs_diff(&ours, &expected);
            println!(
                "row {row} ({} padding): max |Δ| = {diff:.2e}",
                if left { "left" } else { "right" }
            );
            assert!(
                diff <= TOLERANCE,
                "row {row} left={left}: max abs diff {diff} > {TOLERANCE}"
            );
        }
    }
    // The KV-cache path gives the same last-position logits, token by token, left-padded batch.
    let (ids, mask) = pad(&seqs, true, 0);
    let valid = common::valid_rows(&mask);
    let len = ids.dim(1).unwrap();
    let split = 3;
    let mut cache = decoder.new_cache(seqs.len());
    let first = decoder
        .forward_cached(
            &ids.narrow(1, 0, split).unwrap(),
            Some(
                &valid
                    .iter()
                    .map(|r| r[..split].to_vec())
                    .collect::<Vec<_>>(),
            ),
            &mut cache,
            None,
        )
        .unwrap();
    assert_eq!(first.dims(), &[seqs.len(), model.config.vocab_size]);
    let mut last = first;
    for t in split..len {
        let step_valid: Vec<Vec<bool>> = valid.iter().map(|r| vec![r[t]]).collect();
        last = decoder
            .forward_cached(
                &ids.narrow(1, t, 1).unwrap(),
                Some(&step_valid),
                &mut cache,
                None,
            )
            .unwrap();
    }
    for (row, seq) in seqs.iter().enumerate() {
        let expected = reference(seq).i(seq.len() - 1).unwrap();
        let diff = max_abs_diff(&last.i(row).unwrap(), &expected);
        println!("kv-cache row {row}: max |Δ| = {diff:.2e}");
        assert!(diff <= TOLERANCE, "kv-cache row {row}: {diff}");
    }
}

#[test]
fn llama_matches_candle_transformers() {
    use candle_transformers::models::llama::{Cache, Llama, LlamaConfig};
    let tiny = TinyModel::new(Architecture::Llama, 7);
    let model = Model::open(&tiny.spec_str()).unwrap();
    let dev = Device::Cpu;
    let cfg: LlamaConfig =
        serde_json::from_value(legacy_config(&tiny.path().join("config.json"))).unwrap();
    let cfg = cfg.into_config(false);
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(
            &[tiny.path().join("model.safetensors")],
            DType::F32,
            &dev,
        )
        .unwrap()
    };
    let llama = Llama::load(vb, &cfg).unwrap();
    // candle's Llama returns last-position logits only: feed one token at a time with its cache.
    let reference = |seq: &[u32]| -> Tensor {
        let mut cache = Cache::new(true, DType::F32, &cfg, &dev).unwrap();
        let rows: Vec<Tensor> = seq
            .iter()
            .enumerate()
            .map(|(pos, &tok)| {
                let input = Tensor::new(&[tok], &dev).unwrap().unsqueeze(0).unwrap();
                llama
                    .forward(&input, pos, &mut cache)
                    .unwrap()
                    .squeeze(0)
                    .unwrap()
            })
            .collect();
        Tensor::stack(&rows, 0).unwrap()
    };
    check_batch_against_reference(&model, &reference);
}

#[test]
fn qwen2_matches_candle_transformers() {
    use candle_transformers::models::qwen2::{Config, Model as Qwen2};
    let tiny = TinyModel::new(Architecture::Qwen2, 11);
    let model = Model::open(&tiny.spec_str()).unwrap();
    assert!(model.config.tie_word_embeddings && model.config.qkv_bias);
    let dev = Device::Cpu;
    let cfg: Config =
        serde_json::from_value(legacy_config(&tiny.path().join("config.json"))).unwrap();
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(
            &[tiny.path().join("model.safetensors")],
            DType::F32,
            &dev,
        )
        .unwrap()
    };
    let embed = vb
        .get(
            (cfg.vocab_size, cfg.hidden_size),
            "model.embed_tokens.weight",
        )
        .unwrap();
    let qwen = std::cell::RefCell::new(Qwen2::new(&cfg, vb).unwrap());
    let reference = |seq: &[u32]| -> Tensor {
        let mut m = qwen.borrow_mut();
        m.clear_kv_cache();
        let input = Tensor::new(seq, &dev).unwrap().unsqueeze(0).unwrap();
        let hidden = m.forward(&input, 0, None).unwrap().squeeze(0).unwrap();
        hidden.matmul(&embed.t().unwrap()).unwrap()
    };
    check_batch_against_reference(&model, &reference);
}

#[test]
fn llama3_rope_scaling_and_untied_qwen2_load() {
    // llama3 frequency scaling matches candle-transformers' formula on a hand-made config.
    let tiny = TinyModel::new(Architecture::Llama, 3);
    let path = tiny.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64});
    cfg["rope_theta"] = serde_json::json!(500000.0);
    // The transformers-4 layout, which candle's LlamaConfig reads below.
    cfg.as_object_mut().unwrap().remove("rope_parameters");
    std::fs::write(&path, cfg.to_string()).unwrap();
    let model = Model::open(&tiny.spec_str()).unwrap();
    let ours = model.config.rope_inv_freq();
    let base: Vec<f32> = (0..16)
        .step_by(2)
        .map(|i| 1f32 / 500000f32.powf(i as f32 / 16.0))
        .collect();
    assert_eq!(ours.len(), base.len());
    assert!(
        ours.iter().zip(&base).any(|(a, b)| (a - b).abs() > 1e-9),
        "scaling changed nothing"
    );
    // Parity with candle's llama (which implements llama3 scaling) on that config.
    use candle_transformers::models::llama::{Cache, Llama, LlamaConfig};
    let dev = Device::Cpu;
    let lcfg: LlamaConfig = serde_json::from_value(cfg).unwrap();
    let lcfg = lcfg.into_config(false);
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(
            &[tiny.path().join("model.safetensors")],
            DType::F32,
            &dev,
        )
        .unwrap()
    };
    let llama = Llama::load(vb, &lcfg).unwrap();
    let reference = |seq: &[u32]| -> Tensor {
        let mut cache = Cache::new(true, DType::F32, &lcfg, &dev).unwrap();
        let rows: Vec<Tensor> = seq
            .iter()
            .enumerate()
            .map(|(pos, &tok)| {
                let input = Tensor::new(&[tok], &dev).unwrap().unsqueeze(0).unwrap();
                llama
                    .forward(&input, pos, &mut cache)
                    .unwrap()
                    .squeeze(0)
                    .unwrap()
            })
            .collect();
        Tensor::stack(&rows, 0).unwrap()
    };
    check_batch_against_reference(&model, &reference);

    // An untied Qwen2 loads its own lm_head.
    let mut spec = tunescope::model::tiny::TinySpec::new(Architecture::Qwen2, 5);
    spec.tie_embeddings = Some(false);
    let untied = TinyModel::with_spec(spec);
    let model = Model::open(&untied.spec_str()).unwrap();
    let decoder = model.decoder(&HashSet::new(), DType::F32, &dev).unwrap();
    assert!(decoder.params().contains_key("lm_head.weight"));
}

#[test]
fn bf16_forward_is_close_to_f32() {
    let tiny = TinyModel::new(Architecture::Qwen2, 2);
    let model = Model::open(&tiny.spec_str()).unwrap();
    let dev = Device::Cpu;
    let ids = Tensor::new(&[[5u32, 17, 42, 99, 3]], &dev).unwrap();
    let f32_logits = model
        .decoder(&HashSet::new(), DType::F32, &dev)
        .unwrap()
        .forward(&Inputs::text(&ids, None))
        .unwrap();
    let bf16_logits = model
        .decoder(&HashSet::new(), DType::BF16, &dev)
        .unwrap()
        .forward(&Inputs::text(&ids, None))
        .unwrap();
    assert_eq!(bf16_logits.dtype(), DType::F32);
    let diff = max_abs_diff(&f32_logits, &bf16_logits);
    let scale = f32_logits
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    println!("bf16 vs f32: max |Δ| = {diff:.3e} (logit scale {scale:.2})");
    assert!(
        diff < 0.05 * scale.max(1.0),
        "bf16 logits too far from f32: {diff}"
    );
}
