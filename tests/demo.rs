//! The committed demo model (`assets/demo-model`), its word-level tokenizer and the demo
//! recipes (`recipes/demo-*.yaml`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use tunescope::demo::pretrain::{score_model, CHECK_ITEMS, TASKS};
use tunescope::demo::{build_word_tokenizer, word_vocabulary, DemoScores};
use tunescope::model::Model;
use tunescope::recipe::Recipe;
use tunescope::select;
use tunescope::world::{Skill, Split, World};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn demo_model() -> PathBuf {
    root().join("assets/demo-model")
}

#[test]
fn demo_model_opens_and_builds_a_decoder_quickly() {
    let started = Instant::now();
    let model = Model::open(&demo_model().to_string_lossy()).unwrap();
    let decoder = model
        .decoder(
            &Default::default(),
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        )
        .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    println!("demo model opened and decoder built in {seconds:.3} s");
    assert_eq!(
        model.config.num_hidden_layers,
        decoder.config().num_hidden_layers
    );
    assert!(model.tokenizer.chat_template.is_some());
    assert!(seconds < 10.0, "took {seconds:.1} s");
    let bytes: u64 = std::fs::read_dir(demo_model())
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(bytes < 20 << 20, "the demo model takes {bytes} bytes");
}

#[test]
fn demo_model_scores_match_its_readme() {
    let stated = DemoScores::load(&demo_model()).unwrap();
    let readme = std::fs::read_to_string(demo_model().join("README.md")).unwrap();
    for s in &stated.scores {
        assert!(
            readme.contains(&format!("| {} | {:.1}% |", s.skill, s.score)),
            "README.md does not state {} = {:.1}%",
            s.skill,
            s.score
        );
    }
    let started = Instant::now();
    let world = World::new(stated.options.world_seed);
    let measured = score_model(
        &demo_model(),
        &root().join("assets/tasks"),
        &world,
        Some(CHECK_ITEMS),
    )
    .unwrap();
    println!(
        "scored {} skills on {CHECK_ITEMS} items each in {:.1} s",
        measured.len(),
        started.elapsed().as_secs_f64()
    );
    for name in TASKS.iter().chain(["copy"].iter()) {
        let now = measured.iter().find(|s| s.skill == *name).unwrap();
        let expected = stated.check_score(name).unwrap();
        println!("{name}: {:.1}% (stated {expected:.1}%)", now.score);
        assert_eq!(now.items, CHECK_ITEMS);
        assert!(
            (now.score - expected).abs() <= 4.0 + 1e-9,
            "{name}: measured {:.1}%, scores.json says {expected:.1}%",
            now.score
        );
        if *name == "counting" {
            // The fine-tuning target is weak on purpose (few counting examples in pretraining):
            // above guessing, with room left for the demo recipes to learn.
            assert!(
                now.score > now.baseline && now.score < 70.0,
                "counting at {:.1}% (baseline {:.1}%)",
                now.score,
                now.baseline
            );
        } else {
            // Clearly above guessing on every held-out skill.
            assert!(
                now.score > now.baseline + 20.0,
                "{name} is near its baseline"
            );
        }
    }
}

#[test]
fn word_tokenizer_round_trips_world_texts() {
    let world = World::new(0);
    let fresh = build_word_tokenizer(&world).unwrap();
    let committed = tokenizers::Tokenizer::from_file(demo_model().join("tokenizer.json")).unwrap();
    let vocab = word_vocabulary(&world);
    assert_eq!(committed.get_vocab_size(true), vocab.len());
    for (id, word) in vocab.iter().enumerate() {
        assert_eq!(committed.token_to_id(word), Some(id as u32), "{word}");
    }
    let unk = fresh.token_to_id("<unk>").unwrap();
    for tok in [&fresh, &committed] {
        for skill in Skill::ALL {
            for split in [Split::Train, Split::Test] {
                for e in world.examples(skill, split, 30, 7) {
                    for text in [&e.prompt, &e.response] {
                        let ids = tok.encode(text.as_str(), false).unwrap().get_ids().to_vec();
                        assert!(!ids.contains(&unk), "unknown word in {text}");
                        assert_eq!(ids.len(), text.split_whitespace().count(), "{text}");
                        assert_eq!(&tok.decode(&ids, true).unwrap(), text);
                    }
                }
            }
        }
    }
    // The chat template's specials are single tokens and are skipped when decoding.
    let chat = "<|im_start|>user\nhow many stars are there : red star ?<|im_end|>\n<|im_start|>assistant\n1<|im_end|>";
    let ids = fresh.encode(chat, false).unwrap().get_ids().to_vec();
    assert_eq!(ids[0], fresh.token_to_id("<|im_start|>").unwrap());
    assert_eq!(
        fresh.decode(&ids, true).unwrap(),
        "user how many stars are there : red star ? assistant 1"
    );
}

#[test]
fn demo_recipes_parse_and_resolve_on_the_demo_model() {
    let model = Model::open(&demo_model().to_string_lossy()).unwrap();
    let map = model.module_map();
    let mut names = Vec::new();
    let mut shared = None;
    for entry in std::fs::read_dir(root().join("recipes")).unwrap().flatten() {
        let path = entry.path();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(file.starts_with("demo-") && file.ends_with(".yaml")) {
            continue;
        }
        let recipe = Recipe::load(&path, &[]).unwrap();
        assert_eq!(recipe.model.as_deref(), Some("assets/demo-model"), "{file}");
        assert_eq!(recipe.data.as_deref(), Some("assets/train/counting.jsonl"));
        assert!(root().join(recipe.data.as_deref().unwrap()).is_file());
        let probe = recipe.probe.as_ref().expect("a probe section");
        for p in [&probe.heldout, &probe.target] {
            assert!(root().join(p.as_deref().unwrap()).is_file(), "{file}");
        }
        let eval = recipe.eval.as_ref().expect("an eval section");
        for t in &eval.tasks {
            assert!(root().join(t).is_file(), "{file}: {t}");
        }
        let key = (recipe.seed, recipe.max_steps, recipe.batch_size);
        assert_eq!(*shared.get_or_insert(key), key, "{file}");

        let selection = select::resolve(&recipe.trainable, &map).unwrap();
        let percent = 100.0 * selection.trainable_numel(&map) as f64 / map.total() as f64;
        println!("{file}: {} tensors, {percent:.1}%", selection.len());
        let only = |parts: &[&str]| {
            selection
                .names
                .iter()
                .all(|n| parts.iter().any(|p| n.contains(p)))
        };
        match recipe.name.as_str() {
            "demo-full-llm" => assert_eq!(selection.trainable_numel(&map), map.total()),
            "demo-sa-proj" => assert!(only(&["self_attn."])),
            "demo-mlp" => assert!(only(&["mlp."])),
            "demo-mlp-gate-up" => assert!(only(&["gate_proj", "up_proj"])),
            // The baselines: LwF on the MLP, LoRA adapters on the MLP's linears.
            "demo-lwf-mlp" => {
                assert!(only(&["mlp."]));
                let lwf = recipe.regularize.as_ref().expect("a regularize section");
                assert_eq!(
                    (lwf.lambda, lwf.temperature),
                    (1.0, 2.0),
                    "the study's λ and T"
                );
            }
            "demo-lora-mlp" => {
                assert!(only(&["mlp."]));
                let lora = recipe.lora.as_ref().expect("a lora section");
                assert_eq!((lora.r, lora.alpha), (16, 32.0));
            }
            other => panic!("unexpected demo recipe {other}"),
        }
        assert!(!selection.names.is_empty());
        names.push(recipe.name);
    }
    names.sort();
    assert_eq!(
        names,
        [
            "demo-full-llm",
            "demo-lora-mlp",
            "demo-lwf-mlp",
            "demo-mlp",
            "demo-mlp-gate-up",
            "demo-sa-proj"
        ]
    );
    assert!(Path::new(&root().join("recipes/demo-sa-proj.yaml")).is_file());
}
