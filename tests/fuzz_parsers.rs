//! Drill: every parser of outside input is fed a fixed number of seeded mutations of a kept
//! corpus of valid inputs (`tests/fixtures/fuzz/<parser>/`): bit flips, truncations, insertions,
//! splices of two seeds, numeric edge values, odd strings and deep nesting. Each input must give
//! `Ok` or `Err`: a panic prints the input and fails the test. Inputs that once crashed a parser
//! are kept in the corpus as regression seeds.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::Instant;

use serde_json::{json, Value};
use tunescope::eval::tasks::spec;
use tunescope::gguf::config::{check_vocab, GgufArch, HParams};
use tunescope::gguf::read::GgufFile;
use tunescope::gguf::tensors::hf_name;
use tunescope::gguf::tokenizer::GgufTokenizer;
use tunescope::model::vlm::ImageProcessor;
use tunescope::model::{chat_template, ModelConfig, WeightStore};
use tunescope::recipe::Recipe;

/// Seeded splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Text that parsers of numbers, strings and structure trip on.
const EDGE_TOKENS: &[&str] = &[
    "-1",
    "0",
    "-0",
    "1e308",
    "-1e308",
    "1e309",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999999",
    "-9223372036854775809",
    "0.0000001",
    "NaN",
    "\"NaN\"",
    "inf",
    "-.inf",
    ".nan",
    "null",
    "true",
    "~",
    "\"\"",
    "[]",
    "{}",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\u{feff}",
    "\u{0}",
    "\t",
    "\n",
    ": ",
    "- ",
    "&a ",
    "*a",
    "!!binary ",
    "<<: ",
    "{{",
    "}}",
    "{%",
    "<image>",
    "日本語",
];

/// Little-endian integers that sizes and counts in binary headers trip on.
const EDGE_INTS: &[u64] = &[
    0,
    1,
    u8::MAX as u64,
    u16::MAX as u64,
    u32::MAX as u64,
    u32::MAX as u64 + 1,
    i64::MAX as u64,
    u64::MAX,
    1 << 40,
];

/// One input derived from `seeds`: one to three odd values in a document that still parses, or
/// one to four byte-level mutations.
fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut data = seeds[rng.below(seeds.len())].clone();
    // A third of the inputs stay well-formed documents with one to three odd values.
    if rng.below(3) == 0 {
        for _ in 0..1 + rng.below(3) {
            if let Some(doc) = structured(&data, rng) {
                data = doc;
            }
        }
        return data;
    }
    for _ in 0..1 + rng.below(4) {
        let len = data.len();
        match rng.below(11) {
            // Bit flips.
            0 | 1 => {
                for _ in 0..1 + rng.below(4) {
                    if !data.is_empty() {
                        let i = rng.below(data.len());
                        data[i] ^= 1 << rng.below(8);
                    }
                }
            }
            // Truncation.
            2 => data.truncate(rng.below(len + 1)),
            // Random bytes inserted.
            3 => {
                let at = rng.below(len + 1);
                let bytes: Vec<u8> = (0..1 + rng.below(8)).map(|_| rng.next() as u8).collect();
                data.splice(at..at, bytes);
            }
            // An edge token inserted or replacing a run of digits.
            4 | 5 => {
                let token = EDGE_TOKENS[rng.below(EDGE_TOKENS.len())]
                    .as_bytes()
                    .to_vec();
                let digits: Vec<usize> = (0..len).filter(|&i| data[i].is_ascii_digit()).collect();
                if !digits.is_empty() && rng.below(2) == 0 {
                    let start = digits[rng.below(digits.len())];
                    let end = (start..len)
                        .find(|&i| !data[i].is_ascii_digit() && data[i] != b'.')
                        .unwrap_or(len);
                    data.splice(start..end, token);
                } else {
                    let at = rng.below(len + 1);
                    data.splice(at..at, token);
                }
            }
            // Splice: the head of this input, the tail of another seed.
            6 => {
                let other = &seeds[rng.below(seeds.len())];
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            // A chunk duplicated or removed.
            7 => {
                if len > 1 {
                    let a = rng.below(len);
                    let b = (a + 1 + rng.below(64)).min(len);
                    if rng.below(2) == 0 {
                        let chunk = data[a..b].to_vec();
                        data.splice(a..a, chunk);
                    } else {
                        data.drain(a..b);
                    }
                }
            }
            // Deep nesting.
            8 => {
                let depth = 1 + rng.below(300);
                let (open, close) = match rng.below(3) {
                    0 => ("[", "]"),
                    1 => ("{\"a\":", "}"),
                    _ => ("- ", ""),
                };
                let at = rng.below(len + 1);
                let mut nested = open.repeat(depth).into_bytes();
                nested.extend(close.repeat(depth).into_bytes());
                data.splice(at..at, nested);
            }
            // A value of a JSON or YAML document replaced by an edge value (the result still
            // parses, so the checks behind the syntax are reached).
            9 if rng.below(2) == 0 => {
                if let Some(doc) = structured(&data, rng) {
                    data = doc;
                }
            }
            // An edge integer written over 4 or 8 bytes (binary headers).
            9 => {
                let value = EDGE_INTS[rng.below(EDGE_INTS.len())];
                let width = if rng.below(2) == 0 { 4 } else { 8 };
                if len >= width {
                    let at = rng.below(len - width + 1);
                    data[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
                }
            }
            // A byte overwritten by a structural character.
            _ => {
                if !data.is_empty() {
                    let i = rng.below(data.len());
                    const STRUCTURE: &[u8] = b"{}[]\":,'\\\n-#&*!|>% ";
                    data[i] = STRUCTURE[rng.below(STRUCTURE.len())];
                }
            }
        }
    }
    data
}

/// Values that typed fields trip on.
fn edge_value(rng: &mut Rng) -> Value {
    match rng.below(16) {
        0 => json!(-1),
        1 => json!(0),
        2 => json!(1e308),
        3 => json!(-1e308),
        4 => json!(u64::MAX),
        5 => json!(i64::MIN),
        6 => json!("NaN"),
        7 => json!("inf"),
        8 => json!(""),
        9 => Value::Null,
        10 => json!(true),
        11 => json!([]),
        12 => json!({}),
        13 => json!("x".repeat(10_000)),
        14 => json!([[[[[[[[1]]]]]]]]),
        _ => json!(4294967296u64),
    }
}

/// `data` parsed as JSON (or YAML, written back as YAML) with one value, object or array
/// replaced by an edge value; `None` when it does not parse.
fn structured(data: &[u8], rng: &mut Rng) -> Option<Vec<u8>> {
    let (mut doc, yaml) = match serde_json::from_slice::<Value>(data) {
        Ok(doc) => (doc, false),
        Err(_) => (serde_yaml::from_slice::<Value>(data).ok()?, true),
    };
    // Walk to a random node, then replace it (or add a key to an object).
    let mut node = &mut doc;
    loop {
        let children = match node {
            Value::Object(map) => map.len(),
            Value::Array(list) => list.len(),
            _ => 0,
        };
        if children == 0 || rng.below(3) == 0 {
            break;
        }
        let pick = rng.below(children);
        node = match node {
            Value::Object(map) => map.values_mut().nth(pick).unwrap(),
            Value::Array(list) => &mut list[pick],
            _ => unreachable!(),
        };
    }
    *node = edge_value(rng);
    if yaml {
        serde_yaml::to_string(&doc).ok().map(String::into_bytes)
    } else {
        serde_json::to_vec(&doc).ok()
    }
}

fn corpus_dir(parser: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fuzz")
        .join(parser)
}

/// The kept corpus of `parser`: every file of its directory, with its name. Valid inputs, and
/// inputs that once crashed a parser (`regression-*`).
fn seeds(parser: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(parser);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds in {}", dir.display());
    files
        .iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(p).unwrap())
        })
        .collect()
}

/// The input, printable: text as a Rust string literal, binary as hex.
fn show(input: &[u8]) -> String {
    match std::str::from_utf8(input) {
        Ok(text) => format!("{text:?}"),
        Err(_) => input.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

/// Panics print one line (where and what), without the backtrace `RUST_BACKTRACE` would add to
/// each (set `FUZZ_BACKTRACE` for one): the inputs that caused them are printed at the end.
fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let location = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            eprintln!("panic at {location}: {message}");
            if std::env::var_os("FUZZ_BACKTRACE").is_some() {
                eprintln!("{}", std::backtrace::Backtrace::force_capture());
            }
        }));
    });
}

/// Feeds `parse` every seed unchanged (each must parse, but for `regression-*` inputs, which
/// must give an error) and then `count` mutations; fails on any panic or an input slower than
/// a second, printing the inputs.
fn fuzz(parser: &str, count: usize, seed: u64, mut parse: impl FnMut(&[u8]) -> anyhow::Result<()>) {
    quiet_panics();
    let started = Instant::now();
    let named = seeds(parser);
    for (name, input) in &named {
        let regression = name.starts_with("regression-");
        match catch_unwind(AssertUnwindSafe(|| parse(input))) {
            Ok(Ok(())) => {}
            Ok(Err(_)) if regression => {}
            Ok(Err(e)) => panic!("{parser}: seed {name} does not parse: {e:#}"),
            Err(_) => panic!("{parser}: seed {name} panics: {}", show(input)),
        }
    }
    let corpus: Vec<Vec<u8>> = named.into_iter().map(|(_, bytes)| bytes).collect();
    let mut rng = Rng(seed);
    let (mut ok, mut err) = (0usize, 0usize);
    let (mut panics, mut slow) = (Vec::new(), Vec::new());
    for _ in 0..count {
        let input = mutate(&mut rng, &corpus);
        let one = Instant::now();
        if let Some(trace) = std::env::var_os("FUZZ_TRACE") {
            std::fs::write(trace, &input).unwrap();
        }
        let result = catch_unwind(AssertUnwindSafe(|| parse(&input)));
        if one.elapsed().as_secs_f64() > 1.0 {
            eprintln!(
                "{parser}: SLOW ({:.1}s) on input {}",
                one.elapsed().as_secs_f64(),
                show(&input)
            );
            slow.push(input.clone());
        }
        match result {
            Ok(Ok(())) => ok += 1,
            Ok(Err(e)) => {
                // Errors must say something.
                assert!(!format!("{e:#}").trim().is_empty(), "{parser}: empty error");
                err += 1;
            }
            Err(_) => panics.push(input),
        }
    }
    for input in &panics {
        eprintln!("{parser}: PANIC on input {}", show(input));
    }
    eprintln!(
        "fuzz {parser}: {count} inputs from {} seeds: {ok} ok, {err} errors, {} panics, {} slow \
         ({:.1}s)",
        corpus.len(),
        panics.len(),
        slow.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        slow.is_empty(),
        "{parser}: {} inputs took over a second each (printed above)",
        slow.len()
    );
    assert!(
        panics.is_empty(),
        "{parser}: {} inputs panicked (printed above); fix the parser and add each to {}",
        panics.len(),
        corpus_dir(parser).display()
    );
}

fn text(input: &[u8]) -> String {
    String::from_utf8_lossy(input).into_owned()
}

fn json(input: &[u8]) -> anyhow::Result<Value> {
    Ok(serde_json::from_slice(input)?)
}

#[test]
fn fuzz_recipe_yaml() {
    fuzz("recipe", 3000, 1, |input| {
        let recipe = Recipe::from_yaml_str(&text(input), "fuzz.yaml")?;
        recipe.validate()?;
        recipe.to_yaml().map(drop)
    });
}

#[test]
fn fuzz_data_jsonl() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("data.jsonl");
    let mut n = 0u64;
    fuzz("data_jsonl", 4000, 2, |input| {
        let line = text(input);
        let parsed = tunescope::data::jsonl::parse_record_line(line.trim());
        // Every tenth input also goes through the file reader (several lines, BOM, blanks).
        n += 1;
        if n.is_multiple_of(10) {
            std::fs::write(&path, input)?;
            let _ = tunescope::data::jsonl::read_records(&path);
        }
        parsed.map(drop)
    });
}

#[test]
fn fuzz_model_config_json() {
    fuzz("config_json", 4000, 3, |input| {
        ModelConfig::from_json(&json(input)?).map(drop)
    });
}

#[test]
fn fuzz_tokenizer_config_chat_template() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let mut n = 0u64;
    fuzz("tokenizer_config", 3000, 4, |input| {
        n += 1;
        // Every third input is a processor's chat_template.json beside an empty config.
        let processor = dir.join(chat_template::PROCESSOR_TEMPLATE_FILE);
        if n.is_multiple_of(3) {
            std::fs::write(&processor, input)?;
            let found = chat_template::find(&dir, &Value::Object(Default::default()));
            std::fs::remove_file(&processor)?;
            return found.map(drop);
        }
        chat_template::find(&dir, &json(input)?).map(drop)
    });
}

#[test]
fn fuzz_safetensors_headers() {
    let tmp = tempfile::tempdir().unwrap();
    let mut n = 0u64;
    fuzz("safetensors", 2000, 5, |input| {
        // A new name each time: the store memory-maps the file.
        n += 1;
        let path = tmp.path().join(format!("m{n}.safetensors"));
        std::fs::write(&path, input)?;
        let result = (|| {
            let store = WeightStore::open(std::slice::from_ref(&path))?;
            let infos: Vec<_> = store.infos().cloned().collect();
            for info in infos {
                store.load(
                    &info.name,
                    &info.shape,
                    candle_core::DType::F32,
                    &candle_core::Device::Cpu,
                )?;
            }
            Ok(())
        })();
        std::fs::remove_file(&path)?;
        result
    });
}

#[test]
fn fuzz_gguf_headers() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("model.gguf");
    fuzz("gguf", 2000, 6, |input| {
        std::fs::write(&path, input)?;
        let mut file = GgufFile::open(&path)?;
        let names: Vec<String> = file.tensor_names().iter().map(|s| s.to_string()).collect();
        for name in &names {
            let _ = hf_name(name);
            let _ = file.tensor_info(name);
            file.dequantize(name)?;
        }
        let arch = GgufArch::of(&file)?;
        let hparams = HParams::read(&file, arch)?;
        let tokenizer = GgufTokenizer::read(&file, 64)?;
        let _ = (hparams, tokenizer);
        check_vocab(&file, 8).map(drop)
    });
}

#[test]
fn fuzz_task_yaml() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("task.yaml");
    // The items file the seeds name, beside the task file.
    std::fs::write(
        tmp.path().join("items.jsonl"),
        "{\"prompt\": \"2 + 2 =\", \"answer\": \"4\"}\n{\"prompt\": \"3 + 1 =\", \"answer\": \"4\"}\n",
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("mc.jsonl"),
        "{\"prompt\": \"a tool?\", \"choices\": [\"ear\", \"drill\"], \"answer\": 1}\n",
    )
    .unwrap();
    fuzz("task_yaml", 2000, 7, |input| {
        std::fs::write(&path, input)?;
        spec::load(&path).map(drop)
    });
}

#[test]
fn fuzz_preprocessor_config() {
    fuzz("preprocessor_config", 4000, 8, |input| {
        let value = json(input)?;
        let settings = value.get("image_processor").unwrap_or(&value);
        ImageProcessor::from_json(settings, 336).map(drop)
    });
}

/// Writes the binary seeds (safetensors, GGUF) of the corpus; run by hand after a format change:
/// `cargo test --test fuzz_parsers -- --ignored write_binary_seeds`.
#[test]
#[ignore]
fn write_binary_seeds() {
    use candle_core::quantized::gguf_file::{self, Value as G};
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{DType, Device, Tensor};
    let cpu = Device::Cpu;

    let dir = corpus_dir("safetensors");
    std::fs::create_dir_all(&dir).unwrap();
    let a = Tensor::arange(0f32, 6., &cpu)
        .unwrap()
        .reshape((2, 3))
        .unwrap();
    let b = Tensor::ones(4, DType::BF16, &cpu).unwrap();
    let c = Tensor::zeros((1, 2, 2), DType::F16, &cpu).unwrap();
    candle_core::safetensors::save(
        &std::collections::HashMap::from([
            ("model.w".to_string(), a.clone()),
            ("model.b".to_string(), b),
            ("model.c".to_string(), c),
        ]),
        dir.join("three.safetensors"),
    )
    .unwrap();
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("x".to_string(), a)]),
        dir.join("one.safetensors"),
    )
    .unwrap();

    let dir = corpus_dir("gguf");
    std::fs::create_dir_all(&dir).unwrap();
    let tokens: Vec<G> = ["<s>", "</s>", "a", "b", "ab", "Ġ", "Ġa", "c"]
        .iter()
        .map(|t| G::String(t.to_string()))
        .collect();
    let metadata: Vec<(&str, G)> = vec![
        ("general.architecture", G::String("llama".into())),
        ("general.name", G::String("tiny".into())),
        ("llama.block_count", G::U32(1)),
        ("llama.context_length", G::U32(64)),
        ("llama.embedding_length", G::U32(8)),
        ("llama.feed_forward_length", G::U32(16)),
        ("llama.attention.head_count", G::U32(2)),
        ("llama.attention.head_count_kv", G::U32(1)),
        ("llama.attention.layer_norm_rms_epsilon", G::F32(1e-5)),
        ("llama.rope.freq_base", G::F32(10000.0)),
        ("llama.vocab_size", G::U32(8)),
        ("tokenizer.ggml.model", G::String("gpt2".into())),
        ("tokenizer.ggml.pre", G::String("gpt2".into())),
        ("tokenizer.ggml.tokens", G::Array(tokens)),
        (
            "tokenizer.ggml.token_type",
            G::Array([3, 3, 1, 1, 1, 1, 1, 1].map(G::I32).to_vec()),
        ),
        (
            "tokenizer.ggml.merges",
            G::Array(vec![G::String("a b".into()), G::String("Ġ a".into())]),
        ),
        ("tokenizer.ggml.bos_token_id", G::U32(0)),
        ("tokenizer.ggml.eos_token_id", G::U32(1)),
        (
            "tokenizer.chat_template",
            G::String("{% for m in messages %}{{ m.content }}{% endfor %}".into()),
        ),
    ];
    let embd = Tensor::arange(0f32, 64., &cpu)
        .unwrap()
        .reshape((8, 8))
        .unwrap();
    let norm = Tensor::ones(8, DType::F32, &cpu).unwrap();
    let q8 = Tensor::arange(0f32, 64., &cpu)
        .unwrap()
        .reshape((2, 32))
        .unwrap();
    let tensors = [
        (
            "token_embd.weight",
            QTensor::quantize(&embd, GgmlDType::F32).unwrap(),
        ),
        (
            "output_norm.weight",
            QTensor::quantize(&norm, GgmlDType::F32).unwrap(),
        ),
        (
            "blk.0.attn_q.weight",
            QTensor::quantize(&q8, GgmlDType::Q8_0).unwrap(),
        ),
    ];
    let mut out = std::fs::File::create(dir.join("tiny-llama.gguf")).unwrap();
    let md: Vec<(&str, &G)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (*k, v)).collect();
    gguf_file::write(&mut out, &md, &ts).unwrap();
}
