//! Conformance with PEFT: adapters written by PEFT 0.21 (`scripts/conformance-lora.py`, versions
//! in `tests/fixtures/conformance-lora/MANIFEST.json`) on tiny models of the transformers
//! fixtures load through tunescope (base + adapter folded in) with the adapted model's logits
//! as PEFT computed them (≤ 1e-5 in f32), without Python.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use tunescope::model::decoder::Inputs;
use tunescope::model::Model;

const LOGIT_TOLERANCE: f32 = 1e-5;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The base model of a case as a model directory (weights and config from the transformers
/// fixtures, tokenizer beside them).
fn base_dir(base: &str, dir: &Path) -> PathBuf {
    let out = dir.join(base);
    std::fs::create_dir_all(&out).unwrap();
    let src = root().join("conformance/models").join(base);
    for file in ["model.safetensors", "config.json"] {
        std::fs::copy(src.join(file), out.join(file)).unwrap();
    }
    let tok = root().join("conformance/tokenizer");
    for file in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(tok.join(file), out.join(file)).unwrap();
    }
    out
}

fn cases() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("conformance-lora/MANIFEST.json")).unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
    serde_json::from_value(manifest["cases"].clone()).unwrap()
}

#[test]
fn peft_adapters_fold_into_logits_equal_to_peft() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = cases();
    assert!(cases.len() >= 3);
    for case in cases {
        let dir = root().join("conformance-lora").join(&case);
        let info: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
        let base = base_dir(info["base"].as_str().unwrap(), tmp.path());
        let model = Model::open_adapter(&dir, Some(&base.to_string_lossy())).unwrap();
        let adapter = model.adapter.as_ref().unwrap();
        let expected = common::load_tensors(&dir.join("logits.safetensors"));
        let ids = expected["input_ids"].to_dtype(DType::U32).unwrap();
        let mask = expected["attention_mask"].to_dtype(DType::U32).unwrap();
        let decoder = model
            .decoder(&Default::default(), DType::F32, &Device::Cpu)
            .unwrap();
        let logits = decoder.forward(&Inputs::text(&ids, Some(&mask))).unwrap();
        // Padded positions are not compared (their logits depend on masking conventions).
        let weights = mask.to_dtype(DType::F32).unwrap().unsqueeze(2).unwrap();
        let masked = |t: &Tensor| t.broadcast_mul(&weights).unwrap();
        let diff = common::max_abs_diff(&masked(&logits), &masked(&expected["logits"]));
        // The adapter matters: the base model's logits are far from PEFT's.
        let base_model = Model::open(&base.to_string_lossy()).unwrap();
        let base_logits = base_model
            .decoder(&Default::default(), DType::F32, &Device::Cpu)
            .unwrap()
            .forward(&Inputs::text(&ids, Some(&mask)))
            .unwrap();
        let moved = common::max_abs_diff(&masked(&base_logits), &masked(&expected["logits"]));
        println!(
            "{case}: {} modules, r {}, scale {}: max |Δ logits| {diff:.2e} (base vs adapted {moved:.2e})",
            adapter.modules.len(),
            adapter.settings.r,
            adapter.settings.scale()
        );
        assert!(diff <= LOGIT_TOLERANCE, "{case}: {diff}");
        assert!(
            moved > 1e-3,
            "{case}: the adapter changes nothing ({moved})"
        );
    }
}
