//! Bad model inputs give errors (never panics) that name the file or tensor and what is wrong.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use tunescope::model::decoder::Inputs;

use candle_core::{DType, Device, Tensor};
use tunescope::model::tiny::{make_tiny, TinySpec};
use tunescope::model::{Architecture, Model};

/// A fresh tiny model in its own temp dir.
fn tiny(arch: Architecture, seed: u64) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    make_tiny(&TinySpec::new(arch, seed), &dir).unwrap();
    (tmp, dir)
}

fn dir_str(dir: &Path) -> &str {
    dir.to_str().unwrap()
}

/// The error of opening the model at `dir`, formatted with its whole context chain.
fn open_err(dir: &Path) -> String {
    match Model::open(dir_str(dir)) {
        Ok(_) => panic!("opening {} should have failed", dir.display()),
        Err(err) => format!("{err:#}"),
    }
}

/// The error of opening the model and building its decoder; opening itself must succeed.
fn decoder_err(dir: &Path) -> String {
    let model = Model::open(dir_str(dir)).expect("model should open");
    match model.decoder(&HashSet::new(), DType::F32, &Device::Cpu) {
        Ok(_) => panic!(
            "building the decoder of {} should have failed",
            dir.display()
        ),
        Err(err) => format!("{err:#}"),
    }
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut value);
    std::fs::write(&path, serde_json::to_string_pretty(&value).unwrap()).unwrap();
}

fn assert_contains(message: &str, needle: &str) {
    assert!(
        message.contains(needle),
        "expected the error to mention `{needle}`, got: {message}"
    );
}

fn logits(dir: &Path) -> Vec<Vec<Vec<f32>>> {
    let model = Model::open(dir_str(dir)).unwrap();
    let decoder = model
        .decoder(&HashSet::new(), DType::F32, &Device::Cpu)
        .unwrap();
    let ids = Tensor::new(&[[1u32, 5, 9, 20, 3, 42, 7]], &Device::Cpu).unwrap();
    decoder
        .forward(&Inputs::text(&ids, None))
        .unwrap()
        .to_vec3::<f32>()
        .unwrap()
}

#[test]
fn tiny_models_open_and_build() {
    // The baseline the other tests corrupt: both architectures open and run.
    for arch in [Architecture::Llama, Architecture::Qwen2] {
        let (_tmp, dir) = tiny(arch, 1);
        let out = logits(&dir);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].len(), 7);
        assert!(out[0].iter().flatten().all(|v| v.is_finite()));
    }
}

#[test]
fn missing_config_json() {
    let (_tmp, dir) = tiny(Architecture::Llama, 2);
    std::fs::remove_file(dir.join("config.json")).unwrap();
    let msg = open_err(&dir);
    assert_contains(&msg, "config.json");
    assert_contains(&msg, "missing");
    assert_contains(&msg, dir_str(&dir));
}

#[test]
fn config_json_not_json() {
    let (_tmp, dir) = tiny(Architecture::Qwen2, 3);
    std::fs::write(dir.join("config.json"), "{ \"model_type\": \"qwen2\", oops").unwrap();
    let msg = open_err(&dir);
    assert_contains(&msg, "config.json");
    assert_contains(&msg, "not valid JSON");
}

#[test]
fn unknown_model_type() {
    let (_tmp, dir) = tiny(Architecture::Llama, 4);
    edit_config(&dir, |v| v["model_type"] = serde_json::json!("gpt2"));
    let msg = open_err(&dir);
    assert_contains(&msg, "unsupported");
    assert_contains(&msg, "gpt2");
    for supported in ["llama", "mistral", "qwen2"] {
        assert_contains(&msg, supported);
    }
    assert_contains(&msg, "config.json");
}

#[test]
fn missing_tensor_is_named() {
    let (_tmp, dir) = tiny(Architecture::Llama, 5);
    let file = dir.join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
    let name = "model.layers.1.mlp.up_proj.weight";
    assert!(tensors.remove(name).is_some());
    candle_core::safetensors::save(&tensors, &file).unwrap();

    let msg = decoder_err(&dir);
    assert_contains(&msg, name);
    assert_contains(&msg, "missing");
    assert_contains(&msg, "model.safetensors");
    // The expected shape from config.json: [intermediate, hidden].
    assert_contains(&msg, "[128, 64]");
}

#[test]
fn wrong_shape_for_config() {
    let (_tmp, dir) = tiny(Architecture::Qwen2, 6);
    edit_config(&dir, |v| v["intermediate_size"] = serde_json::json!(96));
    let msg = decoder_err(&dir);
    // The first MLP tensor checked is layer 0's gate projection, [128, 64] in the file.
    assert_contains(&msg, "model.layers.0.mlp.gate_proj.weight");
    assert_contains(&msg, "[128, 64]");
    assert_contains(&msg, "[96, 64]");
    assert_contains(&msg, "model.safetensors");
}

#[test]
fn corrupt_safetensors_header() {
    let (_tmp, dir) = tiny(Architecture::Llama, 7);
    let file = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&file).unwrap();
    for b in bytes.iter_mut().take(16) {
        *b = 0xAB;
    }
    std::fs::write(&file, &bytes).unwrap();
    let msg = open_err(&dir);
    assert_contains(&msg, "model.safetensors");
    assert_contains(&msg, "not a valid safetensors file");
}

#[test]
fn truncated_safetensors() {
    let (_tmp, dir) = tiny(Architecture::Qwen2, 8);
    let file = dir.join("model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..20]).unwrap();
    let msg = open_err(&dir);
    assert_contains(&msg, "model.safetensors");
    assert_contains(&msg, "not a valid safetensors file");
}

#[test]
fn missing_tokenizer_json() {
    let (_tmp, dir) = tiny(Architecture::Llama, 9);
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    let msg = open_err(&dir);
    assert_contains(&msg, "tokenizer.json");
    assert_contains(&msg, "missing");
}

#[test]
fn missing_weights() {
    let (_tmp, dir) = tiny(Architecture::Llama, 10);
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let msg = open_err(&dir);
    assert_contains(&msg, "model.safetensors");
    assert_contains(&msg, dir_str(&dir));
}

#[test]
fn sharded_weights_match_single_file_then_missing_shard() {
    for arch in [Architecture::Llama, Architecture::Qwen2] {
        let (_tmp, dir) = tiny(arch, 11);
        let single = logits(&dir);

        let file = dir.join("model.safetensors");
        let tensors = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
        let mut names: Vec<&String> = tensors.keys().collect();
        names.sort();
        let half = names.len() / 2;
        let shard_names = [
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
        ];
        let mut weight_map = BTreeMap::new();
        let mut shards: [HashMap<String, Tensor>; 2] = [HashMap::new(), HashMap::new()];
        for (i, name) in names.iter().enumerate() {
            let shard = usize::from(i >= half);
            shards[shard].insert((*name).clone(), tensors[*name].clone());
            weight_map.insert((*name).clone(), shard_names[shard].to_string());
        }
        assert!(!shards[0].is_empty() && !shards[1].is_empty());
        for (shard, name) in shards.iter().zip(shard_names) {
            candle_core::safetensors::save(shard, dir.join(name)).unwrap();
        }
        let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
        std::fs::write(
            dir.join("model.safetensors.index.json"),
            serde_json::to_string_pretty(&index).unwrap(),
        )
        .unwrap();
        std::fs::remove_file(&file).unwrap();

        let model = Model::open(dir_str(&dir)).unwrap();
        assert_eq!(model.files.weights.len(), 2);
        assert!(model.files.weight_index.is_some());
        assert_eq!(model.weights.infos().count(), tensors.len());
        drop(model);
        let sharded = logits(&dir);
        assert_eq!(
            single, sharded,
            "sharded logits differ from single-file logits"
        );

        std::fs::remove_file(dir.join(shard_names[1])).unwrap();
        let msg = open_err(&dir);
        assert_contains(&msg, shard_names[1]);
        assert_contains(&msg, "missing");
        assert_contains(&msg, "model.safetensors.index.json");
    }
}

#[test]
fn nonsense_name_is_an_error() {
    let spec = "no/such/dir";
    let err = tunescope::model::source::resolve(spec).expect_err("should not resolve");
    let msg = format!("{err:#}");
    assert_contains(&msg, spec);

    let spec = "no/such/dir/x";
    let err = tunescope::model::source::resolve(spec).expect_err("should not resolve");
    assert_contains(&format!("{err:#}"), spec);
}
