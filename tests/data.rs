//! Training data: JSONL records, chat-template tokenization with loss labels, and batches.

use std::path::Path;

use candle_core::Device;
use tunescope::data::{
    batches_per_epoch, epoch_order, make_batch, read_records, tokenize, Example, Record,
    TokenizeOptions, TokenizedData, IGNORE_INDEX,
};
use tunescope::model::tiny::{make_tiny, TinySpec};
use tunescope::model::{Architecture, Model, ModelTokenizer};

/// A tiny model's directory and its tokenizer.
fn tiny() -> (tempfile::TempDir, ModelTokenizer) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    make_tiny(&TinySpec::new(Architecture::Qwen2, 11), &dir).unwrap();
    let tok = Model::open(dir.to_str().unwrap()).unwrap().tokenizer;
    (tmp, tok)
}

/// The tiny model's tokenizer after removing `chat_template` from its `tokenizer_config.json`.
fn tiny_without_template(tmp: &Path) -> ModelTokenizer {
    let dir = tmp.join("no_template");
    make_tiny(&TinySpec::new(Architecture::Llama, 12), &dir).unwrap();
    let path = dir.join("tokenizer_config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config.as_object_mut().unwrap().remove("chat_template");
    std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
    let tok = Model::open(dir.to_str().unwrap()).unwrap().tokenizer;
    assert!(tok.chat_template.is_none());
    tok
}

fn write_jsonl(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn records(dir: &Path, text: &str) -> Vec<Record> {
    read_records(&write_jsonl(dir, "train.jsonl", text)).unwrap()
}

fn read_err(dir: &Path, name: &str, text: &str) -> String {
    let path = write_jsonl(dir, name, text);
    match read_records(&path) {
        Ok(r) => panic!("{name} should not parse, got {r:?}"),
        Err(e) => format!("{e:#}"),
    }
}

fn opts(max_length: usize) -> TokenizeOptions {
    TokenizeOptions {
        max_length,
        train_on_prompt: false,
    }
}

/// Text of the labelled tokens, special tokens kept.
fn labelled_text(tok: &ModelTokenizer, ex: &Example) -> String {
    let ids: Vec<u32> = ex
        .labels
        .iter()
        .filter(|&&l| l != IGNORE_INDEX)
        .map(|&l| u32::try_from(l).unwrap())
        .collect();
    tok.tokenizer.decode(&ids, false).unwrap()
}

fn full_text(tok: &ModelTokenizer, ex: &Example) -> String {
    tok.tokenizer.decode(&ex.input_ids, false).unwrap()
}

/// Every label is either -100 or the token at the same position.
fn assert_labels_aligned(ex: &Example) {
    assert_eq!(ex.labels.len(), ex.input_ids.len());
    for (t, (&id, &label)) in ex.input_ids.iter().zip(&ex.labels).enumerate() {
        assert!(
            label == IGNORE_INDEX || label == i64::from(id),
            "label {label} at {t} is neither -100 nor the token {id}"
        );
    }
}

#[test]
fn labels_cover_exactly_the_reply_and_end_of_turn() {
    let (tmp, tok) = tiny();
    let recs = records(
        tmp.path(),
        "{\"prompt\": \"what colour is the sky ?\", \"response\": \"the sky is blue .\"}\n",
    );
    let data = tokenize(&recs, &tok, &opts(256)).unwrap();
    assert!(data.used_chat_template);
    assert_eq!(data.examples.len(), 1);
    let ex = &data.examples[0];
    assert_labels_aligned(ex);
    assert_eq!(labelled_text(&tok, ex), "the sky is blue .<|im_end|>\n");
    assert_eq!(
        full_text(&tok, ex),
        "<|im_start|>user\nwhat colour is the sky ?<|im_end|>\n<|im_start|>assistant\nthe sky is blue .<|im_end|>\n"
    );
    // The labelled tokens form one run at the end: the header before it is unlabelled.
    let first = ex.labels.iter().position(|&l| l != IGNORE_INDEX).unwrap();
    assert!(ex.labels[first..].iter().all(|&l| l != IGNORE_INDEX));
    let header = tok.tokenizer.decode(&ex.input_ids[..first], false).unwrap();
    assert!(header.ends_with("<|im_start|>assistant\n"), "{header:?}");
    assert_eq!(data.total_tokens, ex.input_ids.len());
    assert_eq!(data.label_tokens, ex.input_ids.len() - first);
    assert_eq!(data.truncated, 0);
    assert!(data.dropped.is_empty());
}

#[test]
fn prompt_response_and_messages_forms_agree() {
    let (tmp, tok) = tiny();
    let recs = records(
        tmp.path(),
        concat!(
            "{\"prompt\": \"copy the words : apple\", \"response\": \"apple\"}\n",
            "{\"messages\": [{\"role\": \"user\", \"content\": \"copy the words : apple\"}, ",
            "{\"role\": \"assistant\", \"content\": \"apple\"}], \"image\": \"pic.png\"}\n",
        ),
    );
    assert_eq!(recs[0].messages, recs[1].messages);
    let data = tokenize(&recs, &tok, &opts(256)).unwrap();
    let (a, b) = (&data.examples[0], &data.examples[1]);
    assert_eq!((a.line, b.line), (1, 2));
    assert_eq!(a.input_ids, b.input_ids);
    assert_eq!(a.labels, b.labels);
}

#[test]
fn multi_turn_labels_every_assistant_turn() {
    let (tmp, tok) = tiny();
    let recs = records(
        tmp.path(),
        concat!(
            "{\"messages\": [{\"role\": \"system\", \"content\": \"answer yes or no\"}, ",
            "{\"role\": \"user\", \"content\": \"is the sky blue ?\"}, ",
            "{\"role\": \"assistant\", \"content\": \"yes\"}, ",
            "{\"role\": \"user\", \"content\": \"is the dog red ?\"}, ",
            "{\"role\": \"assistant\", \"content\": \"no\"}]}\n"
        ),
    );
    let data = tokenize(&recs, &tok, &opts(512)).unwrap();
    let ex = &data.examples[0];
    assert_labels_aligned(ex);
    assert_eq!(labelled_text(&tok, ex), "yes<|im_end|>\nno<|im_end|>\n");
    // Two separate labelled runs, one per assistant turn.
    let runs = ex
        .labels
        .windows(2)
        .filter(|w| w[0] == IGNORE_INDEX && w[1] != IGNORE_INDEX)
        .count();
    assert_eq!(runs, 2);
    // The tokens are the template's full rendering.
    let rendered = tok.render_chat(&recs[0].messages, false).unwrap().unwrap();
    assert_eq!(full_text(&tok, ex), rendered);
}

#[test]
fn train_on_prompt_labels_every_token() {
    let (tmp, tok) = tiny();
    let recs = records(
        tmp.path(),
        "{\"prompt\": \"what is the opposite of hot ?\", \"response\": \"cold\"}\n",
    );
    let options = TokenizeOptions {
        max_length: 256,
        train_on_prompt: true,
    };
    let data = tokenize(&recs, &tok, &options).unwrap();
    let ex = &data.examples[0];
    let expected: Vec<i64> = ex.input_ids.iter().map(|&i| i64::from(i)).collect();
    assert_eq!(ex.labels, expected);
    assert_eq!(data.label_tokens, ex.input_ids.len() - 1);
    // Same tokens as without train_on_prompt; only the labels differ.
    let masked = tokenize(&recs, &tok, &opts(256)).unwrap();
    assert_eq!(masked.examples[0].input_ids, ex.input_ids);
    assert!(masked.label_tokens < data.label_tokens);
}

#[test]
fn without_template_labels_reply_and_eos() {
    let (tmp, _) = tiny();
    let tok = tiny_without_template(tmp.path());
    let eos = tok.tokenizer.token_to_id("<|im_end|>").unwrap();
    let recs = records(
        tmp.path(),
        "{\"prompt\": \"how many red circles ?\", \"response\": \"three red circles\"}\n",
    );
    let data = tokenize(&recs, &tok, &opts(256)).unwrap();
    assert!(!data.used_chat_template);
    let ex = &data.examples[0];
    assert_labels_aligned(ex);
    assert_eq!(
        full_text(&tok, ex),
        "how many red circles ?\nthree red circles<|im_end|>"
    );
    assert_eq!(labelled_text(&tok, ex), "three red circles<|im_end|>");
    assert_eq!(*ex.input_ids.last().unwrap(), eos);
    assert_eq!(*ex.labels.last().unwrap(), i64::from(eos));
}

#[test]
fn bad_records_name_the_line() {
    let tmp = tempfile::tempdir().unwrap();
    let good = "{\"prompt\": \"a\", \"response\": \"b\"}\n";

    let e = read_err(
        tmp.path(),
        "malformed.jsonl",
        &format!("{good}{good}{{\"prompt\": \"a\", \"response\": \n{good}"),
    );
    assert!(e.contains("malformed.jsonl") && e.contains("line 3"), "{e}");
    assert!(e.contains("invalid JSON"), "{e}");

    let e = read_err(
        tmp.path(),
        "missing.jsonl",
        &format!("{good}\n{{\"question\": \"a\", \"answer\": \"b\"}}\n"),
    );
    assert!(e.contains("missing.jsonl") && e.contains("line 3"), "{e}");
    assert!(
        e.contains("neither \"prompt\"/\"response\" nor \"messages\""),
        "{e}"
    );

    let e = read_err(
        tmp.path(),
        "wrong_type.jsonl",
        &format!("{good}{{\"prompt\": \"a\", \"response\": [\"b\"]}}\n"),
    );
    assert!(e.contains("line 2"), "{e}");
    assert!(
        e.contains("\"response\" must be a string, found a list"),
        "{e}"
    );

    let e = read_err(
        tmp.path(),
        "content_type.jsonl",
        "{\"messages\": [{\"role\": \"user\", \"content\": 5}, {\"role\": \"assistant\", \"content\": \"b\"}]}\n",
    );
    assert!(
        e.contains("line 1") && e.contains("messages[0].content must be a string"),
        "{e}"
    );

    let e = read_err(
        tmp.path(),
        "no_reply.jsonl",
        &format!("{good}{{\"messages\": [{{\"role\": \"user\", \"content\": \"hi\"}}]}}\n"),
    );
    assert!(
        e.contains("line 2") && e.contains("no assistant turn"),
        "{e}"
    );

    let e = read_err(tmp.path(), "empty.jsonl", "");
    assert!(e.contains("empty.jsonl") && e.contains("no records"), "{e}");

    let missing = tmp.path().join("absent.jsonl");
    let e = format!("{:#}", read_records(&missing).unwrap_err());
    assert!(e.contains("absent.jsonl"), "{e}");
}

#[test]
fn truncation_is_counted_and_drops_examples_without_labels() {
    let (tmp, tok) = tiny();
    let recs = records(
        tmp.path(),
        concat!(
            "{\"prompt\": \"one\", \"response\": \"two\"}\n",
            "{\"prompt\": \"the quick brown fox jumps over the lazy dog\", \"response\": \"yes\"}\n",
            "{\"prompt\": \"a\", \"response\": \"zero one two three four five six seven eight nine ten\"}\n",
        ),
    );
    let full = tokenize(&recs, &tok, &opts(512)).unwrap();
    let lens: Vec<usize> = full.examples.iter().map(|e| e.input_ids.len()).collect();
    // Cut at line 1's length: line 1 fits exactly, line 2's reply is entirely cut, line 3 keeps
    // part of its reply.
    let header3 = full.examples[2]
        .labels
        .iter()
        .position(|&l| l != IGNORE_INDEX)
        .unwrap();
    let header2 = full.examples[1]
        .labels
        .iter()
        .position(|&l| l != IGNORE_INDEX)
        .unwrap();
    let max = lens[0];
    assert!(
        header3 < max && header2 >= max && lens[2] > max,
        "{lens:?} {header2} {header3}"
    );

    let data = tokenize(&recs, &tok, &opts(max)).unwrap();
    assert_eq!(data.dropped, vec![2]);
    assert_eq!(data.truncated, 1);
    assert_eq!(data.examples.len(), 2);
    assert_eq!(data.examples[1].line, 3);
    assert_eq!(data.examples[1].input_ids.len(), max);
    assert_eq!(
        data.examples[1].input_ids[..],
        full.examples[2].input_ids[..max]
    );
    assert_eq!(data.examples[1].labels.len(), max);
    assert_eq!(data.total_tokens, lens[0] + max);
}

#[test]
fn all_dropped_is_an_error_naming_max_length() {
    let (tmp, tok) = tiny();
    let recs = records(
        tmp.path(),
        concat!(
            "{\"prompt\": \"the quick brown fox\", \"response\": \"yes\"}\n",
            "{\"prompt\": \"what colour is the sky ?\", \"response\": \"blue\"}\n",
        ),
    );
    let e = format!("{:#}", tokenize(&recs, &tok, &opts(4)).unwrap_err());
    assert!(e.contains("max_length 4 is too small"), "{e}");
}

#[test]
fn epoch_order_is_deterministic_per_seed_and_epoch() {
    let a = epoch_order(100, 42, 0);
    assert_eq!(a, epoch_order(100, 42, 0));
    assert_ne!(a, epoch_order(100, 42, 1));
    assert_ne!(epoch_order(100, 42, 1), epoch_order(100, 42, 2));
    assert_ne!(a, epoch_order(100, 43, 0));
    let mut sorted = a.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..100).collect::<Vec<_>>());
    assert_ne!(a, sorted, "the order should be shuffled");
}

#[test]
fn batches_are_right_padded() {
    let (tmp, tok) = tiny();
    let recs = records(
        tmp.path(),
        concat!(
            "{\"prompt\": \"one\", \"response\": \"two\"}\n",
            "{\"prompt\": \"the quick brown fox jumps over the lazy dog\", \"response\": \"yes\"}\n",
            "{\"prompt\": \"red\", \"response\": \"green\"}\n",
        ),
    );
    let data: TokenizedData = tokenize(&recs, &tok, &opts(256)).unwrap();
    let pad = tok.pad_id();
    assert_eq!(batches_per_epoch(data.examples.len(), 2), 2);
    let order = epoch_order(data.examples.len(), 7, 0);
    let mut seen = Vec::new();
    for b in 0..batches_per_epoch(data.examples.len(), 2) {
        let batch = make_batch(&data, &order, b, 2, pad);
        let width = batch.input_ids.iter().map(Vec::len).max().unwrap();
        let mut labels = 0;
        for (row, &i) in order[b * 2..]
            .iter()
            .take(batch.input_ids.len())
            .enumerate()
        {
            let ex = &data.examples[i];
            let n = ex.input_ids.len();
            assert_eq!(batch.input_ids[row].len(), width);
            assert_eq!(batch.labels[row].len(), width);
            assert_eq!(batch.attention_mask[row].len(), width);
            assert_eq!(batch.input_ids[row][..n], ex.input_ids[..]);
            assert!(batch.input_ids[row][n..].iter().all(|&t| t == pad));
            assert_eq!(batch.labels[row][..n], ex.labels[..]);
            assert!(batch.labels[row][n..].iter().all(|&l| l == IGNORE_INDEX));
            assert!(batch.attention_mask[row][..n].iter().all(|&m| m == 1));
            assert!(batch.attention_mask[row][n..].iter().all(|&m| m == 0));
            labels += ex.labels[1..]
                .iter()
                .filter(|&&l| l != IGNORE_INDEX)
                .count();
            seen.push(i);
        }
        assert_eq!(batch.label_count(), labels);
        assert_eq!(
            batch.token_count(),
            batch
                .attention_mask
                .iter()
                .flatten()
                .filter(|&&m| m == 1)
                .count()
        );
        let (ids, lab, mask) = batch.to_tensors(&Device::Cpu).unwrap();
        assert_eq!(ids.dims(), &[batch.input_ids.len(), width]);
        assert_eq!(ids.to_vec2::<u32>().unwrap(), batch.input_ids);
        assert_eq!(lab.to_vec2::<i64>().unwrap(), batch.labels);
        assert_eq!(mask.to_vec2::<u32>().unwrap(), batch.attention_mask);
    }
    seen.sort_unstable();
    assert_eq!(seen, vec![0, 1, 2]);

    // Lines 1 and 2 differ in length, so the first of their batch is padded.
    let batch = make_batch(&data, &[0, 1, 2], 0, 2, pad);
    let (short, long) = (
        data.examples[0].input_ids.len(),
        data.examples[1].input_ids.len(),
    );
    assert!(short < long);
    assert_eq!(batch.input_ids[0].len(), long);
    assert_eq!(
        batch.attention_mask[0].iter().filter(|&&m| m == 0).count(),
        long - short
    );
    assert_eq!(batch.token_count(), short + long);
    let last = make_batch(&data, &[0, 1, 2], 1, 2, pad);
    assert_eq!(last.input_ids, vec![data.examples[2].input_ids.clone()]);
}
