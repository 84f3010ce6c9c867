//! Training a tiny LLaVA on image records: the projector and sa-proj recipes lower the loss and
//! change exactly their tensors (the vision tower stays bit-identical); bad image records give
//! errors naming the file and line.

mod common;

use std::path::{Path, PathBuf};

use common::{bytes_of, load_tensors};
use tunescope::model::vlm::tiny::{make_tiny_llava, TinyLlavaSpec};
use tunescope::model::Model;
use tunescope::recipe::Recipe;
use tunescope::run::{RunDir, RunState};
use tunescope::train::{run_training, TrainControl, TrainEvent};

const COLOURS: [(&str, [u8; 3]); 4] = [
    ("red", [220, 30, 30]),
    ("green", [30, 200, 40]),
    ("blue", [30, 40, 220]),
    ("yellow", [230, 220, 30]),
];

/// 16 records: a picture filled with one colour (with a darker square in a corner that moves),
/// "what colour is it ?" → the colour's name.
fn write_colour_data(dir: &Path) -> PathBuf {
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let mut text = String::new();
    for i in 0..16usize {
        let (name, rgb) = COLOURS[i % 4];
        let corner = (i / 4) as u32 * 8;
        let img = image::RgbImage::from_fn(32, 32, |x, y| {
            let inside = (corner..corner + 8).contains(&x) && (corner..corner + 8).contains(&y);
            image::Rgb(if inside { rgb.map(|c| c / 2) } else { rgb })
        });
        let file = format!("img-{i}.png");
        img.save(images.join(&file)).unwrap();
        let record = serde_json::json!({
            "image": format!("images/{file}"),
            "prompt": "<image>\nwhat colour is the picture ?",
            "response": name,
        });
        text.push_str(&record.to_string());
        text.push('\n');
    }
    let path = dir.join("colours.jsonl");
    std::fs::write(&path, text).unwrap();
    path
}

fn recipe(name: &str, model: &Path, data: &Path, extra: &[&str]) -> Recipe {
    let mut overrides = vec![
        format!("model={}", model.display()),
        format!("data={}", data.display()),
        "schedule.warmup_ratio=0".to_string(),
        "schedule.kind=constant".to_string(),
    ];
    overrides.extend(extra.iter().map(|s| s.to_string()));
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("recipes/{name}.yaml"));
    Recipe::load(&path, &overrides).unwrap()
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

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Trains `name` and checks the loss falls below `ratio` of its start (means of the first and
/// last 4 steps) and that exactly the selected tensors changed.
fn check_recipe(name: &str, lr: &str, ratio: f64, prefix_changed: &dyn Fn(&str) -> bool) {
    check_recipe_on(&TinyLlavaSpec::new(21), name, lr, ratio, prefix_changed)
}

fn check_recipe_on(
    spec: &TinyLlavaSpec,
    name: &str,
    lr: &str,
    ratio: f64,
    prefix_changed: &dyn Fn(&str) -> bool,
) {
    check_recipe_with(
        &|dir| make_tiny_llava(spec, dir).unwrap(),
        name,
        lr,
        ratio,
        prefix_changed,
    )
}

fn check_recipe_with(
    make: &dyn Fn(&Path),
    name: &str,
    lr: &str,
    ratio: f64,
    prefix_changed: &dyn Fn(&str) -> bool,
) {
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = tmp.path().join("tiny-llava");
    make(&model_dir);
    let data = write_colour_data(tmp.path());
    let r = recipe(
        name,
        &model_dir,
        &data,
        &[
            "max_steps=40",
            "batch_size=4",
            &format!("optimizer.lr={lr}"),
        ],
    );
    let map = Model::open(&model_dir.to_string_lossy())
        .unwrap()
        .module_map();
    let selection = tunescope::select::resolve(&r.trainable, &map).unwrap();
    assert!(
        selection.names.iter().all(|n| prefix_changed(n)),
        "{:?}",
        selection.names
    );
    let (run, losses) = train(&r, &tmp.path().join("runs"));
    let (first, last) = (mean(&losses[..4]), mean(&losses[losses.len() - 4..]));
    println!(
        "{name}: loss {first:.3} → {last:.3} over {} steps: {losses:.2?}",
        losses.len()
    );
    assert!(last < ratio * first, "{name}: loss {first} → {last}");

    let before = load_tensors(&model_dir.join("model.safetensors"));
    let after = load_tensors(&run.final_dir().join("model.safetensors"));
    assert_eq!(before.len(), after.len());
    let mut changed = 0;
    for (tensor, b) in &before {
        let a = &after[tensor];
        let same = bytes_of(a) == bytes_of(b);
        if selection.contains(tensor) {
            assert!(!same, "{name}: selected {tensor} did not change");
            changed += 1;
        } else {
            assert!(
                same,
                "{name}: {tensor} is outside the selection but changed"
            );
        }
    }
    assert_eq!(changed, selection.len());
    assert!(run.final_dir().join("preprocessor_config.json").is_file());
    // final/ opens as a llava model again.
    let reopened = Model::open(&run.final_dir().to_string_lossy()).unwrap();
    assert!(reopened.config.vision.is_some());
}

#[test]
fn projector_recipe_learns_colours_and_changes_only_the_projector() {
    // Only the image embeddings move, through a random 2-layer language model: the loss falls
    // but far less than when the language model's attention trains.
    check_recipe("projector", "0.05", 0.93, &|n| {
        n.starts_with("multi_modal_projector.")
    });
}

#[test]
fn sa_proj_recipe_changes_only_language_model_attention() {
    check_recipe("sa-proj", "0.01", 0.5, &|n| {
        n.starts_with("language_model.model.layers.") && n.contains(".self_attn.")
    });
}

#[test]
fn next_and_onevision_recipes_change_exactly_their_part() {
    for spec in [TinyLlavaSpec::next(22), TinyLlavaSpec::onevision(23)] {
        println!("{}", spec.family);
        // The projector kind is the two linears and image_newline.
        check_recipe_on(&spec, "projector", "0.05", 0.97, &|n| {
            n.starts_with("multi_modal_projector.") || n == "image_newline"
        });
        check_recipe_on(&spec, "sa-proj", "0.01", 0.6, &|n| {
            n.starts_with("language_model.model.layers.") && n.contains(".self_attn.")
        });
    }
}

#[test]
fn qwen2_5_vl_recipes_change_exactly_their_part() {
    use tunescope::model::vlm::tiny_qwen::{make_tiny_qwen_vl, TinyQwenVlSpec};
    let make = |dir: &Path| make_tiny_qwen_vl(&TinyQwenVlSpec::new(24), dir).unwrap();
    // The projector kind is the merger.
    check_recipe_with(&make, "projector", "0.05", 0.97, &|n| {
        n.starts_with("visual.merger.")
    });
    check_recipe_with(&make, "sa-proj", "0.01", 0.6, &|n| {
        n.starts_with("model.layers.") && n.contains(".self_attn.")
    });
}

fn prepare_error(lines: &str, files: &[(&str, &[u8])]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = tmp.path().join("m");
    make_tiny_llava(&TinyLlavaSpec::new(2), &model_dir).unwrap();
    for (name, bytes) in files {
        std::fs::write(tmp.path().join(name), bytes).unwrap();
    }
    let data = tmp.path().join("bad.jsonl");
    std::fs::write(&data, lines).unwrap();
    let r = recipe("projector", &model_dir, &data, &["max_steps=1"]);
    let run = RunDir::create(&tmp.path().join("runs"), "bad").unwrap();
    let e = run_training(&r, &run, false, &TrainControl::default(), &mut |_| {}).unwrap_err();
    format!("{e:#}")
}

#[test]
fn bad_image_records_name_the_file_and_line() {
    let ok = r#"{"image": "a.png", "prompt": "<image> what colour ?", "response": "red"}"#;
    let mut png = Vec::new();
    image::RgbImage::from_pixel(8, 8, image::Rgb([200, 0, 0]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let e = prepare_error(
        &format!(
            "{ok}\n{}\n",
            r#"{"image": "missing.png", "prompt": "<image> hi", "response": "x"}"#
        ),
        &[("a.png", &png)],
    );
    assert!(
        e.contains("bad.jsonl line 2") && e.contains("missing.png"),
        "{e}"
    );
    let e = prepare_error(
        &format!(
            "{ok}\n\n{}\n",
            r#"{"image": "junk.png", "prompt": "<image> hi", "response": "x"}"#
        ),
        &[("a.png", &png), ("junk.png", b"not an image")],
    );
    assert!(
        e.contains("bad.jsonl line 3") && e.contains("junk.png"),
        "{e}"
    );
    let e = prepare_error(
        r#"{"image": "a.png", "prompt": "no placeholder", "response": "x"}"#,
        &[("a.png", &png)],
    );
    assert!(
        e.contains("line 1") && e.contains("no <image> placeholder"),
        "{e}"
    );
    let e = prepare_error(
        r#"{"prompt": "<image> but no image", "response": "x"}"#,
        &[],
    );
    assert!(
        e.contains("line 1") && e.contains("no \"image\" or \"images\" field"),
        "{e}"
    );
    let e = prepare_error(r#"{"image": 3, "prompt": "<image>", "response": "x"}"#, &[]);
    assert!(
        e.contains("line 1") && e.contains("must hold path strings"),
        "{e}"
    );
}

#[test]
fn image_placeholder_expands_and_a_cut_through_it_drops_the_image() {
    use tunescope::data::{tokenize_with_images, ImageTokens, Record, TokenizeOptions};
    use tunescope::model::tokenizer::ChatMessage;
    let tmp = tempfile::tempdir().unwrap();
    make_tiny_llava(&TinyLlavaSpec::new(2), tmp.path()).unwrap();
    let model = Model::open(&tmp.path().to_string_lossy()).unwrap();
    let v = model.config.vision.as_ref().unwrap();
    let img = ImageTokens {
        id: v.image_token_index,
        count: v.image_seq_len(),
        per_record: [(8, vec![16, 5])].into_iter().collect(),
    };
    let msg = |role: &str, content: &str| ChatMessage {
        role: role.into(),
        content: content.into(),
    };
    let rec = Record {
        line: 7,
        messages: vec![msg("user", "a <image> b"), msg("assistant", "red")],
        images: vec![tmp.path().join("x.png")],
    };
    let opts = |max_length| TokenizeOptions {
        max_length,
        train_on_prompt: true,
    };
    let data = tokenize_with_images(
        std::slice::from_ref(&rec),
        &model.tokenizer,
        &opts(512),
        Some(&img),
    )
    .unwrap();
    let ex = &data.examples[0];
    let first = ex.input_ids.iter().position(|&t| t == img.id).unwrap();
    assert_eq!(ex.input_ids.iter().filter(|&&t| t == img.id).count(), 16);
    assert!(
        ex.input_ids[first..first + 16].iter().all(|&t| t == img.id),
        "one contiguous run"
    );
    assert!(
        ex.labels[first..first + 16].iter().all(|&l| l == -100),
        "image tokens carry no label"
    );
    assert_eq!(ex.images, vec![tmp.path().join("x.png")]);
    // A cut inside the run drops the whole run and the image.
    let data =
        tokenize_with_images(&[rec], &model.tokenizer, &opts(first + 5), Some(&img)).unwrap();
    let ex = &data.examples[0];
    assert_eq!(ex.input_ids.len(), first);
    assert!(ex.images.is_empty());
    assert_eq!(data.truncated, 1);

    // Two images with counts of their own (line 8: 16 and 5 tokens), in placeholder order; a cut
    // through the second keeps the first.
    let two = Record {
        line: 8,
        messages: vec![msg("user", "<image> or <image> ?"), msg("assistant", "red")],
        images: vec![tmp.path().join("a.png"), tmp.path().join("b.png")],
    };
    let data = tokenize_with_images(
        std::slice::from_ref(&two),
        &model.tokenizer,
        &opts(512),
        Some(&img),
    )
    .unwrap();
    let ex = &data.examples[0];
    assert_eq!(ex.input_ids.iter().filter(|&&t| t == img.id).count(), 21);
    let second = ex.input_ids.iter().rposition(|&t| t == img.id).unwrap() - 4;
    assert!(ex.input_ids[second..second + 5]
        .iter()
        .all(|&t| t == img.id));
    assert_eq!(ex.images.len(), 2);
    let data = tokenize_with_images(
        std::slice::from_ref(&two),
        &model.tokenizer,
        &opts(second + 2),
        Some(&img),
    )
    .unwrap();
    let ex = &data.examples[0];
    assert_eq!(ex.input_ids.len(), second);
    assert_eq!(ex.images, vec![tmp.path().join("a.png")]);
    // One placeholder for two images is refused, naming the line.
    let wrong = Record {
        messages: vec![msg("user", "<image> ?"), msg("assistant", "red")],
        ..two
    };
    let err = tokenize_with_images(&[wrong], &model.tokenizer, &opts(512), Some(&img)).unwrap_err();
    assert!(format!("{err:#}").contains("line 8"), "{err:#}");
}

#[test]
fn vision_preset_trains_the_tower_up_to_the_feature_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = tmp.path().join("tiny-llava");
    make_tiny_llava(&TinyLlavaSpec::new(21), &model_dir).unwrap();
    let data = write_colour_data(tmp.path());
    // `vision` is not a shipped recipe: start from projector.yaml and select the vision kind.
    let r = recipe(
        "projector",
        &model_dir,
        &data,
        &[
            "max_steps=20",
            "optimizer.lr=0.01",
            "trainable.kinds=vision",
        ],
    );
    let (run, losses) = train(&r, &tmp.path().join("runs"));
    println!("vision: {losses:.2?}");
    assert!(losses.last().unwrap() < &losses[0], "{losses:?}");
    let before = load_tensors(&model_dir.join("model.safetensors"));
    let after = load_tensors(&run.final_dir().join("model.safetensors"));
    for (name, b) in &before {
        let same = bytes_of(b) == bytes_of(&after[name]);
        // Feature layer -2 of a 2-layer tower: layer 1 and post_layernorm never reach the
        // language model, so they stay as they were (a warning says so).
        let used = name.starts_with("vision_tower.")
            && !name.contains("encoder.layers.1.")
            && !name.contains("post_layernorm");
        assert_eq!(!same, used, "{name}: changed = {}", !same);
    }
}

#[test]
fn projector_recipe_on_text_only_records_is_refused() {
    let e = prepare_error(r#"{"prompt": "how many ?", "response": "2"}"#, &[]);
    assert!(
        e.contains("no record of") && e.contains("has an image"),
        "{e}"
    );
}

/// `optimizer.lr_by_kind` gives a kind its own learning rate: after one AdamW step (which
/// moves each weight by about its learning rate), the vision tower moved by its 1e-3 and the
/// projector by the recipe's 1e-2; a rate of 0 keeps the tower bit-identical.
#[test]
fn learning_rates_per_kind() {
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = tmp.path().join("tiny-llava");
    make_tiny_llava(&TinyLlavaSpec::new(25), &model_dir).unwrap();
    let data = write_colour_data(tmp.path());
    let before = load_tensors(&model_dir.join("model.safetensors"));
    let largest_move = |run: &RunDir, prefix: &str| -> f32 {
        let after = load_tensors(&run.final_dir().join("model.safetensors"));
        before
            .iter()
            .filter(|(n, _)| n.starts_with(prefix))
            .map(|(n, b)| common::max_abs_diff(b, &after[n]))
            .fold(0f32, f32::max)
    };
    for (vision_lr, steps) in [("0.001", 1), ("0", 3)] {
        let r = recipe(
            "projector",
            &model_dir,
            &data,
            &[
                &format!("max_steps={steps}"),
                "optimizer.lr=0.01",
                "optimizer.max_grad_norm=null",
                "trainable.kinds=[projector, vision]",
                &format!("optimizer.lr_by_kind.vision={vision_lr}"),
            ],
        );
        assert_eq!(
            r.optimizer.lr_by_kind["vision"],
            vision_lr.parse::<f64>().unwrap()
        );
        let (run, _) = train(&r, &tmp.path().join(format!("runs-{vision_lr}")));
        let (projector, vision) = (
            largest_move(&run, "multi_modal_projector."),
            largest_move(&run, "vision_tower."),
        );
        println!("vision lr {vision_lr}: projector moved {projector:.2e}, vision {vision:.2e}");
        if vision_lr == "0" {
            assert_eq!(vision, 0.0);
            assert!(projector > 0.0);
        } else {
            assert!((projector - 0.01).abs() < 1e-4, "{projector}");
            assert!((vision - 0.001).abs() < 1e-5, "{vision}");
        }
    }
    // A kind nobody trains, or no kind at all, is refused before anything is written.
    for (value, needle) in [
        ("optimizer.lr_by_kind.q=0.1", "names no trained parameter"),
        (
            "optimizer.lr_by_kind.visionn=0.1",
            "is not a parameter kind",
        ),
    ] {
        let r = recipe("projector", &model_dir, &data, &[value]);
        let err = format!("{:#}", tunescope::train::check(&r).unwrap_err());
        assert!(err.contains(needle) && err.contains("lr_by_kind"), "{err}");
    }
}

/// Records with several images (`"images": [...]`, one `<image>` each) train on every family;
/// OneVision encodes each of them untiled, the others as they would alone.
#[test]
fn records_with_several_images_train_on_every_family() {
    use tunescope::model::vlm::tiny_qwen::{make_tiny_qwen_vl, TinyQwenVlSpec};
    let tmp = tempfile::tempdir().unwrap();
    let single = write_colour_data(tmp.path());
    let text = std::fs::read_to_string(&single).unwrap();
    let mut pairs = String::new();
    for (i, line) in text.lines().enumerate() {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        let other = format!("images/img-{}.png", (i + 5) % 16);
        let own = v["image"].take();
        v.as_object_mut().unwrap().remove("image");
        v["images"] = serde_json::json!([own, other]);
        v["prompt"] = serde_json::json!("<image> and <image>\nwhat colour is the first picture ?");
        pairs.push_str(&v.to_string());
        pairs.push('\n');
    }
    let data = tmp.path().join("pairs.jsonl");
    std::fs::write(&data, pairs).unwrap();
    type Maker = Box<dyn Fn(&Path)>;
    let makers: [(&str, Maker); 3] = [
        (
            "llava_next",
            Box::new(|d| make_tiny_llava(&TinyLlavaSpec::next(26), d).unwrap()),
        ),
        (
            "llava_onevision",
            Box::new(|d| make_tiny_llava(&TinyLlavaSpec::onevision(27), d).unwrap()),
        ),
        (
            "qwen2_5_vl",
            Box::new(|d| make_tiny_qwen_vl(&TinyQwenVlSpec::new(28), d).unwrap()),
        ),
    ];
    for (family, make) in makers {
        let model_dir = tmp.path().join(family);
        make(&model_dir);
        let r = recipe(
            "sa-proj",
            &model_dir,
            &data,
            &["max_steps=3", "batch_size=2"],
        );
        let (_, losses) = train(&r, &tmp.path().join(format!("runs-{family}")));
        println!("{family}: {losses:.3?}");
        assert_eq!(losses.len(), 3, "{family}");
        assert!(losses.iter().all(|l| l.is_finite()), "{family}");
    }
}
