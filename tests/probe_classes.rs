//! The probe beyond numbers: the target task's answer vocabulary derived from training data
//! (numbers for counting, yes/no, option letters), classes named in a recipe, and the answer
//! shape that shows a trained answer format bleeding into held-out prompts.

use std::path::{Path, PathBuf};

use tunescope::data::{read_records, tokenize, TokenizeOptions};
use tunescope::eval::classes::ClassSpec;
use tunescope::eval::numeric::NumericVocab;
use tunescope::model::Model;
use tunescope::recipe::{ProbeSpec, Recipe};
use tunescope::run::{Record, RunDir, RunState};
use tunescope::train::monitor::MonitorInputs;
use tunescope::train::{run_training, TrainControl};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn demo_model() -> Model {
    Model::open(repo().join("assets/demo-model").to_str().unwrap()).unwrap()
}

/// The answer class the monitor derives for `data` with the demo world's held-out prompts.
fn derived_answer_class(model: &Model, data: &Path) -> Vec<u32> {
    let recipe = Recipe {
        probe: Some(ProbeSpec {
            heldout: Some(
                repo()
                    .join("assets/probe/heldout.jsonl")
                    .to_string_lossy()
                    .into_owned(),
            ),
            ..ProbeSpec::default()
        }),
        ..Recipe::default()
    };
    let records = read_records(data).unwrap();
    let tokenized = tokenize(
        &records,
        &model.tokenizer,
        &TokenizeOptions {
            max_length: 256,
            train_on_prompt: false,
        },
    )
    .unwrap();
    let mut inputs = MonitorInputs::load(&recipe, &model.tokenizer)
        .unwrap()
        .unwrap();
    inputs.derive_answer_class(&recipe, &tokenized, &model.tokenizer);
    let class = inputs
        .classes()
        .iter()
        .find(|c| c.name == "answer")
        .expect("an answer class");
    class.ids.clone()
}

fn texts(model: &Model, ids: &[u32]) -> Vec<String> {
    ids.iter()
        .map(|&i| model.tokenizer.tokenizer.id_to_token(i).unwrap())
        .collect()
}

#[test]
fn the_counting_answer_class_is_the_numeric_class() {
    let model = demo_model();
    let ids = derived_answer_class(&model, &repo().join("assets/train/counting.jsonl"));
    let numeric = NumericVocab::new(&model.tokenizer.tokenizer, model.config.vocab_size);
    let numeric_ids: Vec<u32> = (0..model.config.vocab_size as u32)
        .filter(|&i| numeric.contains(i))
        .collect();
    println!("derived {:?}", texts(&model, &ids));
    assert_eq!(ids, numeric_ids);
}

#[test]
fn yes_no_and_option_letters_are_found() {
    let model = demo_model();
    let tmp = tempfile::tempdir().unwrap();
    let things = ["cat", "apple", "boot", "bike", "hat", "bird", "axe", "ball"];
    let mut yes_no = String::new();
    let mut letters = String::new();
    for (i, thing) in things.iter().cycle().take(40).enumerate() {
        let answer = if i % 3 == 0 { "no" } else { "yes" };
        yes_no.push_str(
            &serde_json::json!({"prompt": format!("is the {thing} big ?"), "response": answer})
                .to_string(),
        );
        yes_no.push('\n');
        // The letters appear in every prompt too, once each.
        let prompt =
            format!("which of these is a tool : a ) {thing} , b ) axe , c ) cat , d ) bed ?");
        let answer = ["a", "b", "c", "d"][i % 4];
        letters.push_str(&serde_json::json!({"prompt": prompt, "response": answer}).to_string());
        letters.push('\n');
    }
    let (yn, mc) = (tmp.path().join("yesno.jsonl"), tmp.path().join("mc.jsonl"));
    std::fs::write(&yn, yes_no).unwrap();
    std::fs::write(&mc, letters).unwrap();
    let found = texts(&model, &derived_answer_class(&model, &yn));
    assert_eq!(found, vec!["no", "yes"]);
    let found = texts(&model, &derived_answer_class(&model, &mc));
    assert_eq!(found, vec!["a", "b", "c", "d"]);
}

#[test]
fn recipe_classes_match_tokens_or_a_regex() {
    let model = demo_model();
    let tok = &model.tokenizer.tokenizer;
    let spec = ClassSpec {
        name: "yesno".into(),
        tokens: vec!["yes".into(), "no".into()],
        regex: None,
    };
    let class = spec.resolve(tok).unwrap();
    assert_eq!(texts(&model, &class.ids), vec!["no", "yes"]);
    let spec = ClassSpec {
        name: "letters".into(),
        tokens: Vec::new(),
        regex: Some("^[a-d]$".into()),
    };
    assert_eq!(
        texts(&model, &spec.resolve(tok).unwrap().ids),
        vec!["a", "b", "c", "d"]
    );
    let none = ClassSpec {
        name: "nothing".into(),
        tokens: vec!["zzzz".into()],
        regex: None,
    };
    let err = format!("{:#}", none.resolve(tok).unwrap_err());
    assert!(
        err.contains("`nothing`") && err.contains("matches no token"),
        "{err}"
    );
}

/// Training the demo model on replies that end at once (the answer format "say nothing")
/// makes held-out answers end at once too: the answer shape moves while the numeric mass does
/// not.
#[test]
fn a_terse_answer_format_shows_in_the_answer_shape_not_the_numeric_mass() {
    let tmp = tempfile::tempdir().unwrap();
    let words = ["cat", "apple", "boot", "bike", "hat", "bird", "axe", "ball"];
    let mut data = String::new();
    for i in 0..48 {
        let (a, b) = (words[i % 8], words[(i * 3 + 1) % 8]);
        let prompt = format!("name something like a {a} or a {b} . answer in one word .");
        data.push_str(&serde_json::json!({"prompt": prompt, "response": ""}).to_string());
        data.push('\n');
    }
    let data_path = tmp.path().join("terse.jsonl");
    std::fs::write(&data_path, data).unwrap();
    let assets = repo().join("assets");
    let mut recipe = Recipe::load(
        &repo().join("recipes/full-llm.yaml"),
        &[
            format!("model={}", repo().join("assets/demo-model").display()),
            format!("data={}", data_path.display()),
            "max_steps=40".into(),
            "optimizer.lr=2e-3".into(),
            "batch_size=8".into(),
            "schedule.kind=constant".into(),
            "schedule.warmup_ratio=0".into(),
        ],
    )
    .unwrap();
    recipe.output_dir = tmp.path().to_string_lossy().into_owned();
    recipe.eval = None;
    recipe.probe = Some(ProbeSpec {
        every_steps: 40,
        heldout: Some(
            assets
                .join("probe/heldout.jsonl")
                .to_string_lossy()
                .into_owned(),
        ),
        max_new_tokens: 6,
        max_prompts: Some(32),
        layer_drift: false,
        short_answer_tokens: 1,
        ..ProbeSpec::default()
    });
    let run = RunDir::create(tmp.path(), "terse").unwrap();
    run.write_recipe(&recipe).unwrap();
    let outcome =
        run_training(&recipe, &run, false, &TrainControl::default(), &mut |_| {}).unwrap();
    assert_eq!(outcome.state, RunState::Finished, "{:?}", outcome.reason);
    let last = run
        .read_records()
        .unwrap()
        .records
        .into_iter()
        .filter_map(|r| match r {
            Record::Probe(p) => Some(p),
            _ => None,
        })
        .next_back()
        .unwrap();
    let heldout = last.heldout.unwrap();
    let (now, base) = (&heldout.now.shape, &heldout.base.shape);
    println!(
        "held-out: ends within {} tokens {:.2} → {:.2}, mean length {:.2} → {:.2}, stop prob at \
         once {:.4} → {:.4}; numeric mass Δ {:+.5}",
        now.short_answer_tokens,
        base.ends_within,
        now.ends_within,
        base.mean_length,
        now.mean_length,
        base.first_stop_prob.mean,
        now.first_stop_prob.mean,
        heldout.numeric_mass_delta
    );
    // The demo model answers held-out prompts in a word or two and never ends at once.
    assert!(base.ends_within < 0.05, "{base:?}");
    assert!(now.ends_within > 0.3, "{now:?}");
    assert!(now.first_stop_prob.mean > base.first_stop_prob.mean + 0.3);
    assert!(now.mean_length < base.mean_length - 0.5);
    assert!(
        heldout.numeric_mass_delta.abs() < 0.01,
        "{}",
        heldout.numeric_mass_delta
    );
}
