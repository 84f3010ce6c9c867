//! `tokenizer.json` and `tokenizer_config.json` from a GGUF file's `tokenizer.ggml.*` metadata.
//!
//! Only byte-level BPE (`tokenizer.ggml.model = gpt2`) is imported. The pre-tokenizer follows
//! `tokenizer.ggml.pre` the way llama.cpp reads it (e.g. `smollm`: digits one by one, then the
//! GPT-2 byte-level regex, no prefix space), written as Hugging Face's own `tokenizer.json` does.

use std::collections::HashSet;

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};

use super::config::SpecialIds;
use super::read::GgufFile;

/// llama.cpp token types (`tokenizer.ggml.token_type`).
const TYPE_UNKNOWN: i64 = 2;
const TYPE_CONTROL: i64 = 3;
const TYPE_USER_DEFINED: i64 = 4;

const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The imported tokenizer files and what the model configs need from them.
#[derive(Debug, Clone)]
pub struct GgufTokenizer {
    pub tokenizer_json: Value,
    pub tokenizer_config_json: Value,
    pub vocab_size: usize,
    pub ids: SpecialIds,
    /// The pre-tokenizer written, in words (`smollm (digits split, byte-level)`).
    pub pre_tokenizer: String,
    /// Things worth telling the user (unknown pre-tokenizer, duplicate tokens).
    pub notes: Vec<String>,
}

fn byte_level(add_prefix_space: bool, trim_offsets: bool, use_regex: bool) -> Value {
    json!({"type": "ByteLevel", "add_prefix_space": add_prefix_space, "trim_offsets": trim_offsets, "use_regex": use_regex})
}

fn split_regex(regex: &str) -> Value {
    json!({"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false})
}

/// Normalizer and pre-tokenizer for a `tokenizer.ggml.pre` value, a description, and whether the
/// value was known.
fn pre_tokenizer(pre: &str) -> (Value, Value, String, bool) {
    match pre {
        "smollm" => (
            Value::Null,
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true},
                byte_level(false, true, true),
            ]}),
            "smollm (digits split one by one, GPT-2 byte-level regex, no prefix space)".into(),
            true,
        ),
        "llama3" | "llama-v3" | "llama-bpe" => (
            Value::Null,
            json!({"type": "Sequence", "pretokenizers": [split_regex(LLAMA3_REGEX), byte_level(false, true, false)]}),
            format!("{pre} (Llama-3 regex, byte-level)"),
            true,
        ),
        "qwen2" => (
            json!({"type": "NFC"}),
            json!({"type": "Sequence", "pretokenizers": [split_regex(QWEN2_REGEX), byte_level(false, false, false)]}),
            "qwen2 (NFC, Qwen2 regex, byte-level)".into(),
            true,
        ),
        other => (
            Value::Null,
            byte_level(false, true, true),
            if matches!(other, "gpt2" | "default" | "") {
                "GPT-2 byte-level regex, no prefix space".into()
            } else {
                format!("`{other}` is not known here: GPT-2 byte-level regex, no prefix space")
            },
            matches!(other, "gpt2" | "default" | ""),
        ),
    }
}

/// Splits a GGUF merge `"a b"` at the first space after the first character (as llama.cpp does).
fn split_merge(merge: &str) -> Option<(&str, &str)> {
    let first = merge.chars().next()?;
    let start = first.len_utf8();
    let pos = merge[start..].find(' ')? + start;
    Some((&merge[..pos], &merge[pos + 1..]))
}

impl GgufTokenizer {
    /// Builds the tokenizer files from `tokenizer.ggml.*`, `tokenizer.chat_template` and the
    /// context length (`model_max_length`).
    pub fn read(file: &GgufFile, context_length: usize) -> Result<Self> {
        let path = file.path().display().to_string();
        let model = file.req_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            let what = match model {
                "llama" => " (SentencePiece)",
                "bert" => " (WordPiece)",
                _ => "",
            };
            bail!(
                "{path}: tokenizer model `{model}`{what} is not supported; tunescope imports byte-level BPE tokenizers (tokenizer.ggml.model = gpt2)"
            );
        }
        let tokens = file
            .str_array("tokenizer.ggml.tokens")?
            .with_context(|| format!("{path}: metadata key `tokenizer.ggml.tokens` is missing"))?;
        if tokens.is_empty() {
            bail!("{path}: `tokenizer.ggml.tokens` is empty");
        }
        let types = file.int_array("tokenizer.ggml.token_type")?;
        if let Some(types) = &types {
            if types.len() != tokens.len() {
                bail!(
                    "{path}: tokenizer.ggml.token_type has {} entries for {} tokens",
                    types.len(),
                    tokens.len()
                );
            }
        }
        let merges = file.str_array("tokenizer.ggml.merges")?.with_context(|| {
            format!("{path}: metadata key `tokenizer.ggml.merges` is missing (a BPE tokenizer needs its merges)")
        })?;
        let mut notes = Vec::new();

        let mut vocab = Map::new();
        let mut duplicates = 0usize;
        for (id, token) in tokens.iter().enumerate() {
            if vocab.contains_key(*token) {
                duplicates += 1;
                continue;
            }
            vocab.insert(token.to_string(), json!(id));
        }
        if duplicates > 0 {
            notes.push(format!(
                "{duplicates} duplicate token strings in tokenizer.ggml.tokens; the first id of each is kept"
            ));
        }
        let merges: Vec<Value> = merges
            .iter()
            .map(|m| {
                split_merge(m).map(|(a, b)| json!([a, b])).with_context(|| {
                    format!("{path}: merge `{m}` is not two tokens separated by a space")
                })
            })
            .collect::<Result<_>>()?;

        let id_key = |key: &str| -> Result<Option<u32>> {
            let Some(id) = file.usize(key)? else {
                return Ok(None);
            };
            if id >= tokens.len() {
                bail!(
                    "{path}: {key} = {id} is outside the vocabulary of {} tokens",
                    tokens.len()
                );
            }
            Ok(Some(id as u32))
        };
        let ids = SpecialIds {
            bos: id_key("tokenizer.ggml.bos_token_id")?,
            eos: id_key("tokenizer.ggml.eos_token_id")?,
            eot: id_key("tokenizer.ggml.eot_token_id")?,
            pad: id_key("tokenizer.ggml.padding_token_id")?,
        };
        let unk = id_key("tokenizer.ggml.unknown_token_id")?;
        let text = |id: Option<u32>| id.map(|i| tokens[i as usize].to_string());

        // Control and user-defined tokens become added tokens (control ones special); so do the
        // ids named as bos/eos/eot/pad/unk, whatever their type.
        let named: HashSet<u32> = [ids.bos, ids.eos, ids.eot, ids.pad, unk]
            .into_iter()
            .flatten()
            .collect();
        let mut added = Vec::new();
        let mut added_decoder = Map::new();
        for (id, token) in tokens.iter().enumerate() {
            let ty = types.as_ref().map(|t| t[id]).unwrap_or(1);
            let special = matches!(ty, TYPE_CONTROL | TYPE_UNKNOWN) || named.contains(&(id as u32));
            if !special && ty != TYPE_USER_DEFINED {
                continue;
            }
            let entry = json!({
                "content": token,
                "single_word": false,
                "lstrip": false,
                "rstrip": false,
                "normalized": false,
                "special": special,
            });
            let mut with_id = json!({"id": id});
            with_id
                .as_object_mut()
                .expect("object")
                .extend(entry.as_object().expect("object").clone());
            added.push(with_id);
            added_decoder.insert(id.to_string(), entry);
        }

        let pre = file.str("tokenizer.ggml.pre")?.unwrap_or("default");
        let (normalizer, pre_tokenizer, description, known) = pre_tokenizer(pre);
        if !known {
            notes.push(format!("pre-tokenizer {description}"));
        }
        let add_bos = file.bool("tokenizer.ggml.add_bos_token")?.unwrap_or(false);
        let byte_level_post = byte_level(true, false, true);
        let post_processor = match (add_bos, ids.bos) {
            (true, Some(bos)) => {
                let bos_text = tokens[bos as usize];
                json!({"type": "Sequence", "processors": [
                    byte_level_post,
                    {
                        "type": "TemplateProcessing",
                        "single": [{"SpecialToken": {"id": bos_text, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                        "pair": [
                            {"SpecialToken": {"id": bos_text, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                            {"SpecialToken": {"id": bos_text, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}
                        ],
                        "special_tokens": {bos_text: {"id": bos_text, "ids": [bos], "tokens": [bos_text]}}
                    }
                ]})
            }
            _ => byte_level_post,
        };
        let tokenizer_json = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": normalizer,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": post_processor,
            "decoder": byte_level(true, true, true),
            "model": {
                "type": "BPE",
                "dropout": null,
                "unk_token": text(unk),
                "continuing_subword_prefix": null,
                "end_of_word_suffix": null,
                "fuse_unk": false,
                "byte_fallback": false,
                "ignore_merges": matches!(pre, "llama3" | "llama-v3" | "llama-bpe"),
                "vocab": vocab,
                "merges": merges,
            },
        });
        // Parse what was built, so a broken vocabulary is reported here and not at first use.
        tokenizers::Tokenizer::from_bytes(serde_json::to_vec(&tokenizer_json)?).map_err(|e| {
            anyhow::anyhow!("{path}: the tokenizer built from tokenizer.ggml.* does not load: {e}")
        })?;

        let mut tokenizer_config = json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "added_tokens_decoder": added_decoder,
            "bos_token": text(ids.bos),
            "eos_token": text(ids.eos),
            "pad_token": text(ids.pad),
            "unk_token": text(unk),
            "add_bos_token": add_bos,
            "add_eos_token": file.bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false),
            "clean_up_tokenization_spaces": false,
            "model_max_length": context_length,
        });
        if let Some(template) = file.str("tokenizer.chat_template")? {
            tokenizer_config["chat_template"] = json!(template);
        } else {
            notes.push(
                "the GGUF has no tokenizer.chat_template; prompts will be used as plain text"
                    .into(),
            );
        }
        Ok(Self {
            tokenizer_json,
            tokenizer_config_json: tokenizer_config,
            vocab_size: tokens.len(),
            ids,
            pre_tokenizer: description,
            notes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::split_merge;

    #[test]
    fn merges_split_after_first_char() {
        assert_eq!(split_merge("Ġ t"), Some(("Ġ", "t")));
        assert_eq!(split_merge("Ġt he"), Some(("Ġt", "he")));
        assert_eq!(split_merge("  x"), Some((" ", "x")));
        assert_eq!(split_merge("ab"), None);
    }
}
