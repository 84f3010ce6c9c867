//! LLaVA models: the tiny generator's layout, our forward (differentiable CLIP vision tower,
//! projector, image tokens spliced into the decoder) against a reference built from
//! candle-transformers' CLIP vision transformer and Llama on the same weights, and the image
//! preprocessing against hand-computed values.

mod common;

use std::collections::HashSet;
use std::path::Path;
use tunescope::model::decoder::Inputs;

use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::VarBuilder;
use common::max_abs_diff;
use tunescope::model::vlm::tiny::{make_tiny_llava, TinyLlavaSpec};
use tunescope::model::vlm::{FeatureSelect, ImageProcessor, IMAGE_TOKEN};
use tunescope::model::{Model, ParamKind};

/// The step shape the Model pane's memory estimate uses in these tests.
const SHAPE: tunescope::plan::StepShape = tunescope::plan::StepShape {
    batch: 1,
    seq: 64,
    dtype_bytes: 4,
    activation_checkpointing: false,
    fused_ops: true,
    fused_head: true,
};

const TOLERANCE: f32 = 1e-4;

/// Images of one tile each.
fn one_tile_each(px: &Tensor) -> tunescope::model::vlm::ImageBatch {
    tunescope::model::vlm::ImageBatch::single_tiles(px.clone()).unwrap()
}

fn tiny_llava(spec: &TinyLlavaSpec) -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().unwrap();
    make_tiny_llava(spec, dir.path()).unwrap();
    let model = Model::open(dir.path().to_str().unwrap()).unwrap();
    (dir, model)
}

#[test]
fn tiny_llava_has_the_hugging_face_layout() {
    let (dir, model) = tiny_llava(&TinyLlavaSpec::new(5));
    let c = &model.config;
    let v = c.vision.as_ref().expect("a llava config");
    let layout = tunescope::model::names::TensorLayout::detect(c, &model.weights).unwrap();
    assert_eq!(layout.text, "language_model.model.");
    assert_eq!(layout.lm_head, "language_model.lm_head");
    assert_eq!(layout.vision.as_deref(), Some("vision_tower.vision_model."));
    assert_eq!(v.vision.num_patches(), 16);
    assert_eq!(v.image_seq_len(), 16, "default strategy drops CLS");
    assert_eq!(v.select, FeatureSelect::Default);
    assert_eq!(v.feature_index(), 1, "-2 of [embeddings, layer 0, layer 1]");
    let image_id = model.tokenizer.tokenizer.token_to_id(IMAGE_TOKEN).unwrap();
    assert_eq!(image_id, v.image_token_index);
    assert_eq!(
        model
            .tokenizer
            .encode("look <image> here")
            .unwrap()
            .iter()
            .filter(|&&t| t == image_id)
            .count(),
        1
    );
    for name in [
        "vision_tower.vision_model.embeddings.patch_embedding.weight",
        "vision_tower.vision_model.embeddings.class_embedding",
        "vision_tower.vision_model.embeddings.position_embedding.weight",
        "vision_tower.vision_model.pre_layrnorm.bias",
        "vision_tower.vision_model.encoder.layers.1.self_attn.out_proj.bias",
        "vision_tower.vision_model.encoder.layers.0.mlp.fc2.weight",
        "vision_tower.vision_model.post_layernorm.weight",
        "multi_modal_projector.linear_1.weight",
        "multi_modal_projector.linear_2.bias",
        "language_model.model.embed_tokens.weight",
        "language_model.model.layers.1.self_attn.q_proj.weight",
        "language_model.lm_head.weight",
    ] {
        assert!(model.weights.info(name).is_some(), "{name} missing");
    }
    let map = model.module_map();
    assert_eq!(
        map.num_layers(),
        2,
        "vision encoder layers are not decoder layers"
    );
    let kind = |n: &str| map.get(n).unwrap().kind;
    assert_eq!(
        kind("vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.weight"),
        ParamKind::Vision
    );
    assert_eq!(
        kind("multi_modal_projector.linear_1.bias"),
        ParamKind::Projector
    );
    assert_eq!(
        kind("language_model.model.layers.0.self_attn.q_proj.weight"),
        ParamKind::Q
    );
    let processor = model.image_processor().unwrap().unwrap();
    assert_eq!(processor.crop_size, (32, 32));
    assert!(dir.path().join("preprocessor_config.json").is_file());
}

/// Deterministic pixel values `(n, 3, 32, 32)` in about [-2, 2].
fn pixels(n: usize, dev: &Device) -> Tensor {
    let values: Vec<f32> = (0..n * 3 * 32 * 32)
        .map(|i| 2.0 * ((i as f32) * 0.37).sin() * ((i % 7) as f32 / 7.0))
        .collect();
    Tensor::from_vec(values, (n, 3, 32, 32), dev).unwrap()
}

/// Our logits for two right-padded image prompts equal a reference forward built from
/// candle-transformers' components.
fn check_parity(spec: &TinyLlavaSpec) -> f32 {
    use candle_transformers::models::clip::text_model::Activation;
    use candle_transformers::models::clip::vision_model::{
        ClipVisionConfig, ClipVisionTransformer,
    };
    use candle_transformers::models::llama::{Cache, Llama, LlamaConfig};

    let (dir, model) = tiny_llava(spec);
    let dev = Device::Cpu;
    let v = model.config.vision.clone().unwrap();
    let n = v.image_seq_len();
    let img = v.image_token_index;
    let rows: Vec<Vec<u32>> = vec![
        [vec![5, 17], vec![img; n], vec![42, 99, 3]].concat(),
        [vec![8], vec![img; n], vec![77]].concat(),
    ];
    let width = rows.iter().map(Vec::len).max().unwrap();
    let (mut ids, mut mask) = (Vec::new(), Vec::new());
    for r in &rows {
        ids.extend(
            r.iter()
                .copied()
                .chain(std::iter::repeat_n(0, width - r.len())),
        );
        mask.extend((0..width).map(|t| u32::from(t < r.len())));
    }
    let ids_t = Tensor::from_vec(ids, (2, width), &dev).unwrap();
    let mask_t = Tensor::from_vec(mask, (2, width), &dev).unwrap();
    let px = pixels(2, &dev);
    let decoder = model.decoder(&HashSet::new(), DType::F32, &dev).unwrap();
    let ours = decoder
        .forward(&Inputs::text(&ids_t, Some(&mask_t)).with_images(Some(&one_tile_each(&px))))
        .unwrap();

    // Reference: candle-transformers' CLIP, a candle-nn projector and candle-transformers' Llama.
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(
            &[dir.path().join("model.safetensors")],
            DType::F32,
            &dev,
        )
        .unwrap()
    };
    let clip_cfg = ClipVisionConfig {
        embed_dim: v.vision.hidden_size,
        activation: Activation::QuickGelu,
        intermediate_size: v.vision.intermediate_size,
        num_hidden_layers: v.vision.num_hidden_layers,
        num_attention_heads: v.vision.num_attention_heads,
        projection_dim: v.vision.hidden_size,
        num_channels: 3,
        image_size: v.vision.image_size,
        patch_size: v.vision.patch_size,
    };
    let clip = ClipVisionTransformer::new(vb.pp("vision_tower.vision_model"), &clip_cfg).unwrap();
    let h = model.config.hidden_size;
    let l1 = candle_nn::linear(
        v.vision.hidden_size,
        h,
        vb.pp("multi_modal_projector.linear_1"),
    )
    .unwrap();
    let l2 = candle_nn::linear(h, h, vb.pp("multi_modal_projector.linear_2")).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
            .unwrap();
    let llama_cfg: LlamaConfig = serde_json::from_value(config["text_config"].clone()).unwrap();
    let llama_cfg = llama_cfg.into_config(false);
    let llama = Llama::load(vb.pp("language_model"), &llama_cfg).unwrap();

    // candle's output_hidden_states lists the layer outputs (not the embeddings) then the
    // pooled output; Hugging Face's hidden_states[i] is the output of layer i - 1.
    let hidden = clip.output_hidden_states(&px).unwrap();
    let features = hidden[v.feature_index() - 1].clone();
    let features = match v.select {
        FeatureSelect::Default => features.i((.., 1..)).unwrap(),
        FeatureSelect::Full => features,
    };
    let projected = l2
        .forward(
            &candle_nn::Activation::Gelu
                .forward(&l1.forward(&features).unwrap())
                .unwrap(),
        )
        .unwrap();
    let mut worst = 0f32;
    for (r, row) in rows.iter().enumerate() {
        let ids_r = Tensor::new(row.as_slice(), &dev)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let mut embeds = llama.embed(&ids_r).unwrap().squeeze(0).unwrap();
        let start = row.iter().position(|&t| t == img).unwrap();
        let before = embeds.narrow(0, 0, start).unwrap();
        let after = embeds.narrow(0, start + n, row.len() - start - n).unwrap();
        embeds = Tensor::cat(&[&before, &projected.get(r).unwrap(), &after], 0).unwrap();
        let mut cache = Cache::new(true, DType::F32, &llama_cfg, &dev).unwrap();
        let reference: Vec<Tensor> = (0..row.len())
            .map(|t| {
                let x = embeds.narrow(0, t, 1).unwrap().unsqueeze(0).unwrap();
                llama
                    .forward_input_embed(&x, t, &mut cache)
                    .unwrap()
                    .squeeze(0)
                    .unwrap()
            })
            .collect();
        let reference = Tensor::stack(&reference, 0).unwrap();
        let mine = ours.i((r, 0..row.len(), ..)).unwrap();
        let diff = max_abs_diff(&mine, &reference);
        worst = worst.max(diff);
    }
    // The image changes the logits: with other pixels they differ.
    let other = decoder
        .forward(
            &Inputs::text(&ids_t, Some(&mask_t))
                .with_images(Some(&one_tile_each(&(px + 0.5).unwrap()))),
        )
        .unwrap();
    assert!(
        max_abs_diff(&ours, &other) > 1e-3,
        "the image does not reach the logits"
    );
    worst
}

#[test]
fn logits_match_candle_transformers_components() {
    let default = check_parity(&TinyLlavaSpec::new(11));
    println!("default strategy, feature layer -2: max |Δ| = {default:.2e}");
    assert!(default <= TOLERANCE, "max |Δ| {default} > {TOLERANCE}");
    let full = check_parity(&TinyLlavaSpec {
        select_strategy: "full".into(),
        feature_layer: -1,
        ..TinyLlavaSpec::new(12)
    });
    println!("full strategy, feature layer -1: max |Δ| = {full:.2e}");
    assert!(full <= TOLERANCE, "max |Δ| {full} > {TOLERANCE}");
}

#[test]
fn image_token_count_mismatch_is_an_error() {
    let (_dir, model) = tiny_llava(&TinyLlavaSpec::new(3));
    let dev = Device::Cpu;
    let img = model.config.vision.as_ref().unwrap().image_token_index;
    let ids = Tensor::new(&[[5u32, img, 7]], &dev).unwrap();
    let decoder = model.decoder(&HashSet::new(), DType::F32, &dev).unwrap();
    let e = format!(
        "{:#}",
        decoder
            .forward(&Inputs::text(&ids, None).with_images(Some(&one_tile_each(&pixels(1, &dev)))))
            .unwrap_err()
    );
    assert!(
        e.contains("holds 1 image tokens") && e.contains("make 16"),
        "{e}"
    );
}

fn write_png(path: &Path, w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb(f(x, y)));
    img.save(path).unwrap();
}

#[test]
fn preprocessing_matches_hand_computed_values() {
    let dir = tempfile::tempdir().unwrap();
    let p = ImageProcessor::clip(32);
    // 40 wide, 32 high: the short side is already 32, so no resize; the crop drops 4 columns
    // on each side, so output (y, x) is input (y, x + 4).
    let path = dir.path().join("wide.png");
    write_png(&path, 40, 32, |x, y| [(x * 6) as u8, (y * 7) as u8, 200]);
    let values = p.load_file(&path).unwrap();
    assert_eq!(values.len(), 3 * 32 * 32);
    let at = |c: usize, y: usize, x: usize| values[c * 32 * 32 + y * 32 + x];
    let expect = |v: f32, c: usize| (v / 255.0 - p.image_mean[c]) / p.image_std[c];
    // (0, 0) ← input (x=4, y=0): red 24, green 0, blue 200.
    assert!((at(0, 0, 0) - expect(24.0, 0)).abs() < 1e-6);
    assert!((at(1, 0, 0) - expect(0.0, 1)).abs() < 1e-6);
    assert!((at(2, 0, 0) - expect(200.0, 2)).abs() < 1e-6);
    // (y=5, x=10) ← input (x=14, y=5): red 84, green 35.
    assert!((at(0, 5, 10) - (84.0 / 255.0 - 0.481_454_66) / 0.268_629_54).abs() < 1e-6);
    assert!((at(1, 5, 10) - expect(35.0, 1)).abs() < 1e-6);

    // A uniform 64×48 image: resized to 42×32 (bicubic keeps a constant) and cropped.
    assert_eq!(
        tunescope::model::vlm::preprocess::resized_size(48, 64, 32),
        (32, 42)
    );
    let path = dir.path().join("flat.png");
    write_png(&path, 64, 48, |_, _| [10, 128, 250]);
    let values = p.load_file(&path).unwrap();
    for (c, v) in [(0, 10.0), (1, 128.0), (2, 250.0)] {
        let plane = &values[c * 1024..(c + 1) * 1024];
        assert!(
            plane.iter().all(|x| (x - expect(v, c)).abs() < 1e-5),
            "channel {c}"
        );
    }

    // Unreadable files are named.
    let bad = dir.path().join("broken.png");
    std::fs::write(&bad, b"not a png").unwrap();
    let e = format!("{:#}", p.load_file(&bad).unwrap_err());
    assert!(e.contains("broken.png"), "{e}");
    let e = format!(
        "{:#}",
        p.load_file(&dir.path().join("absent.png")).unwrap_err()
    );
    assert!(e.contains("absent.png"), "{e}");
}

#[test]
fn selection_kinds_on_a_llava_model() {
    use tunescope::select::{preset, resolve};
    let (_dir, model) = tiny_llava(&TinyLlavaSpec::new(4));
    let map = model.module_map();
    // sa-proj: q/k/v/o of the language model only, never the vision tower's q/k/v/out_proj.
    let sel = resolve(&preset("sa-proj").unwrap(), &map).unwrap();
    assert_eq!(sel.len(), 2 * 4);
    assert!(
        sel.names
            .iter()
            .all(|n| n.starts_with("language_model.model.layers.") && n.contains(".self_attn.")),
        "{:?}",
        sel.names
    );
    assert!(map.params.iter().any(|p| p
        .name
        .contains("vision_model.encoder.layers.0.self_attn.q_proj")));
    // projector: exactly the two linears with their biases.
    let sel = resolve(&preset("projector").unwrap(), &map).unwrap();
    assert_eq!(
        sel.names.iter().map(String::as_str).collect::<Vec<_>>(),
        vec![
            "multi_modal_projector.linear_1.bias",
            "multi_modal_projector.linear_1.weight",
            "multi_modal_projector.linear_2.bias",
            "multi_modal_projector.linear_2.weight",
        ]
    );
    // vision: every vision-tower tensor, nothing else; llm: nothing of the vision side.
    let sel = resolve(&preset("vision").unwrap(), &map).unwrap();
    let vision_count = map
        .params
        .iter()
        .filter(|p| p.name.starts_with("vision_tower."))
        .count();
    assert_eq!(sel.len(), vision_count);
    let sel = resolve(&preset("full-llm").unwrap(), &map).unwrap();
    assert!(sel.names.iter().all(|n| n.starts_with("language_model.")));
    // The shipped projector recipe resolves to the same set.
    let recipe = tunescope::recipe::Recipe::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/projector.yaml"),
        &[],
    )
    .unwrap();
    assert_eq!(resolve(&recipe.trainable, &map).unwrap().len(), 4);
}

#[test]
fn model_grid_has_vision_and_projector_rows() {
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;
    use tunescope::select::preset;
    use tunescope::tui::model_state::ModelState;
    use tunescope::tui::panes::model::render_model;
    use tunescope::tui::theme::Theme;

    let dir = tempfile::tempdir().unwrap();
    make_tiny_llava(&TinyLlavaSpec::new(4), dir.path()).unwrap();
    let spec = dir.path().to_str().unwrap();
    let mut state = ModelState::open(spec, &preset("projector").unwrap(), SHAPE).unwrap();
    let labels: Vec<&str> = state.grid.rows.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(labels, vec!["0", "1", "model", "vision", "proj"]);
    assert_eq!(state.grid.layers, 2);
    let vision_cells: Vec<&str> = state.grid.rows[3]
        .1
        .iter()
        .map(|c| c.label.as_str())
        .collect();
    assert_eq!(
        vision_cells,
        vec!["embed", "pre-norm", "L0", "L1", "post-norm"]
    );
    let proj = &state.grid.rows[4].1;
    assert_eq!(proj.len(), 2);
    assert!(proj.iter().all(|c| state
        .selected
        .is_superset(&c.names.iter().cloned().collect())));

    let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
    terminal
        .draw(|f| render_model(f, f.area(), Some(&state), None, &Theme::dark()))
        .unwrap();
    let buf = terminal.backend().buffer().clone();
    let text: String = (0..buf.area.height)
        .map(|y| {
            (0..buf.area.width)
                .map(|x| buf[(x, y)].symbol())
                .collect::<String>()
                + "\n"
        })
        .collect();
    println!("{text}");
    let line = |label: &str| {
        text.lines()
            .find(|l| l.contains(&format!("{label} │")))
            .unwrap_or_else(|| panic!("no {label} row:\n{text}"))
            .to_string()
    };
    assert!(
        line("proj").contains("■ linear_1") && line("proj").contains("■ linear_2"),
        "{text}"
    );
    assert!(
        line("vision").contains("· L0") && line("vision").contains("· embed"),
        "{text}"
    );

    // Toggling the vision row's first cell selects the vision embeddings.
    state.row = 3;
    state.col = 0;
    state.toggle_cell();
    assert!(state
        .selected
        .contains("vision_tower.vision_model.embeddings.class_embedding"));
}

#[test]
fn cli_make_tiny_llava_and_inspect() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tiny-llava");
    let bin = env!("CARGO_BIN_EXE_tunescope");
    let status = std::process::Command::new(bin)
        .args(["make-tiny", "--arch", "llava", "--seed", "9", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let again = tempfile::tempdir().unwrap();
    std::process::Command::new(bin)
        .args(["make-tiny", "--arch", "llava", "--seed", "9", "--out"])
        .arg(again.path())
        .output()
        .unwrap();
    assert_eq!(
        std::fs::read(out.join("model.safetensors")).unwrap(),
        std::fs::read(again.path().join("model.safetensors")).unwrap(),
        "same seed, same weights"
    );
    let inspect = std::process::Command::new(bin)
        .arg("inspect")
        .arg(&out)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&inspect.stdout);
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    assert!(text.contains("2 layers"), "{text}");
    let kind_line = |k: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(&format!("{k} ")))
            .unwrap_or_else(|| panic!("no {k} line:\n{text}"))
            .to_string()
    };
    assert!(kind_line("vision").contains("23,936"), "{text}");
    assert!(kind_line("projector").contains("6,272"), "{text}");
}

#[test]
fn vision_and_projector_gradients_agree_with_finite_differences() {
    let dev = Device::Cpu;
    let (_dir, model) = tiny_llava(&TinyLlavaSpec::new(31));
    let v = model.config.vision.clone().unwrap();
    let names = [
        "multi_modal_projector.linear_1.weight",
        "multi_modal_projector.linear_2.bias",
        "vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.weight",
        "vision_tower.vision_model.encoder.layers.0.mlp.fc1.bias",
        "vision_tower.vision_model.embeddings.patch_embedding.weight",
        "vision_tower.vision_model.embeddings.class_embedding",
        "vision_tower.vision_model.pre_layrnorm.weight",
    ];
    let trainable: HashSet<String> = names.iter().map(|s| s.to_string()).collect();
    let decoder = model.decoder(&trainable, DType::F32, &dev).unwrap();
    let ids: Vec<u32> = [vec![5, 17], vec![v.image_token_index; 16], vec![42, 99, 3]].concat();
    let input = Tensor::new(ids.as_slice(), &dev)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let px = pixels(1, &dev);
    // A fixed linear read-out of the logits after the image.
    let loss = || -> Tensor {
        let logits = decoder
            .forward(&Inputs::text(&input, None).with_images(Some(&one_tile_each(&px))))
            .unwrap();
        let tail = logits.i((0, 18.., ..)).unwrap();
        let n = tail.elem_count();
        let w: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.013).sin()).collect();
        let w = Tensor::from_vec(w, tail.shape(), &dev).unwrap();
        (tail * w).unwrap().sum_all().unwrap()
    };
    let grads = decoder
        .trainable_grads(&loss().backward().unwrap())
        .unwrap();
    for name in names {
        let var = &decoder.vars()[name];
        common::check_gradient(
            var,
            grads.get(name),
            &|| loss().to_scalar::<f32>().unwrap() as f64,
            2,
            2e-2,
            name,
        );
    }
}

#[test]
fn a_llava_1_5_style_config_fills_llama_defaults() {
    // The shape of llava-hf/llava-1.5-7b-hf's config.json: text_config lists only overrides.
    let config = serde_json::json!({
        "architectures": ["LlavaForConditionalGeneration"],
        "ignore_index": -100,
        "image_token_index": 32000,
        "model_type": "llava",
        "pad_token_id": 32001,
        "projector_hidden_act": "gelu",
        "text_config": {
            "architectures": ["LlamaForCausalLM"],
            "max_position_embeddings": 4096,
            "model_type": "llama",
            "rms_norm_eps": 1e-05,
            "torch_dtype": "float16",
            "vocab_size": 32064
        },
        "tie_word_embeddings": false,
        "vision_config": {
            "hidden_size": 1024,
            "image_size": 336,
            "intermediate_size": 4096,
            "model_type": "clip_vision_model",
            "num_attention_heads": 16,
            "num_hidden_layers": 24,
            "patch_size": 14,
            "projection_dim": 768,
            "vocab_size": 32000
        },
        "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default",
        "vocab_size": 32064
    });
    let c = tunescope::model::ModelConfig::from_json(&config).unwrap();
    assert_eq!(
        (c.hidden_size, c.num_hidden_layers, c.num_attention_heads),
        (4096, 32, 32)
    );
    assert_eq!(
        (c.intermediate_size, c.vocab_size, c.max_position_embeddings),
        (11008, 32064, 4096)
    );
    let v = c.vision.unwrap();
    assert_eq!(v.image_seq_len(), 576);
    assert_eq!(v.feature_index(), 23);
    assert_eq!(v.image_token_index, 32000);
    // Unsupported settings are named.
    let mut bad = config.clone();
    bad["vision_feature_select_strategy"] = serde_json::json!("pooled");
    let e = format!(
        "{:#}",
        tunescope::model::ModelConfig::from_json(&bad).unwrap_err()
    );
    assert!(e.contains("vision_feature_select_strategy `pooled`"), "{e}");
    let mut bad = config;
    bad["vision_feature_layer"] = serde_json::json!([-2, -5]);
    let e = format!(
        "{:#}",
        tunescope::model::ModelConfig::from_json(&bad).unwrap_err()
    );
    assert!(e.contains("vision_feature_layer"), "{e}");
}

#[test]
fn a_deep_vision_tower_row_wraps_to_the_pane() {
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;
    use tunescope::select::preset;
    use tunescope::tui::model_state::ModelState;
    use tunescope::tui::panes::model::render_model;
    use tunescope::tui::theme::Theme;

    let dir = tempfile::tempdir().unwrap();
    let spec = TinyLlavaSpec {
        vision_layers: 14,
        ..TinyLlavaSpec::new(4)
    };
    make_tiny_llava(&spec, dir.path()).unwrap();
    let state = ModelState::open(
        dir.path().to_str().unwrap(),
        &preset("vision").unwrap(),
        SHAPE,
    )
    .unwrap();
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
    terminal
        .draw(|f| render_model(f, f.area(), Some(&state), None, &Theme::dark()))
        .unwrap();
    let buf = terminal.backend().buffer().clone();
    let text: String = (0..buf.area.height)
        .map(|y| {
            (0..buf.area.width)
                .map(|x| buf[(x, y)].symbol())
                .collect::<String>()
                + "\n"
        })
        .collect();
    println!("{text}");
    for label in ["■ L0", "■ L13", "■ post-norm", "■ embed", "· linear_2"] {
        assert!(text.contains(label), "{label} not on screen:\n{text}");
    }
}

/// Gradients through anyres packing (unpadding, OneVision's bilinear shrink, image_newline)
/// and the SigLIP tower agree with finite differences.
#[test]
fn anyres_and_siglip_gradients_agree_with_finite_differences() {
    let dev = Device::Cpu;
    let cases: [(TinyLlavaSpec, &[&str]); 2] = [
        (
            TinyLlavaSpec::next(32),
            &[
                "image_newline",
                "multi_modal_projector.linear_2.weight",
                "vision_tower.vision_model.encoder.layers.0.self_attn.v_proj.weight",
            ],
        ),
        (
            TinyLlavaSpec::onevision(33),
            &[
                "image_newline",
                "multi_modal_projector.linear_1.weight",
                "vision_tower.embeddings.patch_embedding.bias",
                "vision_tower.encoder.layers.0.mlp.fc1.weight",
                "vision_tower.encoder.layers.1.layer_norm2.weight",
            ],
        ),
    ];
    for (spec, names) in cases {
        let (_dir, model) = tiny_llava(&spec);
        let inputs = model.tokenizer.images.clone().unwrap();
        // 64 wide, 40 high: a 2×2 grid whose unpadding cuts rows; OneVision's anyres_max_2
        // then shrinks it (bilinear).
        let img = image::RgbImage::from_fn(64, 40, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 6) as u8, ((x * y) % 251) as u8])
        });
        let pixels = inputs.processor.process(&img, false).unwrap();
        let tokens = inputs.tokens_for(&pixels);
        assert!(tokens > inputs.tokens_per_tile() + pixels.tiles, "{tokens}");
        let ids: Vec<u32> = [
            vec![5, 17],
            vec![inputs.image_token; tokens],
            vec![42, 99, 3],
        ]
        .concat();
        let input = Tensor::new(ids.as_slice(), &dev)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let batch = tunescope::model::vlm::ImageBatch::from_pixels(&[&pixels], &dev)
            .unwrap()
            .unwrap();
        let trainable: HashSet<String> = names.iter().map(|s| s.to_string()).collect();
        let decoder = model.decoder(&trainable, DType::F32, &dev).unwrap();
        let loss = || -> Tensor {
            let logits = decoder
                .forward(&Inputs::text(&input, None).with_images(Some(&batch)))
                .unwrap();
            let tail = logits.i((0, 2 + tokens - 4.., ..)).unwrap();
            let n = tail.elem_count();
            let w: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.013).sin()).collect();
            let w = Tensor::from_vec(w, tail.shape(), &dev).unwrap();
            (tail * w).unwrap().sum_all().unwrap()
        };
        let grads = decoder
            .trainable_grads(&loss().backward().unwrap())
            .unwrap();
        for name in names {
            let var = &decoder.vars()[*name];
            common::check_gradient(
                var,
                grads.get(*name),
                &|| loss().to_scalar::<f32>().unwrap() as f64,
                2,
                2e-2,
                &format!("{} {name}", spec.family),
            );
        }
    }
}

/// Gradients through Qwen2.5-VL's vision transformer (window and full attention with the 2-D
/// rotary embedding, RMSNorm, SwiGLU, the merger) and the M-RoPE language model agree with
/// finite differences.
#[test]
fn qwen2_5_vl_gradients_agree_with_finite_differences() {
    use tunescope::model::vlm::tiny_qwen::{make_tiny_qwen_vl, TinyQwenVlSpec};
    let dev = Device::Cpu;
    let dir = tempfile::tempdir().unwrap();
    make_tiny_qwen_vl(&TinyQwenVlSpec::new(34), dir.path()).unwrap();
    let model = Model::open(dir.path().to_str().unwrap()).unwrap();
    let inputs = model.tokenizer.images.clone().unwrap();
    // 90 high, 100 wide: smart-resized to 84×112, a 6×8 patch grid, 3×4 merged units in
    // windows of 2×2 (two of them cut short).
    let img = image::RgbImage::from_fn(100, 90, |x, y| {
        image::Rgb([(x * 2) as u8, (y * 3) as u8, ((x * y) % 251) as u8])
    });
    let pixels = inputs.processor.process(&img, false).unwrap();
    assert_eq!(pixels.grid, (6, 8));
    let tokens = inputs.tokens_for(&pixels);
    assert_eq!(tokens, 12);
    let prompt = model.tokenizer.encode("look <image> and say").unwrap();
    let (ids, placeholders) = inputs.expand(&prompt, &[&pixels]);
    assert_eq!(placeholders, 1);
    let input = Tensor::new(ids.as_slice(), &dev)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let batch = tunescope::model::vlm::ImageBatch::from_pixels(&[&pixels], &dev)
        .unwrap()
        .unwrap();
    let names = [
        "visual.patch_embed.proj.weight",
        "visual.blocks.0.attn.qkv.weight",
        "visual.blocks.1.mlp.gate_proj.weight",
        "visual.blocks.2.norm1.weight",
        "visual.merger.ln_q.weight",
        "visual.merger.mlp.0.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.1.self_attn.k_proj.bias",
    ];
    let trainable: HashSet<String> = names.iter().map(|s| s.to_string()).collect();
    let decoder = model.decoder(&trainable, DType::F32, &dev).unwrap();
    let loss = || -> Tensor {
        let logits = decoder
            .forward(&Inputs::text(&input, None).with_images(Some(&batch)))
            .unwrap();
        let n = logits.elem_count();
        let w: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.017).sin()).collect();
        let w = Tensor::from_vec(w, logits.shape(), &dev).unwrap();
        (logits * w).unwrap().sum_all().unwrap()
    };
    let grads = decoder
        .trainable_grads(&loss().backward().unwrap())
        .unwrap();
    for name in names {
        let var = &decoder.vars()[name];
        common::check_gradient(
            var,
            grads.get(name),
            &|| loss().to_scalar::<f32>().unwrap() as f64,
            2,
            2e-2,
            name,
        );
    }
}
