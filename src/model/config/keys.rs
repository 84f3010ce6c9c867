//! Every `config.json` key is classified: used by the decoder, known not to change the
//! computation, or refused with an error naming it. Keys outside all three lists give a warning.
//! [`KeyReader`] reads values, remembers which keys it used and where each value came from.

use std::cell::RefCell;
use std::collections::BTreeSet;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Where one configuration value came from, as `inspect` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValueSource {
    /// What the value is ("rope theta").
    pub name: String,
    /// The value as text.
    pub value: String,
    /// The key it was read from, or why a default or derived value was used.
    pub source: String,
    /// True when no key of config.json gave it (a family default or a derived value).
    pub fallback: bool,
}

/// Keys transformers records that do not change a forward or backward pass: bookkeeping,
/// serialization, task heads tunescope never builds, generation defaults (greedy decoding and
/// stop tokens are set elsewhere).
const INERT: &[&str] = &[
    "_name_or_path",
    "architectures",
    "transformers_version",
    "use_cache",
    "initializer_range",
    "output_attentions",
    "output_hidden_states",
    "return_dict",
    "chunk_size_feed_forward",
    "is_encoder_decoder",
    "is_decoder",
    "add_cross_attention",
    "cross_attention_hidden_size",
    "tie_encoder_decoder",
    "id2label",
    "label2id",
    "num_labels",
    "problem_type",
    "finetuning_task",
    "task_specific_params",
    "tokenizer_class",
    "prefix",
    "pad_token_id",
    "sep_token_id",
    "decoder_start_token_id",
    "torchscript",
    "pruned_heads",
    "tf_legacy_loss",
    "use_bfloat16",
    "_attn_implementation_autoset",
    "attn_implementation",
    "pretraining_tp",
    "unsloth_version",
    "max_length",
    "min_length",
    "do_sample",
    "early_stopping",
    "num_beams",
    "num_beam_groups",
    "diversity_penalty",
    "temperature",
    "top_k",
    "top_p",
    "typical_p",
    "repetition_penalty",
    "length_penalty",
    "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size",
    "bad_words_ids",
    "num_return_sequences",
    "output_scores",
    "return_dict_in_generate",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "remove_invalid_values",
    "exponential_decay_length_penalty",
    "suppress_tokens",
    "begin_suppress_tokens",
];

/// A key whose computation tunescope's decoder does not implement; harmless only at the values
/// `harmless` accepts (absent from the computation).
struct Refused {
    key: &'static str,
    harmless: fn(&Value) -> bool,
    what: &'static str,
}

fn null_or_false(v: &Value) -> bool {
    v.is_null() || v == &Value::Bool(false)
}

fn null_or_zero(v: &Value) -> bool {
    v.is_null() || v.as_f64() == Some(0.0)
}

fn null_or_one(v: &Value) -> bool {
    v.is_null() || v.as_f64() == Some(1.0)
}

fn never(_: &Value) -> bool {
    false
}

const REFUSED: &[Refused] = &[
    Refused { key: "attn_logit_softcapping", harmless: Value::is_null, what: "attention logit softcapping (Gemma 2) is not computed" },
    Refused { key: "final_logit_softcapping", harmless: Value::is_null, what: "final logit softcapping is not computed" },
    Refused { key: "query_pre_attn_scalar", harmless: Value::is_null, what: "query pre-attention scaling is not computed" },
    Refused { key: "use_qk_norm", harmless: null_or_false, what: "q/k normalisation is not computed" },
    Refused { key: "qk_norm", harmless: null_or_false, what: "q/k normalisation is not computed" },
    Refused { key: "sliding_window_pattern", harmless: Value::is_null, what: "alternating sliding-window layers are not computed" },
    Refused { key: "no_rope_layers", harmless: Value::is_null, what: "layers without rotary embeddings are not computed" },
    Refused { key: "partial_rotary_factor", harmless: null_or_one, what: "partial rotary embeddings are not computed" },
    Refused { key: "rope_local_base_freq", harmless: Value::is_null, what: "a separate rotary base for local layers is not computed" },
    Refused { key: "quantization_config", harmless: Value::is_null, what: "quantized weights are not loaded; dequantize the checkpoint first" },
    Refused { key: "num_local_experts", harmless: Value::is_null, what: "mixture-of-experts layers are not computed" },
    Refused { key: "num_experts", harmless: Value::is_null, what: "mixture-of-experts layers are not computed" },
    Refused { key: "embedding_multiplier", harmless: null_or_one, what: "scaled embeddings are not computed" },
    Refused { key: "logits_scaling", harmless: null_or_one, what: "logit scaling is not computed" },
    Refused { key: "residual_multiplier", harmless: null_or_one, what: "scaled residuals are not computed" },
    Refused { key: "attention_multiplier", harmless: Value::is_null, what: "a custom attention scale is not computed" },
    Refused { key: "hidden_dropout", harmless: null_or_zero, what: "hidden-state dropout is not computed" },
    Refused { key: "resid_pdrop", harmless: null_or_zero, what: "residual dropout is not computed" },
    Refused { key: "embd_pdrop", harmless: null_or_zero, what: "embedding dropout is not computed" },
    Refused { key: "auto_map", harmless: never, what: "the model needs its own Python code (auto_map); its computation is unknown to tunescope" },
];

/// Reads a `config.json` object, tracking which keys were used and where values came from.
pub struct KeyReader<'a> {
    obj: &'a Map<String, Value>,
    /// Prefix for messages about nested objects (`text_config.`).
    path: String,
    /// Name of the transformers config class whose defaults fill in absent keys.
    family: String,
    used: RefCell<BTreeSet<String>>,
    sources: RefCell<Vec<ValueSource>>,
}

impl<'a> KeyReader<'a> {
    /// A reader over `obj`; `family` names whose defaults apply (`LlamaConfig`).
    pub fn new(obj: &'a Map<String, Value>, path: &str, family: &str) -> Self {
        Self {
            obj,
            path: path.to_string(),
            family: family.to_string(),
            used: RefCell::default(),
            sources: RefCell::default(),
        }
    }

    /// The underlying object.
    pub fn object(&self) -> &'a Map<String, Value> {
        self.obj
    }

    /// Marks keys as used (read by code outside the reader).
    pub fn mark(&self, keys: &[&str]) {
        let mut used = self.used.borrow_mut();
        for key in keys {
            used.insert(key.to_string());
        }
    }

    /// The non-null value of `key`, marking it used.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.mark(&[key]);
        self.obj.get(key).filter(|v| !v.is_null())
    }

    /// Records where a value came from.
    pub fn record(&self, name: &str, value: impl std::fmt::Display, source: &str, fallback: bool) {
        self.sources.borrow_mut().push(ValueSource {
            name: name.to_string(),
            value: value.to_string(),
            source: source.to_string(),
            fallback,
        });
    }

    fn key_name(&self, key: &str) -> String {
        format!("{}{key}", self.path)
    }

    fn key_source(&self, key: &str) -> String {
        format!("config.json `{}`", self.key_name(key))
    }

    fn default_note(&self, key: &str) -> String {
        format!(
            "default of transformers' {} (no `{}`)",
            self.family,
            self.key_name(key)
        )
    }

    fn as_usize(&self, key: &str, v: &Value) -> Result<usize> {
        v.as_u64().map(|n| n as usize).with_context(|| {
            format!(
                "key `{}` must be a non-negative integer, got {v}",
                self.key_name(key)
            )
        })
    }

    /// The value of `key` read by `parse` (which names what it expects), else `default`;
    /// either way recorded with its source.
    fn value_or<T: std::fmt::Display>(
        &self,
        key: &str,
        default: T,
        parse: impl Fn(&Value) -> Option<T>,
        expected: &str,
    ) -> Result<T> {
        match self.get(key) {
            Some(v) => {
                let x = parse(v).with_context(|| {
                    format!("key `{}` must be {expected}, got {v}", self.key_name(key))
                })?;
                self.record(key, &x, &self.key_source(key), false);
                Ok(x)
            }
            None => {
                self.record(key, &default, &self.default_note(key), true);
                Ok(default)
            }
        }
    }

    /// An integer, else the family default (recorded as a fallback).
    pub fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        self.value_or(
            key,
            default,
            |v| v.as_u64().map(|n| n as usize),
            "a non-negative integer",
        )
    }

    /// An optional integer (absent stays absent; nothing is assumed).
    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        self.get(key).map(|v| self.as_usize(key, v)).transpose()
    }

    /// A number, else the family default.
    pub fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        self.value_or(key, default, Value::as_f64, "a number")
    }

    /// A boolean, else the family default.
    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        self.value_or(key, default, Value::as_bool, "true or false")
    }

    /// A string, else the family default.
    pub fn str_or(&self, key: &str, default: &str) -> Result<String> {
        self.value_or(
            key,
            default.to_string(),
            |v| v.as_str().map(String::from),
            "a string",
        )
    }

    /// Checks every key the reader did not use: inert keys pass, refused keys with a value that
    /// would change the computation are an error, anything else is returned as a warning.
    pub fn finish(self, inert_here: &[&str]) -> Result<(Vec<ValueSource>, Vec<String>)> {
        let used = self.used.into_inner();
        let mut warnings = Vec::new();
        for (key, value) in self.obj {
            if used.contains(key)
                || INERT.contains(&key.as_str())
                || inert_here.contains(&key.as_str())
            {
                continue;
            }
            if let Some(refused) = REFUSED.iter().find(|r| r.key == key) {
                if (refused.harmless)(value) {
                    continue;
                }
                bail!(
                    "key `{}{key}` = {value}: {}; tunescope refuses rather than compute a different model",
                    self.path,
                    refused.what
                );
            }
            warnings.push(format!(
                "config.json key `{}{key}` is unknown to tunescope and was not used (value {value})",
                self.path
            ));
        }
        Ok((self.sources.into_inner(), warnings))
    }
}
