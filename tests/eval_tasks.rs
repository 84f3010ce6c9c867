//! Task files and their scoring on tiny generated models: multiple choice by log-likelihood,
//! greedy generation with exact match and regex extraction, perplexity, header and item errors,
//! deltas, and the `eval` command's JSON.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use tunescope::model::decoder::Inputs;

use candle_core::{DType, Device, IndexOp, Tensor, D};
use common::TinyModel;
use serde_json::json;
use tunescope::eval::tasks::normalize::normalize;
use tunescope::eval::tasks::score_mc::choice_logliks;
use tunescope::eval::tasks::{
    deltas, evaluate, MatchMode, Task, TaskItem, TaskKind, TaskRole, TaskScore,
};
use tunescope::model::generate::{generate, GenerateOptions};
use tunescope::model::tokenizer::ChatMessage;
use tunescope::model::{Architecture, Decoder, Model};

struct Loaded {
    _tiny: TinyModel,
    spec: String,
    model: Model,
    decoder: Decoder,
}

fn load(arch: Architecture, seed: u64) -> Loaded {
    let tiny = TinyModel::new(arch, seed);
    let spec = tiny.spec_str();
    let model = Model::open(&spec).unwrap();
    let decoder = model
        .decoder(&HashSet::new(), DType::F32, &Device::Cpu)
        .unwrap();
    Loaded {
        _tiny: tiny,
        spec,
        model,
        decoder,
    }
}

/// Writes `NAME.yaml` (header) and `NAME.jsonl` (items) into `dir`; returns the YAML path.
fn write_task(dir: &Path, name: &str, header: &str, items: &[serde_json::Value]) -> PathBuf {
    let yaml = dir.join(format!("{name}.yaml"));
    std::fs::write(&yaml, header).unwrap();
    let lines: Vec<String> = items.iter().map(|v| v.to_string()).collect();
    std::fs::write(dir.join(format!("{name}.jsonl")), lines.join("\n") + "\n").unwrap();
    yaml
}

/// The chat-rendered prompt (user message + generation prompt), written out by hand.
fn chat_prompt(prompt: &str) -> String {
    format!("<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n")
}

/// Log-softmax of the logits of one unpadded sequence, `(T, V)`, straight from `forward`.
fn log_probs(decoder: &Decoder, ids: &[u32]) -> Tensor {
    let input = Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let logits = decoder
        .forward(&Inputs::text(&input, None))
        .unwrap()
        .i(0)
        .unwrap();
    candle_nn::ops::log_softmax(&logits, D::Minus1).unwrap()
}

/// Sum of log p(ids[i] | ids[..i]) for i in `from..`.
fn direct_loglik(decoder: &Decoder, ids: &[u32], from: usize) -> f64 {
    let lp = log_probs(decoder, ids);
    (from..ids.len())
        .map(|i| {
            lp.i((i - 1, ids[i] as usize))
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64
        })
        .sum()
}

/// Whether `id` decodes to non-empty text that encodes back to exactly `[id]`.
fn round_trips(loaded: &Loaded, id: u32) -> Option<String> {
    let tok = &loaded.model.tokenizer;
    let text = tok.decode(&[id]).ok()?;
    (!text.trim().is_empty() && tok.encode(&text).ok()? == vec![id]).then_some(text)
}

const PROMPTS: [&str; 6] = [
    "what colour is the sky ?",
    "what is the opposite of hot ?",
    "copy the words : apple banana cherry",
    "how many red circles are in the picture ?",
    "reverse the words : cherry banana apple",
    "the quick brown fox",
];

#[test]
fn multiple_choice_picks_the_models_own_greedy_token() {
    let loaded = load(Architecture::Llama, 7);
    let tok = &loaded.model.tokenizer;
    let vocab = loaded.decoder.config().vocab_size as u32;
    let mut items = Vec::new();
    for (n, prompt) in PROMPTS.iter().enumerate() {
        let ids = tok.encode(&chat_prompt(prompt)).unwrap();
        let options = GenerateOptions {
            max_new_tokens: 1,
            ..Default::default()
        };
        let greedy = generate(&loaded.decoder, &ids, &options, |_| Ok(())).unwrap()[0];
        let Some(correct) = round_trips(&loaded, greedy) else {
            continue;
        };
        // Wrong choices: other single tokens, spread over the vocabulary.
        let wrong: Vec<String> = (0..vocab)
            .map(|i| (i * 37 + 5 * n as u32 + 101) % vocab)
            .filter(|&id| id != greedy)
            .filter_map(|id| round_trips(&loaded, id))
            .filter(|t| *t != correct)
            .take(3)
            .collect();
        // Put the right answer at a different index each time.
        let mut choices = wrong;
        let answer = n % (choices.len() + 1);
        choices.insert(answer, correct);
        items.push(json!({"prompt": prompt, "choices": choices, "answer": answer}));
    }
    assert!(items.len() >= 3, "too few usable prompts: {}", items.len());
    let dir = tempfile::tempdir().unwrap();
    let path = write_task(
        dir.path(),
        "greedy",
        "role: target\ntype: multiple_choice\ndata: greedy.jsonl\n",
        &items,
    );
    let task = Task::load(&path).unwrap();
    assert_eq!(task.name, "greedy");
    assert_eq!(task.role, TaskRole::Target);
    assert!(task.chat, "chat defaults to true");
    let score = evaluate(&loaded.decoder, tok, &task, None).unwrap();
    assert_eq!(score.items, items.len());
    assert_eq!(score.score, Some(100.0), "{score:?}");
    assert_eq!(score.metrics["acc"], 100.0);
    assert!(score.metrics.contains_key("acc_norm"));

    // Moving every answer to a wrong choice drops accuracy to zero.
    let shifted: Vec<serde_json::Value> = items
        .iter()
        .map(|it| {
            let mut it = it.clone();
            let n = it["choices"].as_array().unwrap().len() as u64;
            it["answer"] = json!((it["answer"].as_u64().unwrap() + 1) % n);
            it
        })
        .collect();
    let path = write_task(dir.path(), "shifted", "type: multiple_choice\n", &shifted);
    let task = Task::load(&path).unwrap();
    assert_eq!(task.role, TaskRole::Heldout, "role defaults to heldout");
    let score = evaluate(&loaded.decoder, tok, &task, None).unwrap();
    assert_eq!(score.score, Some(0.0), "{score:?}");

    // max_items takes the first N.
    let score = evaluate(&loaded.decoder, tok, &task, Some(2)).unwrap();
    assert_eq!(score.items, 2);
}

#[test]
fn choice_loglikelihoods_match_a_direct_computation() {
    for arch in [Architecture::Qwen2, Architecture::Llama] {
        let loaded = load(arch, 5);
        let tok = &loaded.model.tokenizer;
        let prompt = "what colour is the sky ?";
        // Choices of different token lengths, so the batch is padded.
        let choices: Vec<String> = ["the sky is blue", "red", "three red circles and two blue"]
            .map(String::from)
            .to_vec();
        let ours = choice_logliks(&loaded.decoder, tok, prompt, &choices, true).unwrap();
        let ctx = tok.encode(&chat_prompt(prompt)).unwrap();
        for (choice, ll) in choices.iter().zip(&ours) {
            let mut ids = ctx.clone();
            ids.extend(tok.encode(choice).unwrap());
            let expected = direct_loglik(&loaded.decoder, &ids, ctx.len());
            assert!(
                (expected - ll).abs() < 1e-3,
                "{arch:?} {choice:?}: ours {ll} vs direct {expected}"
            );
            assert!(*ll < 0.0);
        }

        // Raw prompts: the context's trailing space moves onto the choice, as lm-eval does.
        let raw =
            choice_logliks(&loaded.decoder, tok, "the sky is ", &choices[1..2], false).unwrap()[0];
        let ctx = tok.encode("the sky is").unwrap();
        let mut ids = ctx.clone();
        ids.extend(tok.encode(" red").unwrap());
        let expected = direct_loglik(&loaded.decoder, &ids, ctx.len());
        assert!((expected - raw).abs() < 1e-3, "raw: {raw} vs {expected}");
    }
}

#[test]
fn acc_norm_prefers_likelihood_per_byte() {
    let loaded = load(Architecture::Qwen2, 3);
    let tok = &loaded.model.tokenizer;
    let prompt = "copy the words : apple banana cherry";
    let short = "x".to_string();
    let long = "the quick brown fox jumps over the lazy dog".to_string();
    let choices = vec![short.clone(), long.clone()];
    let ll = choice_logliks(&loaded.decoder, tok, prompt, &choices, true).unwrap();
    // The constructed case: the short choice is more likely in total, the long one per byte.
    assert!(ll[0] > ll[1], "{ll:?}");
    assert!(
        ll[1] / long.len() as f64 > ll[0] / short.len() as f64,
        "{ll:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = write_task(
        dir.path(),
        "norm",
        "type: multiple_choice\n",
        &[json!({"prompt": prompt, "choices": choices, "answer": long})],
    );
    let task = Task::load(&path).unwrap();
    assert!(matches!(
        &task.items[0],
        TaskItem::MultipleChoice { answer: 1, .. }
    ));
    let score = evaluate(&loaded.decoder, tok, &task, None).unwrap();
    assert_eq!(score.metrics["acc"], 0.0, "{score:?}");
    assert_eq!(score.metrics["acc_norm"], 100.0, "{score:?}");
    assert_eq!(score.score, Some(0.0));
}

/// Greedy text after `prompt` (chat-rendered), stop ids ending it, from `generate` directly.
fn greedy_text(loaded: &Loaded, prompt: &str, max_new_tokens: usize) -> String {
    let tok = &loaded.model.tokenizer;
    let ids = tok.encode(&chat_prompt(prompt)).unwrap();
    let options = GenerateOptions {
        max_new_tokens,
        stop_ids: tok.stop_ids.clone(),
        ..Default::default()
    };
    let mut out = generate(&loaded.decoder, &ids, &options, |_| Ok(())).unwrap();
    if out.last().is_some_and(|t| tok.stop_ids.contains(t)) {
        out.pop();
    }
    tok.decode(&out).unwrap()
}

#[test]
fn generate_exact_match_on_the_models_own_output() {
    let loaded = load(Architecture::Llama, 7);
    let tok = &loaded.model.tokenizer;
    let texts: Vec<String> = PROMPTS.iter().map(|p| greedy_text(&loaded, p, 6)).collect();
    let dir = tempfile::tempdir().unwrap();
    let right: Vec<serde_json::Value> = PROMPTS
        .iter()
        .zip(&texts)
        .map(|(p, t)| json!({"prompt": p, "answer": ["no such answer", t]}))
        .collect();
    let header = "type: generate\nmax_new_tokens: 6\n";
    let task = Task::load(&write_task(dir.path(), "right", header, &right)).unwrap();
    assert_eq!(task.max_new_tokens, 6);
    assert_eq!(task.match_mode, MatchMode::Exact);
    let score = evaluate(&loaded.decoder, tok, &task, None).unwrap();
    assert_eq!(score.kind, TaskKind::Generate);
    assert_eq!(score.score, Some(100.0), "{score:?} for {texts:?}");
    assert_eq!(score.metrics["exact_match"], 100.0);

    let wrong: Vec<serde_json::Value> = PROMPTS
        .iter()
        .map(|p| json!({"prompt": p, "answer": "definitely not this"}))
        .collect();
    let task = Task::load(&write_task(dir.path(), "wrong", header, &wrong)).unwrap();
    let score = evaluate(&loaded.decoder, tok, &task, None).unwrap();
    assert_eq!(score.score, Some(0.0), "{score:?}");
}

#[test]
fn regex_extraction_and_stop_strings() {
    let loaded = load(Architecture::Llama, 7);
    let tok = &loaded.model.tokenizer;
    // A prompt whose greedy output has two words and normalises differently from its first,
    // and is cut to a non-empty prefix by its second word used as a stop string.
    let usable = |text: &str| {
        let words: Vec<&str> = text.split_whitespace().collect();
        words.len() >= 2
            && normalize(text) != normalize(words[0])
            && !normalize(&text[..text.find(words[1]).unwrap()]).is_empty()
    };
    let (prompt, text) = PROMPTS
        .iter()
        .map(|p| (*p, greedy_text(&loaded, p, 12)))
        .find(|(_, t)| usable(t))
        .expect("some greedy output is usable");
    let first = text.split_whitespace().next().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let items = [json!({"prompt": prompt, "answer": first})];

    // Without extraction the whole output is compared: wrong.
    let header = "type: generate\nmax_new_tokens: 12\n";
    let task = Task::load(&write_task(dir.path(), "plain", header, &items)).unwrap();
    let score = evaluate(&loaded.decoder, tok, &task, None).unwrap();
    assert_eq!(score.score, Some(0.0), "{text:?}");

    // The first capture group is the answer: right.
    let header = "type: generate\nmax_new_tokens: 12\nregex: '(\\S+)'\n";
    let task = Task::load(&write_task(dir.path(), "group", header, &items)).unwrap();
    assert!(task.regex.is_some());
    let score = evaluate(&loaded.decoder, tok, &task, None).unwrap();
    assert_eq!(score.score, Some(100.0), "{text:?}");

    // A pattern that does not match counts as wrong.
    let header = "type: generate\nmax_new_tokens: 12\nregex: 'NEVER(\\d+)'\n";
    let task = Task::load(&write_task(dir.path(), "nomatch", header, &items)).unwrap();
    let score = evaluate(&loaded.decoder, tok, &task, None).unwrap();
    assert_eq!(score.score, Some(0.0));

    // A stop string cuts the output at its first occurrence.
    let second = text.split_whitespace().nth(1).unwrap();
    let cut = &text[..text.find(second).unwrap()];
    let header = format!(
        "type: generate\nmax_new_tokens: 12\nstop: [{}]\n",
        json!(second)
    );
    let items = [json!({"prompt": prompt, "answer": cut})];
    let task = Task::load(&write_task(dir.path(), "stop", &header, &items)).unwrap();
    assert_eq!(task.stop, vec![second.to_string()]);
    let score = evaluate(&loaded.decoder, tok, &task, None).unwrap();
    assert_eq!(score.score, Some(100.0), "{text:?} cut at {second:?}");
}

#[test]
fn perplexity_is_exp_of_the_mean_token_nll() {
    let loaded = load(Architecture::Llama, 9);
    let tok = &loaded.model.tokenizer;
    let texts = [
        "the quick brown fox jumps over the lazy dog .",
        "there are three red circles and two blue squares",
    ];
    // The prefix token: the tiny tokenizer declares no BOS, so the config's bos_token_id.
    let prefix = loaded.decoder.config().bos_token_id.unwrap();
    let (mut nll, mut count) = (0.0, 0usize);
    for text in texts {
        let mut ids = vec![prefix];
        ids.extend(tok.encode(text).unwrap());
        nll -= direct_loglik(&loaded.decoder, &ids, 1);
        count += ids.len() - 1;
    }
    let mean = nll / count as f64;
    let dir = tempfile::tempdir().unwrap();
    let items: Vec<_> = texts.iter().map(|t| json!({"text": t})).collect();
    let path = write_task(
        dir.path(),
        "ppl",
        "name: wiki\ntype: perplexity\nchat: false\n",
        &items,
    );
    let task = Task::load(&path).unwrap();
    assert_eq!(task.name, "wiki");
    let score = evaluate(&loaded.decoder, tok, &task, None).unwrap();
    assert_eq!(score.score, None);
    assert_eq!(score.kind, TaskKind::Perplexity);
    let ppl = score.metrics["perplexity"];
    assert!(
        (ppl - mean.exp()).abs() < 1e-4 * mean.exp(),
        "{ppl} vs {}",
        mean.exp()
    );
    assert!((score.metrics["nll_per_token"] - mean).abs() < 1e-4);
    let bytes: usize = texts.iter().map(|t| t.len()).sum();
    let bpb = nll / (bytes as f64 * std::f64::consts::LN_2);
    assert!((score.metrics["bits_per_byte"] - bpb).abs() < 1e-4);
}

fn load_err(dir: &Path, name: &str, header: &str, items: &str) -> String {
    let yaml = dir.join(format!("{name}.yaml"));
    std::fs::write(&yaml, header).unwrap();
    std::fs::write(dir.join(format!("{name}.jsonl")), items).unwrap();
    format!("{:#}", Task::load(&yaml).unwrap_err())
}

#[test]
fn header_and_item_errors_say_where() {
    let dir = tempfile::tempdir().unwrap();
    let ok_item = "{\"prompt\": \"p\", \"choices\": [\"a\", \"b\"], \"answer\": 0}\n";

    let err = load_err(
        dir.path(),
        "typo",
        "type: multiple_choice\nrol: target\n",
        ok_item,
    );
    assert!(err.contains("unknown key `rol`"), "{err}");
    assert!(err.contains("did you mean `role`"), "{err}");
    assert!(err.contains("typo.yaml:2"), "{err}");

    let err = load_err(
        dir.path(),
        "far",
        "type: multiple_choice\nzzzz: 1\n",
        ok_item,
    );
    assert!(
        err.contains("unknown key `zzzz`") && err.contains("known keys"),
        "{err}"
    );

    let err = load_err(
        dir.path(),
        "nodata",
        "type: multiple_choice\ndata: missing.jsonl\n",
        ok_item,
    );
    assert!(
        err.contains("missing.jsonl") && err.contains("does not exist"),
        "{err}"
    );
    assert!(err.contains("nodata.yaml:2"), "{err}");

    let items = format!("{ok_item}\n{{\"prompt\": \"p\", \"choices\": [\"a\"], \"answer\": 0}}\n");
    let err = load_err(dir.path(), "short", "type: multiple_choice\n", &items);
    assert!(err.contains("short.jsonl:3"), "{err}");
    assert!(err.contains("at least two"), "{err}");

    let items =
        format!("{ok_item}{{\"prompt\": \"p\", \"choices\": [\"a\", \"b\"], \"answer\": 2}}\n");
    let err = load_err(dir.path(), "range", "type: multiple_choice\n", &items);
    assert!(
        err.contains("range.jsonl:2") && err.contains("answer"),
        "{err}"
    );

    let err = load_err(
        dir.path(),
        "json",
        "type: perplexity\n",
        "{\"text\": \"a\"}\nnot json\n",
    );
    assert!(
        err.contains("json.jsonl:2") && err.contains("not valid JSON"),
        "{err}"
    );

    let err = load_err(
        dir.path(),
        "field",
        "type: generate\n",
        "{\"answer\": \"a\"}\n",
    );
    assert!(
        err.contains("field.jsonl:1") && err.contains("`prompt`"),
        "{err}"
    );

    let err = load_err(
        dir.path(),
        "numeric",
        "type: generate\nmatch: numeric\n",
        "{\"prompt\": \"p\", \"answer\": \"blue\"}\n",
    );
    assert!(
        err.contains("numeric.jsonl:1") && err.contains("no number"),
        "{err}"
    );

    let err = load_err(
        dir.path(),
        "genonly",
        "type: multiple_choice\nmax_new_tokens: 4\n",
        ok_item,
    );
    assert!(
        err.contains("genonly.yaml:2") && err.contains("generate"),
        "{err}"
    );

    let err = load_err(
        dir.path(),
        "badrole",
        "type: generate\nrole: train\n",
        ok_item,
    );
    assert!(err.contains("train") && err.contains("target"), "{err}");

    let err = load_err(
        dir.path(),
        "badregex",
        "type: generate\nregex: '(unclosed'\n",
        "{\"prompt\": \"p\", \"answer\": \"a\"}\n",
    );
    assert!(
        err.contains("badregex.yaml:2") && err.contains("regex"),
        "{err}"
    );

    let err = load_err(dir.path(), "empty", "type: perplexity\n", "\n\n");
    assert!(err.contains("no items"), "{err}");

    // Generate answers may be a string, a list, or numbers; data defaults to STEM.jsonl.
    let yaml = dir.path().join("gen.yaml");
    std::fs::write(&yaml, "type: generate\nmatch: numeric\n").unwrap();
    std::fs::write(
        dir.path().join("gen.jsonl"),
        "{\"prompt\": \"p\", \"answer\": 7}\n{\"prompt\": \"q\", \"answer\": [\"seven\", \"7\"]}\n",
    )
    .unwrap();
    let task = Task::load(&yaml).unwrap();
    assert_eq!(
        task.items,
        vec![
            TaskItem::Generate {
                prompt: "p".into(),
                answers: vec!["7".into()]
            },
            TaskItem::Generate {
                prompt: "q".into(),
                answers: vec!["seven".into(), "7".into()]
            },
        ]
    );
}

fn score(name: &str, role: TaskRole, value: Option<f64>) -> TaskScore {
    TaskScore {
        name: name.into(),
        role,
        kind: if value.is_some() {
            TaskKind::MultipleChoice
        } else {
            TaskKind::Perplexity
        },
        items: 10,
        score: value,
        metrics: BTreeMap::new(),
    }
}

#[test]
fn deltas_average_per_role_and_skip_unscored() {
    let base = vec![
        score("a", TaskRole::Target, Some(60.0)),
        score("b", TaskRole::Target, Some(40.0)),
        score("c", TaskRole::Heldout, Some(75.0)),
        score("ppl", TaskRole::Heldout, None),
    ];
    let now = vec![
        score("a", TaskRole::Target, Some(80.0)),
        score("b", TaskRole::Target, Some(50.0)),
        score("c", TaskRole::Heldout, Some(70.0)),
        score("ppl", TaskRole::Heldout, None),
        // Not in the base: skipped.
        score("new", TaskRole::Heldout, Some(0.0)),
    ];
    let (learn, held) = deltas(&now, &base);
    assert!((learn.unwrap() - 15.0).abs() < 1e-12, "{learn:?}");
    assert!((held.unwrap() + 5.0).abs() < 1e-12, "{held:?}");

    let (learn, held) = deltas(&now[..2], &base);
    assert!(learn.is_some());
    assert_eq!(held, None);
    assert_eq!(deltas(&now[3..4], &base), (None, None));
    assert_eq!(deltas(&[], &[]), (None, None));
}

#[test]
fn cli_json_matches_the_library() {
    let loaded = load(Architecture::Llama, 2);
    let dir = tempfile::tempdir().unwrap();
    let mc = write_task(
        dir.path(),
        "mc",
        "role: target\ntype: multiple_choice\n",
        &[
            json!({"prompt": "what colour is the sky ?", "choices": ["blue", "red", "green"], "answer": 0}),
            json!({"prompt": "what is the opposite of hot ?", "choices": ["cold", "warm"], "answer": 0}),
            json!({"prompt": "how many red circles ?", "choices": ["three", "two"], "answer": 1}),
        ],
    );
    let generate_task = write_task(
        dir.path(),
        "gen",
        "type: generate\nmax_new_tokens: 4\nmatch: numeric\n",
        &[
            json!({"prompt": "how many red circles ?", "answer": "three"}),
            json!({"prompt": "count to one", "answer": 1}),
        ],
    );
    let ppl = write_task(
        dir.path(),
        "ppl",
        "type: perplexity\n",
        &[json!({"text": "the sky is blue ."})],
    );
    let paths = [&mc, &generate_task, &ppl];
    let mut args = vec!["eval".to_string(), loaded.spec.clone(), "--tasks".into()];
    args.extend(paths.iter().map(|p| p.to_string_lossy().into_owned()));
    args.extend(["--max-items".into(), "2".into(), "--json".into()]);
    let out = Command::new(env!("CARGO_BIN_EXE_tunescope"))
        .args(&args)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "eval failed: {stderr}");
    let from_cli: Vec<TaskScore> = serde_json::from_slice(&out.stdout).unwrap();

    let expected: Vec<TaskScore> = paths
        .iter()
        .map(|p| {
            let task = Task::load(p).unwrap();
            evaluate(&loaded.decoder, &loaded.model.tokenizer, &task, Some(2)).unwrap()
        })
        .collect();
    assert_eq!(from_cli.len(), 3);
    for (cli, lib) in from_cli.iter().zip(&expected) {
        assert_eq!(
            (&cli.name, cli.role, cli.kind, cli.items, cli.score),
            (&lib.name, lib.role, lib.kind, lib.items, lib.score)
        );
        assert_eq!(
            cli.metrics.keys().collect::<Vec<_>>(),
            lib.metrics.keys().collect::<Vec<_>>()
        );
        for (k, v) in &cli.metrics {
            let w = lib.metrics[k];
            assert!((v - w).abs() <= 1e-9 * w.abs().max(1.0), "{k}: {v} vs {w}");
        }
    }
    assert_eq!(from_cli[0].items, 2, "--max-items applies");
    let raw: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(raw[0]["kind"], "multiple_choice");
    assert_eq!(raw[0]["role"], "target");
    assert_eq!(raw[2]["score"], serde_json::Value::Null);

    // The table names each task, and a bad task file fails before the model is read.
    let out = Command::new(env!("CARGO_BIN_EXE_tunescope"))
        .args(["eval", &loaded.spec, "--tasks"])
        .arg(&mc)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(table.contains("mc") && table.contains("target") && table.contains("acc_norm="));
    std::fs::write(dir.path().join("bad.yaml"), "type: nope\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tunescope"))
        .args(["eval", "/no/such/model", "--tasks"])
        .arg(dir.path().join("bad.yaml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("bad.yaml") && stderr.contains("nope"),
        "{stderr}"
    );
}

#[test]
fn chat_template_is_used_unless_chat_is_false() {
    let loaded = load(Architecture::Qwen2, 4);
    let tok = &loaded.model.tokenizer;
    let messages = [ChatMessage {
        role: "user".into(),
        content: "what colour is the sky ?".into(),
    }];
    let rendered = tok.render_chat(&messages, true).unwrap().unwrap();
    assert_eq!(rendered, chat_prompt("what colour is the sky ?"));
    let choices = vec!["blue".to_string(), "red".to_string()];
    let chat = choice_logliks(
        &loaded.decoder,
        tok,
        "what colour is the sky ?",
        &choices,
        true,
    )
    .unwrap();
    let raw = choice_logliks(
        &loaded.decoder,
        tok,
        "what colour is the sky ?",
        &choices,
        false,
    )
    .unwrap();
    assert!((chat[0] - raw[0]).abs() > 1e-6, "{chat:?} vs {raw:?}");
    let ctx = tok.encode("what colour is the sky ?").unwrap();
    let mut ids = ctx.clone();
    ids.extend(tok.encode("blue").unwrap());
    assert!((direct_loglik(&loaded.decoder, &ids, ctx.len()) - raw[0]).abs() < 1e-3);
}
