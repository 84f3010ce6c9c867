//! `tunescope import-gguf`: a GGUF written here from a tiny Hugging Face model (q/k permuted the
//! way llama.cpp's converter does it, tokenizer in `tokenizer.ggml.*`) is imported back and must
//! give the same config, tensors, logits and token ids.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use tunescope::model::decoder::Inputs;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use common::{max_abs_diff, TinyModel};
use serde_json::Value as Json;
use tunescope::gguf::{import_gguf, ImportOptions};
use tunescope::model::tiny::TinySpec;
use tunescope::model::{Architecture, Model};

const CPU: Device = Device::Cpu;

/// llama.cpp's tensor name for a Hugging Face one.
fn gguf_name(hf: &str) -> String {
    let (stem, suffix) = hf.rsplit_once('.').unwrap();
    let stem = match stem {
        "model.embed_tokens" => "token_embd".to_string(),
        "model.norm" => "output_norm".to_string(),
        "lm_head" => "output".to_string(),
        other => {
            let rest = other.strip_prefix("model.layers.").unwrap();
            let (layer, module) = rest.split_once('.').unwrap();
            let part = match module {
                "self_attn.q_proj" => "attn_q",
                "self_attn.k_proj" => "attn_k",
                "self_attn.v_proj" => "attn_v",
                "self_attn.o_proj" => "attn_output",
                "self_attn.q_norm" => "attn_q_norm",
                "self_attn.k_norm" => "attn_k_norm",
                "mlp.gate_proj" => "ffn_gate",
                "mlp.up_proj" => "ffn_up",
                "mlp.down_proj" => "ffn_down",
                "input_layernorm" => "attn_norm",
                "post_attention_layernorm" => "ffn_norm",
                m => panic!("unexpected module {m}"),
            };
            format!("blk.{layer}.{part}")
        }
    };
    format!("{stem}.{suffix}")
}

/// `convert_hf_to_gguf.py`'s `LlamaModel.permute`, written out independently of the importer:
/// `w.reshape(n_head, 2, rows / n_head / 2, *rest).swapaxes(1, 2).reshape(w.shape)`.
fn llama_cpp_permute(w: &Tensor, n_head: usize) -> Tensor {
    let rows = w.dim(0).unwrap();
    let mut shape = vec![n_head, 2, rows / n_head / 2];
    shape.extend_from_slice(&w.dims()[1..]);
    w.reshape(shape)
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .contiguous()
        .unwrap()
        .reshape(w.shape())
        .unwrap()
}

/// How to write the test GGUF.
struct Writer {
    /// Type of 2-D weights; 1-D tensors stay F32 as in llama.cpp.
    matrix: GgmlDType,
    /// `general.architecture` (its hyperparameter keys use the same prefix).
    arch: &'static str,
    /// `tokenizer.ggml.pre`.
    pre: &'static str,
}

impl Writer {
    fn new(matrix: GgmlDType) -> Self {
        Self {
            matrix,
            arch: "llama",
            pre: "gpt2",
        }
    }
}

/// Writes `model` as a GGUF file the way llama.cpp's converter lays it out.
fn write_gguf(model: &Path, out: &Path, w: &Writer) {
    let m = Model::open(model.to_str().unwrap()).unwrap();
    let c = &m.config;
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    for info in m.weights.infos() {
        let t = m
            .weights
            .load(&info.name, &info.shape, DType::F32, &CPU)
            .unwrap();
        let name = gguf_name(&info.name);
        let t = if c.architecture == Architecture::Llama && name.contains(".attn_q.") {
            llama_cpp_permute(&t, c.num_attention_heads)
        } else if c.architecture == Architecture::Llama && name.contains(".attn_k.") {
            llama_cpp_permute(&t, c.num_key_value_heads)
        } else {
            t
        };
        let ty = if t.rank() == 2 {
            w.matrix
        } else {
            GgmlDType::F32
        };
        tensors.push((name, QTensor::quantize(&t, ty).unwrap()));
    }

    // tokenizer.ggml.* from the tiny model's tokenizer.json.
    let tok: Json =
        serde_json::from_str(&std::fs::read_to_string(model.join("tokenizer.json")).unwrap())
            .unwrap();
    let vocab = tok["model"]["vocab"].as_object().unwrap();
    let mut tokens = vec![String::new(); vocab.len()];
    for (text, id) in vocab {
        tokens[id.as_u64().unwrap() as usize] = text.clone();
    }
    let specials: HashSet<u64> = tok["added_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["special"] == Json::Bool(true))
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    let merges: Vec<Value> = tok["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| match m {
            Json::String(s) => Value::String(s.clone()),
            Json::Array(pair) => Value::String(format!(
                "{} {}",
                pair[0].as_str().unwrap(),
                pair[1].as_str().unwrap()
            )),
            other => panic!("unexpected merge {other}"),
        })
        .collect();
    let tok_config: Json = serde_json::from_str(
        &std::fs::read_to_string(model.join("tokenizer_config.json")).unwrap(),
    )
    .unwrap();
    let id = |t: &str| Value::U32(m.tokenizer.tokenizer.token_to_id(t).unwrap());

    let a = w.arch;
    let key = |k: &str| format!("{a}.{k}");
    let u32v = |n: usize| Value::U32(n as u32);
    let mut meta: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(a.into())),
        ("general.name".into(), Value::String("tiny".into())),
        (key("block_count"), u32v(c.num_hidden_layers)),
        (key("context_length"), u32v(c.max_position_embeddings)),
        (key("embedding_length"), u32v(c.hidden_size)),
        (key("feed_forward_length"), u32v(c.intermediate_size)),
        (key("attention.head_count"), u32v(c.num_attention_heads)),
        (key("attention.head_count_kv"), u32v(c.num_key_value_heads)),
        (
            key("attention.layer_norm_rms_epsilon"),
            Value::F32(c.rms_norm_eps as f32),
        ),
        (key("rope.freq_base"), Value::F32(c.rope_theta as f32)),
        (key("rope.dimension_count"), u32v(c.head_dim)),
        (key("vocab_size"), u32v(c.vocab_size)),
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String(w.pre.into())),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(
                (0..vocab.len() as u64)
                    .map(|i| Value::I32(if specials.contains(&i) { 3 } else { 1 }))
                    .collect(),
            ),
        ),
        ("tokenizer.ggml.merges".into(), Value::Array(merges)),
        ("tokenizer.ggml.bos_token_id".into(), id("<|im_start|>")),
        ("tokenizer.ggml.eos_token_id".into(), id("<|im_end|>")),
        (
            "tokenizer.ggml.padding_token_id".into(),
            id("<|endoftext|>"),
        ),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)),
        (
            "tokenizer.chat_template".into(),
            Value::String(tok_config["chat_template"].as_str().unwrap().into()),
        ),
    ];
    meta.push(("general.file_type".into(), Value::U32(1)));
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    let mut file = std::fs::File::create(out).unwrap();
    gguf_file::write(&mut file, &meta_refs, &tensor_refs).unwrap();
}

/// A tiny model, its GGUF, and the imported directory.
struct Case {
    original: TinyModel,
    _dir: tempfile::TempDir,
    gguf: PathBuf,
    imported: PathBuf,
}

impl Case {
    fn new(original: TinyModel, writer: &Writer, dtype: DType) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let gguf = dir.path().join("tiny.gguf");
        write_gguf(original.path(), &gguf, writer);
        let imported = dir.path().join("imported");
        import_gguf(
            &gguf,
            &imported,
            &ImportOptions {
                dtype,
                ..Default::default()
            },
        )
        .unwrap();
        Self {
            original,
            _dir: dir,
            gguf,
            imported,
        }
    }

    fn open(&self) -> (Model, Model) {
        (
            Model::open(&self.original.spec_str()).unwrap(),
            Model::open(self.imported.to_str().unwrap()).unwrap(),
        )
    }
}

fn logits(model: &Model, ids: &[u32]) -> Tensor {
    let decoder = model.decoder(&HashSet::new(), DType::F32, &CPU).unwrap();
    let input = Tensor::new(ids, &CPU).unwrap().unsqueeze(0).unwrap();
    decoder.forward(&Inputs::text(&input, None)).unwrap()
}

const SAMPLES: &[&str] = &[
    "how many red circles are in the picture?",
    "<|im_start|>user\nthe sky is blue . 42 apples, 1,000 pears<|im_end|>\n",
    "Naïve façade — ünïcode 3.14 !! \t\n  spaces",
    "what is the opposite of hot?",
];

/// Config, tensors, logits and tokenizer of an F32 import equal the original's.
fn check_exact(case: &Case) {
    let (orig, imp) = case.open();
    assert_eq!(imp.config, orig.config, "config.json round trip");

    let orig_names: Vec<_> = orig
        .weights
        .infos()
        .map(|i| (i.name.clone(), i.shape.clone()))
        .collect();
    let imp_names: Vec<_> = imp
        .weights
        .infos()
        .map(|i| (i.name.clone(), i.shape.clone()))
        .collect();
    assert_eq!(imp_names, orig_names, "tensor names and shapes");
    for info in orig.weights.infos() {
        let a = orig
            .weights
            .load(&info.name, &info.shape, DType::F32, &CPU)
            .unwrap();
        let b = imp
            .weights
            .load(&info.name, &info.shape, DType::F32, &CPU)
            .unwrap();
        assert_eq!(imp.weights.info(&info.name).unwrap().dtype, "F32");
        assert_eq!(
            max_abs_diff(&a, &b),
            0.0,
            "{} must round-trip exactly",
            info.name
        );
    }

    for text in SAMPLES {
        let ids = orig.tokenizer.encode(text).unwrap();
        assert_eq!(
            imp.tokenizer.encode(text).unwrap(),
            ids,
            "token ids of {text:?}"
        );
        assert_eq!(
            imp.tokenizer.decode(&ids).unwrap(),
            orig.tokenizer.decode(&ids).unwrap()
        );
    }
    assert_eq!(imp.tokenizer.chat_template, orig.tokenizer.chat_template);
    assert_eq!(imp.tokenizer.eos_token, orig.tokenizer.eos_token);
    assert_eq!(imp.tokenizer.pad_token, orig.tokenizer.pad_token);
    assert_eq!(imp.tokenizer.stop_ids, orig.tokenizer.stop_ids);

    let ids = orig.tokenizer.encode(SAMPLES[1]).unwrap();
    let diff = max_abs_diff(&logits(&orig, &ids), &logits(&imp, &ids));
    assert!(diff <= 1e-4, "logits differ by {diff}");
}

#[test]
fn llama_f32_round_trips_exactly() {
    let case = Case::new(
        TinyModel::new(Architecture::Llama, 7),
        &Writer::new(GgmlDType::F32),
        DType::F32,
    );
    check_exact(&case);
    let (orig, imp) = case.open();
    assert!(!imp.config.tie_word_embeddings);
    assert!(imp.weights.info("lm_head.weight").is_some());
    // The un-permutation is exact, and it matters: the file's rows differ from the original's.
    let q = "model.layers.1.self_attn.q_proj.weight";
    let shape = &orig.weights.info(q).unwrap().shape;
    let original = orig.weights.load(q, shape, DType::F32, &CPU).unwrap();
    let imported = imp.weights.load(q, shape, DType::F32, &CPU).unwrap();
    assert_eq!(max_abs_diff(&original, &imported), 0.0);
    let mut reader = std::fs::File::open(&case.gguf).unwrap();
    let content = gguf_file::Content::read(&mut reader).unwrap();
    let stored = content
        .tensor(&mut reader, "blk.1.attn_q.weight", &CPU)
        .unwrap()
        .dequantize(&CPU)
        .unwrap();
    assert!(
        max_abs_diff(&stored, &original) > 0.0,
        "the GGUF holds permuted rows"
    );

    for file in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "model.safetensors",
    ] {
        assert!(case.imported.join(file).is_file(), "{file} written");
    }
    let leftovers: Vec<_> = std::fs::read_dir(case.imported.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn qwen2_tied_f32_round_trips_exactly() {
    let case = Case::new(
        TinyModel::new(Architecture::Qwen2, 3),
        &Writer {
            arch: "qwen2",
            ..Writer::new(GgmlDType::F32)
        },
        DType::F32,
    );
    check_exact(&case);
    let (_, imp) = case.open();
    assert!(imp.config.tie_word_embeddings && imp.config.qkv_bias);
    assert!(imp.weights.info("lm_head.weight").is_none());
}

/// Qwen3: the per-head q/k norms come back under their Hugging Face names, q/k unpermuted.
#[test]
fn qwen3_f32_round_trips_exactly() {
    let case = Case::new(
        TinyModel::new(Architecture::Qwen3, 4),
        &Writer {
            arch: "qwen3",
            ..Writer::new(GgmlDType::F32)
        },
        DType::F32,
    );
    check_exact(&case);
    let (_, imp) = case.open();
    assert!(imp.config.qk_norm && !imp.config.qkv_bias);
    assert!(imp
        .weights
        .info("model.layers.1.self_attn.k_norm.weight")
        .is_some());
}

#[test]
fn quantized_tensors_are_within_quantization_error() {
    // K-quants work on blocks of 256 values, so rows are 256 wide.
    let spec = TinySpec {
        hidden_size: 256,
        intermediate_size: 512,
        num_layers: 1,
        num_heads: 4,
        num_kv_heads: 2,
        tie_embeddings: Some(false),
        ..TinySpec::new(Architecture::Llama, 11)
    };
    let original = TinyModel::with_spec(spec);
    let orig = Model::open(&original.spec_str()).unwrap();
    // Largest error relative to the tensor's largest magnitude.
    for (ty, tolerance) in [
        (GgmlDType::Q8_0, 0.01),
        (GgmlDType::Q6K, 0.04),
        (GgmlDType::Q4_0, 0.13),
        (GgmlDType::Q4_1, 0.1),
        (GgmlDType::Q4K, 0.12),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let gguf = dir.path().join("q.gguf");
        write_gguf(original.path(), &gguf, &Writer::new(ty));
        let out = dir.path().join("imported");
        let report = import_gguf(&gguf, &out, &ImportOptions::default()).unwrap();
        assert!(report.source_types.contains_key(match ty {
            GgmlDType::Q8_0 => "Q8_0",
            GgmlDType::Q6K => "Q6_K",
            GgmlDType::Q4_0 => "Q4_0",
            GgmlDType::Q4_1 => "Q4_1",
            _ => "Q4_K",
        }));
        let imp = Model::open(out.to_str().unwrap()).unwrap();
        assert_eq!(imp.config, orig.config);
        for info in orig.weights.infos() {
            let a = orig
                .weights
                .load(&info.name, &info.shape, DType::F32, &CPU)
                .unwrap();
            let b = imp
                .weights
                .load(&info.name, &info.shape, DType::F32, &CPU)
                .unwrap();
            if info.shape.len() == 1 {
                assert_eq!(max_abs_diff(&a, &b), 0.0, "{} stays F32", info.name);
                continue;
            }
            let scale = a
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let err = max_abs_diff(&a, &b) / scale;
            assert!(
                err > 0.0 && err <= tolerance,
                "{ty:?} {}: relative error {err} (tolerance {tolerance})",
                info.name
            );
            // Exactly what dequantizing the stored blocks gives, with the permutation undone.
            let heads = if info.name.contains("q_proj") {
                Some(orig.config.num_attention_heads)
            } else if info.name.contains("k_proj") {
                Some(orig.config.num_key_value_heads)
            } else {
                None
            };
            let stored = match heads {
                Some(h) => llama_cpp_permute(&a, h),
                None => a.clone(),
            };
            let dq = QTensor::quantize(&stored, ty)
                .unwrap()
                .dequantize(&CPU)
                .unwrap();
            let b_as_stored = match heads {
                Some(h) => llama_cpp_permute(&b, h),
                None => b.clone(),
            };
            assert_eq!(max_abs_diff(&dq, &b_as_stored), 0.0, "{ty:?} {}", info.name);
        }
        // With 8-bit weights the model still computes nearly the same thing.
        if ty == GgmlDType::Q8_0 {
            let ids = orig.tokenizer.encode(SAMPLES[0]).unwrap();
            let (la, lb) = (logits(&orig, &ids), logits(&imp, &ids));
            let scale = la
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let rel = max_abs_diff(&la, &lb) / scale;
            assert!(rel < 0.05, "{ty:?}: logits relative difference {rel}");
        }
    }
}

#[test]
fn bf16_output_and_existing_directory() {
    let original = TinyModel::new(Architecture::Llama, 5);
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("t.gguf");
    write_gguf(original.path(), &gguf, &Writer::new(GgmlDType::F32));
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "x").unwrap();
    let bf16 = ImportOptions {
        dtype: DType::BF16,
        ..Default::default()
    };
    let err = import_gguf(&gguf, &out, &bf16).unwrap_err();
    assert!(format!("{err:#}").contains("--force"), "{err:#}");
    assert!(
        out.join("keep.txt").is_file(),
        "nothing touched without --force"
    );

    import_gguf(
        &gguf,
        &out,
        &ImportOptions {
            force: true,
            ..bf16
        },
    )
    .unwrap();
    assert!(!out.join("keep.txt").exists(), "replaced with --force");
    let orig = Model::open(&original.spec_str()).unwrap();
    let imp = Model::open(out.to_str().unwrap()).unwrap();
    let config: Json =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["dtype"], "bfloat16", "transformers 5 writes `dtype`");
    for info in orig.weights.infos() {
        assert_eq!(imp.weights.info(&info.name).unwrap().dtype, "BF16");
        let a = orig
            .weights
            .load(&info.name, &info.shape, DType::BF16, &CPU)
            .unwrap();
        let b = imp
            .weights
            .load(&info.name, &info.shape, DType::BF16, &CPU)
            .unwrap();
        let diff = max_abs_diff(
            &a.to_dtype(DType::F32).unwrap(),
            &b.to_dtype(DType::F32).unwrap(),
        );
        assert_eq!(diff, 0.0, "{}", info.name);
    }
}

#[test]
fn smollm_pre_tokenizer_splits_digits() {
    let case = Case::new(
        TinyModel::new(Architecture::Llama, 9),
        &Writer {
            pre: "smollm",
            ..Writer::new(GgmlDType::F32)
        },
        DType::F32,
    );
    let (orig, imp) = case.open();
    let pieces = |m: &Model, text: &str| -> Vec<String> {
        m.tokenizer
            .tokenizer
            .encode(text, false)
            .unwrap()
            .get_tokens()
            .to_vec()
    };
    // The tiny tokenizer learnt "100" as one token; smollm splits digits one by one.
    assert!(pieces(&orig, "100 apples").iter().any(|t| t.contains("00")));
    let split = pieces(&imp, "100 apples");
    assert_eq!(&split[..3], ["1", "0", "0"], "{split:?}");
    assert_eq!(split[3..].concat(), "Ġapples");
    for text in ["the sky is blue", "copy the words : apple banana"] {
        assert_eq!(pieces(&imp, text), pieces(&orig, text), "{text:?}");
    }
    let tokenizer: Json = serde_json::from_str(
        &std::fs::read_to_string(case.imported.join("tokenizer.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        tokenizer["pre_tokenizer"],
        serde_json::json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
        ]})
    );
}

fn import_err(gguf: &Path) -> String {
    let out = gguf.with_file_name("imported");
    let err = import_gguf(gguf, &out, &ImportOptions::default()).unwrap_err();
    assert!(!out.exists(), "no output after a failed import");
    assert!(
        !format!("{err:#}").contains('\n'),
        "one-line error: {err:#}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(gguf.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    format!("{err:#}")
}

#[test]
fn unsupported_architecture_is_named() {
    let original = TinyModel::new(Architecture::Llama, 1);
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("gemma.gguf");
    write_gguf(
        original.path(),
        &gguf,
        &Writer {
            arch: "gemma",
            ..Writer::new(GgmlDType::F32)
        },
    );
    let err = import_err(&gguf);
    assert!(
        err.contains("architecture `gemma` is not supported"),
        "{err}"
    );
    assert!(err.contains("llama, qwen2, qwen3"), "{err}");
    for arch in ["gemma3", "phi3"] {
        let gguf = dir.path().join(format!("{arch}.gguf"));
        write_gguf(
            original.path(),
            &gguf,
            &Writer {
                arch,
                ..Writer::new(GgmlDType::F32)
            },
        );
        let err = import_err(&gguf);
        assert!(
            err.contains(&format!("architecture `{arch}` is not imported"))
                && err.contains("SentencePiece"),
            "{err}"
        );
    }
}

#[test]
fn corrupt_and_truncated_files_are_clear_errors() {
    let original = TinyModel::new(Architecture::Llama, 2);
    let dir = tempfile::tempdir().unwrap();

    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"this is not a gguf file at all, just text").unwrap();
    let err = import_err(&junk);
    assert!(
        err.contains("junk.gguf") && err.contains("not a readable GGUF file"),
        "{err}"
    );

    let good = dir.path().join("good.gguf");
    write_gguf(original.path(), &good, &Writer::new(GgmlDType::Q8_0));
    let bytes = std::fs::read(&good).unwrap();

    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() - 4096]).unwrap();
    let err = import_err(&cut);
    assert!(
        err.contains("cut.gguf") && err.contains("cannot read tensor"),
        "{err}"
    );

    let header_only = dir.path().join("header.gguf");
    std::fs::write(&header_only, &bytes[..1000]).unwrap();
    let err = import_err(&header_only);
    assert!(err.contains("not a readable GGUF file"), "{err}");

    // An IQ2_XXS tensor (type 16): patch the type id in output_norm.weight's header entry
    // (name, n_dims u32, one u64 dim, then the type u32).
    let name = b"output_norm.weight";
    let at = bytes.windows(name.len()).position(|w| w == name).unwrap() + name.len() + 4 + 8;
    let mut patched = bytes.clone();
    patched[at..at + 4].copy_from_slice(&16u32.to_le_bytes());
    let iq = dir.path().join("iq.gguf");
    std::fs::write(&iq, &patched).unwrap();
    let err = import_err(&iq);
    assert!(
        err.contains("output_norm.weight") && err.contains("IQ2_XXS"),
        "{err}"
    );
    assert!(err.contains("Q4_K"), "lists what is supported: {err}");

    // Q8_1 is known to candle but has no dequantization: named before anything is written.
    patched[at..at + 4].copy_from_slice(&9u32.to_le_bytes());
    let q81 = dir.path().join("q81.gguf");
    std::fs::write(&q81, &patched).unwrap();
    let err = import_err(&q81);
    assert!(err.contains("output_norm.weight (Q8_1)"), "{err}");
}

/// Opt-in check of the real SmolLM2 import (`scripts/fetch-smollm2.sh` first):
/// `cargo test --test gguf -- --ignored`.
#[test]
#[ignore = "needs models/smollm2-135m-instruct from scripts/fetch-smollm2.sh"]
fn smollm2_tokenizer_matches_hugging_face() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/smollm2-135m-instruct");
    let model = Model::open(dir.to_str().unwrap()).unwrap();
    let pieces = |text: &str| -> Vec<String> {
        model
            .tokenizer
            .tokenizer
            .encode(text, false)
            .unwrap()
            .get_tokens()
            .to_vec()
    };
    assert_eq!(pieces("Hello world"), ["Hello", "Ġworld"]);
    assert_eq!(pieces("12345"), ["1", "2", "3", "4", "5"]);
    assert_eq!(
        pieces("I have 3 apples"),
        ["I", "Ġhave", "Ġ", "3", "Ġapples"]
    );
    assert_eq!(
        pieces("<|im_start|>user\nWhat is the capital of France?<|im_end|>"),
        [
            "<|im_start|>",
            "user",
            "Ċ",
            "What",
            "Ġis",
            "Ġthe",
            "Ġcapital",
            "Ġof",
            "ĠFrance",
            "?",
            "<|im_end|>"
        ]
    );
    assert_eq!(
        model.tokenizer.encode("<|im_start|><|im_end|>").unwrap(),
        [1, 2]
    );
    assert_eq!(model.tokenizer.stop_ids, [2]);
    let text = "Naïve  café —\n\n  spaces 3.14";
    let ids = model.tokenizer.encode(text).unwrap();
    assert_eq!(model.tokenizer.decode(&ids).unwrap(), text);
}

/// The real SmolLM2 import against the same GGUF read another way. Runs when
/// `scripts/fetch-smollm2.sh` has left `models/smollm2-135m-instruct` and the GGUF beside it
/// (`models/smollm2-135m-instruct.Q4_1.gguf`); otherwise it prints why it checked nothing.
/// Every imported tensor must equal candle's own `QTensor::dequantize` of the GGUF tensor element
/// for element (q/k compared in llama.cpp's permuted layout), and the next-token distribution on
/// a few prompts must agree with candle-transformers' `quantized_llama` run on the GGUF itself.
#[test]
fn smollm2_import_matches_the_gguf_read_by_candle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let dir = root.join("smollm2-135m-instruct");
    let gguf = root.join("smollm2-135m-instruct.Q4_1.gguf");
    if !dir.join("config.json").is_file() || !gguf.is_file() {
        eprintln!(
            "skipped: {} or {} is missing (run scripts/fetch-smollm2.sh)",
            dir.display(),
            gguf.display()
        );
        return;
    }
    let mut file = std::fs::File::open(&gguf).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let model = Model::open(dir.to_str().unwrap()).unwrap();
    let heads = model.config.num_attention_heads;
    let kv_heads = model.config.num_key_value_heads;
    let ours = candle_core::safetensors::load(dir.join("model.safetensors"), &CPU).unwrap();
    assert_eq!(ours.len(), content.tensor_infos.len(), "tensor count");
    let mut compared = 0usize;
    for (hf_name, tensor) in &ours {
        let name = gguf_name(hf_name);
        let reference = content
            .tensor(&mut file, &name, &CPU)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .dequantize(&CPU)
            .unwrap();
        let tensor = tensor.to_dtype(DType::F32).unwrap();
        let tensor = if name.contains("attn_q.") {
            llama_cpp_permute(&tensor, heads)
        } else if name.contains("attn_k.") {
            llama_cpp_permute(&tensor, kv_heads)
        } else {
            tensor
        };
        assert_eq!(tensor.dims(), reference.dims(), "{hf_name}");
        let a = tensor.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = reference.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(
            a == b,
            "{hf_name} differs from QTensor::dequantize of {name}"
        );
        compared += a.len();
    }
    println!(
        "{} tensors, {compared} elements equal to candle's dequantize",
        ours.len()
    );

    let decoder = model
        .decoder(&Default::default(), DType::F32, &CPU)
        .unwrap();
    let mut file = std::fs::File::open(&gguf).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let mut quantized = candle_transformers::models::quantized_llama::ModelWeights::from_gguf(
        content, &mut file, &CPU,
    )
    .unwrap();
    for prompt in [
        "What is the capital of France?",
        "Count the apples: apple, pear, apple.",
        "Write one word that rhymes with cat.",
    ] {
        let message = tunescope::model::tokenizer::ChatMessage {
            role: "user".into(),
            content: prompt.into(),
        };
        let text = model
            .tokenizer
            .render_chat(&[message], true)
            .unwrap()
            .unwrap();
        let ids = model.tokenizer.encode(&text).unwrap();
        let input = Tensor::new(ids.as_slice(), &CPU)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let mut cache = decoder.new_cache(1);
        let ours = decoder
            .forward_cached(&input, None, &mut cache, None)
            .unwrap();
        let theirs = quantized.forward(&input, 0).unwrap();
        let p = candle_nn::ops::softmax_last_dim(&ours.squeeze(0).unwrap()).unwrap();
        let q = candle_nn::ops::softmax_last_dim(
            &theirs.squeeze(0).unwrap().to_dtype(DType::F32).unwrap(),
        )
        .unwrap();
        let top = |t: &Tensor| t.argmax(0).unwrap().to_scalar::<u32>().unwrap();
        let tv = ((&p - &q)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap())
            / 2.0;
        println!(
            "{prompt:?}: top-1 ours {} quantized_llama {}, total variation {tv:.4}",
            top(&p),
            top(&q)
        );
        let top3 = |t: &Tensor| -> Vec<u32> {
            let mut v: Vec<(usize, f32)> = t
                .to_vec1::<f32>()
                .unwrap()
                .into_iter()
                .enumerate()
                .collect();
            v.sort_by(|a, b| b.1.total_cmp(&a.1));
            v[..3].iter().map(|(i, _)| *i as u32).collect()
        };
        // quantized_llama also rounds activations to Q8_1 in its matmuls, which moves
        // probabilities by a few hundredths: near-ties may swap, so each side's choice must be
        // among the other's top 3 and the distributions close overall.
        assert!(
            top3(&q).contains(&top(&p)),
            "{prompt}: our top-1 not in theirs' top 3"
        );
        assert!(
            top3(&p).contains(&top(&q)),
            "{prompt}: their top-1 not in our top 3"
        );
        assert!(tv < 0.1, "{prompt}: total variation {tv}");
    }
}
