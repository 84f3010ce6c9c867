//! Probe prompts and evaluation task items with an `image` field run on a tiny LLaVA: the
//! image reaches the logits the probe and the scorers read, and a run with probe and eval on
//! the shapes world finishes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use tunescope::model::decoder::Inputs;

use candle_core::{DType, Device, Tensor, D};
use tunescope::eval::numeric::NumericVocab;
use tunescope::eval::probe::{greedy_stats, load_prompts, ProbeOptions};
use tunescope::eval::tasks::score_mc::choice_logliks_with_image;
use tunescope::eval::tasks::{evaluate, Task};
use tunescope::model::vlm::tiny::{make_tiny_llava, TinyLlavaSpec};
use tunescope::model::Model;
use tunescope::world::shapes::ShapesWorld;

/// Writes a tiny model into a folder.
type ModelMaker = Box<dyn Fn(&Path)>;

struct Setup {
    _tmp: tempfile::TempDir,
    shapes: PathBuf,
    model_dir: PathBuf,
    model: Model,
}

fn setup() -> Setup {
    setup_with(&TinyLlavaSpec::new(8))
}

fn setup_with(spec: &TinyLlavaSpec) -> Setup {
    setup_making(&|dir| make_tiny_llava(spec, dir).unwrap())
}

fn setup_making(make: &dyn Fn(&Path)) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let shapes = tmp.path().join("shapes");
    ShapesWorld::new(2).write(&shapes).unwrap();
    let model_dir = tmp.path().join("llava");
    make(&model_dir);
    let model = Model::open(&model_dir.to_string_lossy()).unwrap();
    Setup {
        _tmp: tmp,
        shapes,
        model_dir,
        model,
    }
}

fn pixel_tensor(p: &tunescope::data::Pixels) -> tunescope::model::vlm::ImageBatch {
    tunescope::model::vlm::ImageBatch::from_pixels(&[p], &Device::Cpu)
        .unwrap()
        .unwrap()
}

#[test]
fn probe_prompts_carry_their_images() {
    let s = setup();
    let tok = &s.model.tokenizer;
    let prompts = load_prompts(&s.shapes.join("probe/target.jsonl"), tok, Some(3)).unwrap();
    let image_id = s.model.config.vision.as_ref().unwrap().image_token_index;
    for p in &prompts {
        assert_eq!(p.ids.iter().filter(|&&t| t == image_id).count(), 16);
        assert_eq!(p.pixel_values.len(), 1);
    }
    let decoder = s
        .model
        .decoder(&HashSet::new(), DType::F32, &Device::Cpu)
        .unwrap();
    let numeric = NumericVocab::new(&tok.tokenizer, s.model.config.vocab_size);
    // The probe's first-step distribution of one prompt is the full forward's last position.
    let one = &prompts[..1];
    let stats = greedy_stats(
        &decoder,
        one,
        &numeric,
        &tok.stop_ids,
        &ProbeOptions::default(),
    )
    .unwrap();
    let ids = Tensor::new(one[0].ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let px = pixel_tensor(&one[0].pixel_values[0]);
    let logits = decoder
        .forward(&Inputs::text(&ids, None).with_images(Some(&px)))
        .unwrap();
    let last = logits.get(0).unwrap().get(one[0].ids.len() - 1).unwrap();
    let probs: Vec<f32> = candle_nn::ops::softmax(&last, D::Minus1)
        .unwrap()
        .to_vec1()
        .unwrap();
    let diff = probs
        .iter()
        .zip(&stats.first_step_mean)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        diff < 1e-5,
        "probe first step differs from the full forward by {diff}"
    );
    // A batch of prompts (left-padded, several images) gives each prompt's own reading.
    let batch = greedy_stats(
        &decoder,
        &prompts,
        &numeric,
        &tok.stop_ids,
        &ProbeOptions::default(),
    )
    .unwrap();
    let alone = greedy_stats(
        &decoder,
        &prompts[1..2],
        &numeric,
        &tok.stop_ids,
        &ProbeOptions::default(),
    )
    .unwrap();
    assert_eq!(batch.continuations[1], alone.continuations[0]);
    // A prompt file whose image is missing names the file and line.
    let bad = s.shapes.join("probe/bad.jsonl");
    std::fs::write(
        &bad,
        "{\"prompt\": \"<image> hi\", \"image\": \"nope.png\"}\n",
    )
    .unwrap();
    let e = format!("{:#}", load_prompts(&bad, tok, None).unwrap_err());
    assert!(
        e.contains("bad.jsonl line 1") && e.contains("nope.png"),
        "{e}"
    );
}

#[test]
fn task_items_with_images_are_scored_with_them() {
    let s = setup();
    let tok = &s.model.tokenizer;
    let decoder = s
        .model
        .decoder(&HashSet::new(), DType::F32, &Device::Cpu)
        .unwrap();
    let colour = Task::load(&s.shapes.join("tasks/colour.yaml")).unwrap();
    assert_eq!(colour.images.len(), colour.items.len());
    // The scorer's log-likelihood of a choice equals a hand computation with the image.
    let tunescope::eval::tasks::TaskItem::MultipleChoice {
        prompt, choices, ..
    } = &colour.items[0]
    else {
        panic!("multiple choice expected");
    };
    let ll = choice_logliks_with_image(&decoder, tok, prompt, choices, true, Some((&colour, 0)))
        .unwrap();
    let ctx_text = tunescope::eval::tasks::prompt::render(tok, prompt, true).unwrap();
    let mut ids = tok.encode(&ctx_text).unwrap();
    let images = tok.images.as_ref().unwrap();
    ids = images.expand_with(&ids, &[images.tokens_per_tile()]).0;
    let start = ids.len();
    ids.extend(tok.encode(&choices[2]).unwrap());
    let px = pixel_tensor(
        &images
            .load_pixels(colour.images[0].as_ref().unwrap())
            .unwrap(),
    );
    let input = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let logits = decoder
        .forward(&Inputs::text(&input, None).with_images(Some(&px)))
        .unwrap()
        .get(0)
        .unwrap();
    let lp = candle_nn::ops::log_softmax(&logits, D::Minus1).unwrap();
    let mut expected = 0f64;
    for (p, &id) in ids.iter().enumerate().skip(start) {
        expected += lp
            .get(p - 1)
            .unwrap()
            .get(id as usize)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
    }
    assert!((ll[2] - expected).abs() < 1e-4, "{} vs {expected}", ll[2]);
    let score = evaluate(&decoder, tok, &colour, Some(8)).unwrap();
    assert_eq!(score.items, 8);
    assert!(score.score.is_some());
    let counting = Task::load(&s.shapes.join("tasks/counting.yaml")).unwrap();
    let score = evaluate(&decoder, tok, &counting, Some(10)).unwrap();
    assert_eq!(score.items, 10);
    assert!((0.0..=100.0).contains(&score.score.unwrap()));
}

#[test]
/// On every family: LLaVA-1.5, LLaVA-NeXT, LLaVA-OneVision and Qwen2.5-VL.
fn training_with_image_probe_and_eval_finishes() {
    use tunescope::model::vlm::tiny_qwen::{make_tiny_qwen_vl, TinyQwenVlSpec};
    use tunescope::recipe::Recipe;
    use tunescope::run::{RunDir, RunState};
    use tunescope::train::{run_training, TrainControl, TrainEvent};
    let makers: [(&str, ModelMaker); 4] = [
        (
            "llava",
            Box::new(|d| make_tiny_llava(&TinyLlavaSpec::new(8), d).unwrap()),
        ),
        (
            "llava_next",
            Box::new(|d| make_tiny_llava(&TinyLlavaSpec::next(9), d).unwrap()),
        ),
        (
            "llava_onevision",
            Box::new(|d| make_tiny_llava(&TinyLlavaSpec::onevision(10), d).unwrap()),
        ),
        (
            "qwen2_5_vl",
            Box::new(|d| make_tiny_qwen_vl(&TinyQwenVlSpec::new(11), d).unwrap()),
        ),
    ];
    for (family, make) in makers {
        let s = setup_making(&*make);
        let sh = |p: &str| s.shapes.join(p).display().to_string();
        let recipe = Recipe::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/projector.yaml"),
            &[
                format!("model={}", s.model_dir.display()),
                format!("data={}", sh("train/counting.jsonl")),
                "max_steps=3".into(),
                format!("probe.target={}", sh("probe/target.jsonl")),
                format!("probe.heldout={}", sh("probe/heldout.jsonl")),
                "probe.every_steps=3".into(),
                "probe.max_prompts=4".into(),
                "probe.max_new_tokens=3".into(),
                format!(
                    "eval.tasks=[{}, {}]",
                    sh("tasks/counting.yaml"),
                    sh("tasks/shape.yaml")
                ),
                "eval.every_steps=3".into(),
                "eval.max_items=4".into(),
            ],
        )
        .unwrap();
        let run = RunDir::create(&s.shapes.join("runs"), "vlm").unwrap();
        let mut monitors = 0;
        let outcome = run_training(&recipe, &run, false, &TrainControl::default(), &mut |e| {
            if let TrainEvent::Monitor { .. } = e {
                monitors += 1;
            }
        })
        .unwrap();
        assert_eq!(outcome.state, RunState::Finished, "{:?}", outcome.reason);
        assert_eq!(monitors, 2, "{family}: step 0 and the last step");
    }
}

#[test]
fn generation_with_an_image_follows_the_full_forward() {
    use tunescope::model::vlm::tiny_qwen::{make_tiny_qwen_vl, TinyQwenVlSpec};
    generation_follows_the_full_forward(&setup());
    // Qwen2.5-VL: M-RoPE positions after the image continue from the cache's next position.
    generation_follows_the_full_forward(&setup_making(&|d| {
        make_tiny_qwen_vl(&TinyQwenVlSpec::new(12), d).unwrap()
    }));
}

fn generation_follows_the_full_forward(s: &Setup) {
    use tunescope::model::generate::{generate_with_image, GenerateOptions};
    let prompts = load_prompts(
        &s.shapes.join("probe/heldout.jsonl"),
        &s.model.tokenizer,
        Some(2),
    )
    .unwrap();
    let decoder = s
        .model
        .decoder(&HashSet::new(), DType::F32, &Device::Cpu)
        .unwrap();
    for p in &prompts {
        let px = pixel_tensor(&p.pixel_values[0]);
        let options = GenerateOptions {
            max_new_tokens: 6,
            ..Default::default()
        };
        let out = generate_with_image(&decoder, &p.ids, Some(&px), &options, |_| Ok(())).unwrap();
        // Each greedy token is the arg-max of a full forward over prompt + tokens so far.
        let mut ids = p.ids.clone();
        for &token in &out {
            let input = Tensor::new(ids.as_slice(), &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let logits = decoder
                .forward(&Inputs::text(&input, None).with_images(Some(&px)))
                .unwrap();
            let last = logits.get(0).unwrap().get(ids.len() - 1).unwrap();
            assert_eq!(last.argmax(0).unwrap().to_scalar::<u32>().unwrap(), token);
            ids.push(token);
        }
    }
}
