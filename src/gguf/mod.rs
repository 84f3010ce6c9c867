//! Import of GGUF files (llama.cpp) into ordinary Hugging Face model directories.
//!
//! Every tensor is dequantized with candle's quantized module, llama.cpp's q/k row permutation is
//! undone (Llama), names are mapped back (`blk.N.attn_q` → `model.layers.N.self_attn.q_proj`),
//! `config.json` is rebuilt from the `{arch}.*` metadata and `tokenizer.json` from
//! `tokenizer.ggml.*`. The directory is written under a temporary name and renamed into place.

pub mod config;
pub mod read;
pub mod tensors;
pub mod tokenizer;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use serde_json::json;

use crate::model::ModelConfig;
use crate::util::fs::write_json_atomic;
use config::{GgufArch, HParams, TensorFacts};
use read::{type_name, GgufFile, SUPPORTED_TYPES};
use tensors::{hf_name, order_key, rotary_kind, unpermute_rows, Rotary};
use tokenizer::GgufTokenizer;

pub use read::supported_type_list;

/// Largest safetensors file written before the weights are split into shards (bounds memory too:
/// one shard is held at a time).
pub const SHARD_BYTES: usize = 2 << 30;

/// Settings of an import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Storage dtype of the written weights: F32, BF16 or F16.
    pub dtype: DType,
    /// Replace an existing, non-empty output directory.
    pub force: bool,
    /// Shard size limit in bytes ([`SHARD_BYTES`] by default).
    pub shard_bytes: usize,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            force: false,
            shard_bytes: SHARD_BYTES,
        }
    }
}

/// What an import did.
#[derive(Debug, Clone)]
pub struct ImportReport {
    pub out: PathBuf,
    /// `general.architecture`.
    pub architecture: String,
    /// `general.name`, when given.
    pub name: Option<String>,
    pub num_layers: usize,
    pub vocab_size: usize,
    pub tied_embeddings: bool,
    /// Tensors written and their element count.
    pub tensors: usize,
    pub parameters: usize,
    /// Source storage types and how many tensors had each (`Q4_1: 210`).
    pub source_types: BTreeMap<String, usize>,
    /// Weight files written.
    pub weight_files: Vec<String>,
    pub pre_tokenizer: String,
    pub has_chat_template: bool,
    pub notes: Vec<String>,
}

/// One tensor to write: its GGUF name, Hugging Face name and shape.
struct Planned {
    gguf: String,
    hf: String,
    shape: Vec<usize>,
    rotary: Option<Rotary>,
}

/// Converts the GGUF file at `path` into a Hugging Face model directory at `out`.
pub fn import_gguf(path: &Path, out: &Path, options: &ImportOptions) -> Result<ImportReport> {
    if !matches!(options.dtype, DType::F32 | DType::BF16 | DType::F16) {
        bail!(
            "output dtype {:?} is not supported; use f32, bf16 or f16",
            options.dtype
        );
    }
    check_out_dir(out, options.force)?;
    let mut file = GgufFile::open(path)?;
    let arch = GgufArch::of(&file)?;
    let hparams = HParams::read(&file, arch)?;
    check_tensor_types(&file)?;
    let tokenizer = GgufTokenizer::read(&file, hparams.context_length)?;
    let vocab_size = config::check_vocab(&file, tokenizer.vocab_size)?;

    // Map every tensor; rope_freqs (Llama 3 rope scaling) goes into the config instead.
    let mut planned = Vec::new();
    let mut unmapped = Vec::new();
    for name in file.tensor_names() {
        if name == "rope_freqs.weight" {
            continue;
        }
        let (_, shape) = file.tensor_info(name).expect("listed tensor");
        match hf_name(name) {
            Some(hf) => planned.push(Planned {
                gguf: name.to_string(),
                hf,
                shape: shape.to_vec(),
                rotary: rotary_kind(name),
            }),
            None => unmapped.push(name.to_string()),
        }
    }
    if !unmapped.is_empty() {
        bail!(
            "{}: {} tensor(s) have no Hugging Face equivalent for a {} model: {}",
            path.display(),
            unmapped.len(),
            arch.key(),
            unmapped.join(", ")
        );
    }
    planned.sort_by_key(|p| order_key(&p.hf));

    let rope_scaling = if file.has_tensor("rope_freqs.weight") {
        let factors: Vec<f32> = file
            .dequantize("rope_freqs.weight")?
            .flatten_all()?
            .to_vec1()?;
        Some(
            config::llama3_scaling_from_factors(&factors, hparams.rope_theta, hparams.head_dim)
                .with_context(|| format!("in {}", path.display()))?,
        )
    } else {
        None
    };
    let has = |hf: &str| planned.iter().any(|p| p.hf == hf);
    let facts = TensorFacts {
        vocab_size,
        tied: !file.has_tensor("output.weight"),
        attention_bias: has("model.layers.0.self_attn.q_proj.bias"),
        mlp_bias: has("model.layers.0.mlp.gate_proj.bias"),
        rope_scaling,
        torch_dtype: match options.dtype {
            DType::BF16 => "bfloat16",
            DType::F16 => "float16",
            _ => "float32",
        },
    };
    let config_json = config::config_json(&hparams, &facts, &tokenizer.ids);
    let model_config = ModelConfig::from_json(&config_json)
        .with_context(|| format!("the config built from {} is not usable", path.display()))?;
    check_shapes(path, &model_config, &planned)?;

    // Write everything into a sibling temporary directory, then rename it into place.
    let tmp = sibling(out, "tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)
            .with_context(|| format!("cannot remove stale {}", tmp.display()))?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let written = (|| -> Result<(Vec<String>, usize, BTreeMap<String, usize>)> {
        write_json_atomic(&tmp.join("config.json"), &config_json)?;
        write_json_atomic(
            &tmp.join("generation_config.json"),
            &config::generation_config_json(&tokenizer.ids),
        )?;
        write_json_atomic(&tmp.join("tokenizer.json"), &tokenizer.tokenizer_json)?;
        write_json_atomic(
            &tmp.join("tokenizer_config.json"),
            &tokenizer.tokenizer_config_json,
        )?;
        write_weights(&mut file, &planned, &hparams, options, &tmp)
    })();
    let (weight_files, parameters, source_types) = match written {
        Ok(w) => w,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    move_into_place(&tmp, out)?;

    Ok(ImportReport {
        out: out.to_path_buf(),
        architecture: arch.key().to_string(),
        name: file.str("general.name").ok().flatten().map(String::from),
        num_layers: hparams.num_layers,
        vocab_size,
        tied_embeddings: facts.tied,
        tensors: planned.len(),
        parameters,
        source_types,
        weight_files,
        pre_tokenizer: tokenizer.pre_tokenizer.clone(),
        has_chat_template: tokenizer
            .tokenizer_config_json
            .get("chat_template")
            .is_some(),
        notes: tokenizer.notes.clone(),
    })
}

/// An existing non-empty output directory is only replaced with `force`.
fn check_out_dir(out: &Path, force: bool) -> Result<()> {
    if out.exists() {
        if !out.is_dir() {
            bail!("{} exists and is not a directory", out.display());
        }
        let empty = std::fs::read_dir(out)
            .with_context(|| format!("cannot read {}", out.display()))?
            .next()
            .is_none();
        if !empty && !force {
            bail!(
                "{} already exists and is not empty; pass --force to replace it",
                out.display()
            );
        }
    }
    Ok(())
}

/// Every tensor must be of a type candle can dequantize; all offenders are named at once.
fn check_tensor_types(file: &GgufFile) -> Result<()> {
    let bad: Vec<String> = file
        .tensor_names()
        .into_iter()
        .filter_map(|name| {
            let (dtype, _) = file.tensor_info(name)?;
            (!SUPPORTED_TYPES.contains(&dtype)).then(|| format!("{name} ({})", type_name(dtype)))
        })
        .collect();
    if !bad.is_empty() {
        bail!(
            "{}: tensor type not supported for {}; supported: {}",
            file.path().display(),
            bad.join(", "),
            supported_type_list()
        );
    }
    Ok(())
}

/// The shapes the decoder will expect, checked before anything is written.
fn check_shapes(path: &Path, c: &ModelConfig, planned: &[Planned]) -> Result<()> {
    let mut expected: HashMap<String, Vec<usize>> = HashMap::new();
    let (h, v, i) = (c.hidden_size, c.vocab_size, c.intermediate_size);
    expected.insert("model.embed_tokens.weight".into(), vec![v, h]);
    expected.insert("model.norm.weight".into(), vec![h]);
    if !c.tie_word_embeddings {
        expected.insert("lm_head.weight".into(), vec![v, h]);
    }
    for l in 0..c.num_hidden_layers {
        let p = format!("model.layers.{l}");
        for (name, shape) in [
            ("input_layernorm.weight", vec![h]),
            ("post_attention_layernorm.weight", vec![h]),
            ("self_attn.q_proj.weight", vec![c.q_dim(), h]),
            ("self_attn.k_proj.weight", vec![c.kv_dim(), h]),
            ("self_attn.v_proj.weight", vec![c.kv_dim(), h]),
            ("self_attn.o_proj.weight", vec![h, c.q_dim()]),
            ("mlp.gate_proj.weight", vec![i, h]),
            ("mlp.up_proj.weight", vec![i, h]),
            ("mlp.down_proj.weight", vec![h, i]),
        ] {
            expected.insert(format!("{p}.{name}"), shape);
        }
        if c.qkv_bias {
            expected.insert(format!("{p}.self_attn.q_proj.bias"), vec![c.q_dim()]);
            expected.insert(format!("{p}.self_attn.k_proj.bias"), vec![c.kv_dim()]);
            expected.insert(format!("{p}.self_attn.v_proj.bias"), vec![c.kv_dim()]);
        }
        if c.o_bias {
            expected.insert(format!("{p}.self_attn.o_proj.bias"), vec![h]);
        }
        if c.qk_norm {
            expected.insert(format!("{p}.self_attn.q_norm.weight"), vec![c.head_dim]);
            expected.insert(format!("{p}.self_attn.k_norm.weight"), vec![c.head_dim]);
        }
        if c.mlp_bias {
            expected.insert(format!("{p}.mlp.gate_proj.bias"), vec![i]);
            expected.insert(format!("{p}.mlp.up_proj.bias"), vec![i]);
            expected.insert(format!("{p}.mlp.down_proj.bias"), vec![h]);
        }
    }
    let mut problems = Vec::new();
    for p in planned {
        match expected.remove(&p.hf) {
            Some(shape) if shape == p.shape => {}
            Some(shape) => problems.push(format!(
                "{} ({}) has shape {:?}, the metadata implies {shape:?}",
                p.gguf, p.hf, p.shape
            )),
            None => problems.push(format!(
                "{} ({}) is not part of a {}-layer {} model",
                p.gguf, p.hf, c.num_hidden_layers, c.model_type
            )),
        }
    }
    let mut missing: Vec<String> = expected.into_keys().collect();
    missing.sort_by_key(|n| order_key(n));
    if !missing.is_empty() {
        let shown: Vec<&str> = missing.iter().take(6).map(String::as_str).collect();
        problems.push(format!(
            "{} tensor(s) missing: {}{}",
            missing.len(),
            shown.join(", "),
            if missing.len() > 6 { ", ..." } else { "" }
        ));
    }
    if !problems.is_empty() {
        bail!(
            "{}: the tensors do not match the metadata:\n  {}",
            path.display(),
            problems.join("\n  ")
        );
    }
    Ok(())
}

/// Dequantizes, un-permutes and converts every tensor, writing one safetensors file or shards
/// with an index. Returns the file names, the parameter count and the source type counts.
fn write_weights(
    file: &mut GgufFile,
    planned: &[Planned],
    h: &HParams,
    options: &ImportOptions,
    dir: &Path,
) -> Result<(Vec<String>, usize, BTreeMap<String, usize>)> {
    let elem = options.dtype.size_in_bytes();
    // Plan shards by output size.
    let mut shards: Vec<Vec<usize>> = vec![Vec::new()];
    let mut current = 0usize;
    for (index, p) in planned.iter().enumerate() {
        let bytes = p.shape.iter().product::<usize>() * elem;
        if current > 0 && current + bytes > options.shard_bytes {
            shards.push(Vec::new());
            current = 0;
        }
        shards.last_mut().expect("a shard").push(index);
        current += bytes;
    }
    let count = shards.len();
    let names: Vec<String> = if count == 1 {
        vec!["model.safetensors".into()]
    } else {
        (1..=count)
            .map(|i| format!("model-{i:05}-of-{count:05}.safetensors"))
            .collect()
    };
    let mut parameters = 0usize;
    let mut total_bytes = 0usize;
    let mut types: BTreeMap<String, usize> = BTreeMap::new();
    let mut weight_map = serde_json::Map::new();
    for (shard, file_name) in shards.iter().zip(&names) {
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        for &index in shard {
            let p = &planned[index];
            let (dtype, _) = file.tensor_info(&p.gguf).expect("planned tensor");
            *types.entry(type_name(dtype).to_string()).or_default() += 1;
            let mut t = file.dequantize(&p.gguf)?;
            if h.arch.permuted_qk() {
                if let Some(kind) = p.rotary {
                    let heads = match kind {
                        Rotary::Q => h.num_heads,
                        Rotary::K => h.num_kv_heads,
                    };
                    t = unpermute_rows(&t, heads)
                        .with_context(|| format!("cannot un-permute {}", p.gguf))?;
                }
            }
            let t = t.to_dtype(options.dtype)?;
            parameters += t.elem_count();
            total_bytes += t.elem_count() * elem;
            weight_map.insert(p.hf.clone(), json!(file_name));
            tensors.insert(p.hf.clone(), t);
        }
        let target = dir.join(file_name);
        candle_core::safetensors::save(&tensors, &target)
            .map_err(read::plain)
            .with_context(|| format!("cannot write {}", target.display()))?;
        // The safetensors writer creates private files; give them the same mode as config.json.
        if let Ok(meta) = std::fs::metadata(dir.join("config.json")) {
            let _ = std::fs::set_permissions(&target, meta.permissions());
        }
    }
    if count > 1 {
        write_json_atomic(
            &dir.join("model.safetensors.index.json"),
            &json!({"metadata": {"total_size": total_bytes}, "weight_map": weight_map}),
        )?;
    }
    Ok((names, parameters, types))
}

/// `.<name>.<what>-<pid>` next to `out`.
fn sibling(out: &Path, what: &str) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    out.with_file_name(format!(".{name}.{what}-{}", std::process::id()))
}

/// Renames the finished temporary directory to `out`, replacing what was there.
fn move_into_place(tmp: &Path, out: &Path) -> Result<()> {
    let old = sibling(out, "old");
    let had_old = out.exists();
    if had_old {
        std::fs::rename(out, &old)
            .with_context(|| format!("cannot move the existing {} aside", out.display()))?;
    }
    if let Err(e) = std::fs::rename(tmp, out) {
        if had_old {
            let _ = std::fs::rename(&old, out);
        }
        let _ = std::fs::remove_dir_all(tmp);
        return Err(e)
            .with_context(|| format!("cannot move the imported model to {}", out.display()));
    }
    if had_old {
        std::fs::remove_dir_all(&old)
            .with_context(|| format!("cannot remove the replaced model at {}", old.display()))?;
    }
    Ok(())
}
