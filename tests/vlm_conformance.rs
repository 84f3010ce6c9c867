//! Vision-language conformance with transformers: tiny LLaVA-1.5, LLaVA-NeXT and
//! LLaVA-OneVision models written by `scripts/conformance-vlm.py` (tests/fixtures/vlm/), loaded
//! in every tensor layout, their images preprocessed by us and by transformers' processors, and
//! logits compared on image prompts of several sizes and aspect ratios.

mod common;

use std::path::{Path, PathBuf};
use tunescope::model::decoder::Inputs;

use candle_core::{DType, Device, Tensor};
use serde_json::Value;
use tunescope::model::names::TensorLayout;
use tunescope::model::vlm::{ImageBatch, Pixels};
use tunescope::model::{Model, ParamKind};

const TOLERANCE: f32 = 1e-4;
const CASES: [&str; 4] = ["llava", "llava-next", "llava-onevision", "qwen2.5-vl"];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vlm")
}

fn expected(case: &str) -> Value {
    let path = fixtures().join(case).join("expected.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn expected_tensors(case: &str) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(
        fixtures().join(case).join("expected.safetensors"),
        &Device::Cpu,
    )
    .unwrap()
}

/// The case's model directory with `weights` (a file of `layouts/`, or the saved one) as its
/// `model.safetensors`.
fn model_dir(case: &str, weights: Option<&str>) -> tempfile::TempDir {
    let src = fixtures().join(case);
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if path.is_file() && !name.starts_with("expected") {
            std::fs::copy(&path, dir.path().join(&name)).unwrap();
        }
    }
    if let Some(layout) = weights {
        std::fs::copy(
            src.join("layouts").join(format!("{layout}.safetensors")),
            dir.path().join("model.safetensors"),
        )
        .unwrap();
    }
    dir
}

fn open(dir: &tempfile::TempDir) -> Model {
    Model::open(dir.path().to_str().unwrap()).unwrap()
}

fn image_path(name: &str) -> PathBuf {
    fixtures().join("images").join(format!("{name}.png"))
}

fn image_size(name: &str) -> (u32, u32) {
    let img = image::open(image_path(name)).unwrap();
    (img.height(), img.width())
}

/// transformers' pixel values of record `index` as our pixels.
fn their_pixels(case: &str, record: &Value, index: usize) -> Vec<Pixels> {
    let tensors = expected_tensors(case);
    record["images"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let t = &tensors[&format!("pixels.{index}.{i}")];
            // Qwen2.5-VL's pixels are flat patches (N, C·T·P·P): (N, C·T, P, P) here.
            let t = &match t.rank() {
                2 => {
                    let (n, per) = t.dims2().unwrap();
                    let p = ((per / 6) as f64).sqrt() as usize;
                    t.reshape((n, 6, p, p)).unwrap()
                }
                _ => t.clone(),
            };
            let (tiles, c, h, w) = t.dims4().unwrap();
            Pixels {
                dims: (c, h, w),
                tiles,
                original: image_size(name.as_str().unwrap()),
                grid: record
                    .get("image_grid_thw")
                    .map(|g| {
                        let g = &g[i];
                        (
                            g[1].as_u64().unwrap() as usize,
                            g[2].as_u64().unwrap() as usize,
                        )
                    })
                    .unwrap_or((0, 0)),
                values: std::sync::Arc::new(t.flatten_all().unwrap().to_vec1::<f32>().unwrap()),
            }
        })
        .collect()
}

fn ids_of(record: &Value) -> Vec<u32> {
    record["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

/// Our logits at positions `logits_from..` of the record, with `pixels`.
fn our_logits(model: &Model, record: &Value, pixels: &[Pixels]) -> Tensor {
    let decoder = model
        .decoder(&Default::default(), DType::F32, &Device::Cpu)
        .unwrap();
    let ids = ids_of(record);
    let input = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let refs: Vec<&Pixels> = pixels.iter().collect();
    let images = ImageBatch::from_pixels(&refs, &Device::Cpu).unwrap();
    let logits = decoder
        .forward(&Inputs::text(&input, None).with_images(images.as_ref()))
        .unwrap()
        .squeeze(0)
        .unwrap();
    let from = record["logits_from"].as_u64().unwrap() as usize;
    logits.narrow(0, from, ids.len() - from).unwrap()
}

#[test]
fn logits_match_transformers_on_image_prompts_of_every_size() {
    for case in CASES {
        let dir = model_dir(case, None);
        let model = open(&dir);
        let tensors = expected_tensors(case);
        let exp = expected(case);
        let mut worst = 0f32;
        for (index, record) in exp["records"].as_array().unwrap().iter().enumerate() {
            let pixels = their_pixels(case, record, index);
            let ours = our_logits(&model, record, &pixels);
            let diff = common::max_abs_diff(&ours, &tensors[&format!("logits.{index}")]);
            assert!(
                diff <= TOLERANCE,
                "{case} record {index} ({:?}): max |Δlogit| {diff}",
                record["images"]
            );
            worst = worst.max(diff);
        }
        eprintln!(
            "{case}: max |Δlogit| {worst:.2e} over {} records",
            exp["records"].as_array().unwrap().len()
        );
    }
}

#[test]
fn preprocessing_and_image_tokens_match_transformers_processors() {
    for case in CASES {
        let dir = model_dir(case, None);
        let model = open(&dir);
        let inputs = model
            .tokenizer
            .images
            .as_ref()
            .expect("a vision-language model");
        let exp = expected(case);
        let tensors = expected_tensors(case);
        let mut worst = 0f32;
        for (index, record) in exp["records"].as_array().unwrap().iter().enumerate() {
            let names: Vec<&str> = record["images"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            let paths: Vec<PathBuf> = names.iter().map(|n| image_path(n)).collect();
            let path_refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
            let ours = inputs.load_record_images(&path_refs).unwrap();
            for (i, pixels) in ours.iter().enumerate() {
                let theirs = &tensors[&format!("pixels.{index}.{i}")];
                assert_eq!(
                    pixels.tiles,
                    theirs.dim(0).unwrap(),
                    "{case} record {index} image {i}: tile count"
                );
                // Compared flat: Qwen2.5-VL's patches are (N, C·T·P·P) there, (N, C·T, P, P) here.
                let theirs = &theirs.flatten_all().unwrap();
                let mine =
                    Tensor::from_slice(&pixels.values, pixels.values.len(), &Device::Cpu).unwrap();
                worst = worst.max(common::max_abs_diff(&mine, theirs));
            }
            // The prompt text, tokenized and expanded by us, equals the processor's input ids.
            let text = record["text"].as_str().unwrap();
            let ids = model.tokenizer.encode(text).unwrap();
            let refs: Vec<&Pixels> = ours.iter().collect();
            let (expanded, placeholders) = inputs.expand(&ids, &refs);
            assert_eq!(placeholders, names.len());
            assert_eq!(expanded, ids_of(record), "{case} record {index}: input ids");
            // And our pixels give the same logits.
            let logits = our_logits(&model, record, &ours);
            let diff = common::max_abs_diff(&logits, &tensors[&format!("logits.{index}")]);
            assert!(
                diff <= TOLERANCE,
                "{case} record {index}: logits from our pixels differ by {diff}"
            );
        }
        eprintln!("{case}: max |Δpixel| {worst:.2e}");
        assert!(
            worst <= 1e-5,
            "{case}: pixel values differ from transformers' by {worst}"
        );
    }
}

#[test]
fn every_tensor_layout_loads_the_same_model() {
    let layouts: &[(&str, &[&str])] = &[
        ("llava", &["in-memory", "hub-legacy"]),
        ("llava-next", &["in-memory"]),
        ("llava-onevision", &["in-memory"]),
        ("qwen2.5-vl", &["in-memory"]),
    ];
    for (case, names) in layouts {
        let exp = expected(case);
        let record = &exp["records"][0];
        let pixels = their_pixels(case, record, 0);
        let saved = open(&model_dir(case, None));
        let reference = our_logits(&saved, record, &pixels);
        let kinds = |m: &Model| {
            let map = m.module_map();
            (map.totals_by_kind(), map.num_layers())
        };
        for layout in *names {
            let dir = model_dir(case, Some(layout));
            let model = open(&dir);
            let found = TensorLayout::detect(&model.config, &model.weights).unwrap();
            eprintln!("{case} {layout}: {}", found.describe());
            assert_eq!(kinds(&model), kinds(&saved), "{case} {layout}: module map");
            let sel = tunescope::select::resolve(
                &tunescope::select::preset("sa-proj").unwrap(),
                &model.module_map(),
            )
            .unwrap();
            let lm_attention = model
                .module_map()
                .params
                .iter()
                .filter(|p| {
                    matches!(
                        p.kind,
                        ParamKind::Q | ParamKind::K | ParamKind::V | ParamKind::O
                    ) && !p.name.contains("vision_tower")
                })
                .count();
            assert_eq!(
                sel.len(),
                lm_attention,
                "{case} {layout}: sa-proj is the LM's q/k/v/o"
            );
            assert!(lm_attention >= 8);
            assert!(sel.names.iter().all(|n| !n.contains("vision_tower")
                && !n.contains("visual")
                && n.contains("language_model")));
            let logits = our_logits(&model, record, &pixels);
            assert_eq!(
                common::max_abs_diff(&logits, &reference),
                0.0,
                "{case} {layout}: logits"
            );
        }
        let map = saved.module_map();
        assert!(map
            .params
            .iter()
            .filter(|p| p.name.contains("vision_tower"))
            .all(|p| p.kind == ParamKind::Vision));
    }
}

#[test]
fn both_config_generations_read_the_same_model() {
    for case in CASES {
        let exp = expected(case);
        let record = &exp["records"][0];
        let pixels = their_pixels(case, record, 0);
        let v5 = open(&model_dir(case, None));
        let dir = model_dir(case, None);
        std::fs::copy(
            fixtures().join(case).join("config.legacy.json"),
            dir.path().join("config.json"),
        )
        .unwrap();
        let legacy = open(&dir);
        assert!(
            legacy.config.warnings.is_empty(),
            "{case}: {:?}",
            legacy.config.warnings
        );
        assert!(
            v5.config.warnings.is_empty(),
            "{case}: {:?}",
            v5.config.warnings
        );
        assert_eq!(legacy.config.rope_theta, v5.config.rope_theta, "{case}");
        assert_eq!(
            legacy.config.mrope_section, v5.config.mrope_section,
            "{case}"
        );
        assert_eq!(legacy.config.vision, v5.config.vision, "{case}");
        let (a, b) = (
            our_logits(&v5, record, &pixels),
            our_logits(&legacy, record, &pixels),
        );
        assert_eq!(common::max_abs_diff(&a, &b), 0.0, "{case}");
    }
}

#[test]
fn an_unknown_layout_is_refused_naming_what_was_tried() {
    let dir = model_dir("llava", None);
    let path = dir.path().join("model.safetensors");
    let tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let renamed: std::collections::HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, v)| (k.replace("language_model.model.", "text.model."), v))
        .collect();
    candle_core::safetensors::save(&renamed, &path).unwrap();
    let model = open(&dir);
    let err = TensorLayout::detect(&model.config, &model.weights).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("language_model.model.embed_tokens.weight"),
        "{msg}"
    );
    assert!(
        msg.contains("model.language_model.embed_tokens.weight"),
        "{msg}"
    );
}
