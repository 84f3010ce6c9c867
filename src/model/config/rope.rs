//! Rotary position embeddings as transformers computes them (`modeling_rope_utils.py`): the base
//! frequency and the scaling types default, linear, dynamic (NTK), llama3 and yarn, read from
//! either config generation (`rope_parameters`, or top-level `rope_theta`/`rope_scaling`).

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Llama-3 style frequency scaling of rotary embeddings (`rope_type: llama3`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Llama3RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

/// YaRN scaling (`rope_type: yarn`), with the attention factor already resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct YarnRopeScaling {
    pub factor: f64,
    pub original_max_position_embeddings: usize,
    pub beta_fast: f64,
    pub beta_slow: f64,
    /// Multiplies cos and sin (transformers' `attention_scaling`).
    pub attention_factor: f64,
    /// Whether the correction range is rounded outwards to whole dimensions.
    pub truncate: bool,
}

/// A rope scaling type other than the default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rope_type", rename_all = "lowercase")]
pub enum RopeScaling {
    /// Positions divided by `factor` (inverse frequencies divided by it).
    Linear {
        factor: f64,
    },
    /// Dynamic NTK: past `max_position_embeddings` the base grows with the sequence length.
    Dynamic {
        factor: f64,
        max_position_embeddings: usize,
    },
    Llama3(Llama3RopeScaling),
    Yarn(YarnRopeScaling),
}

/// Rope types tunescope computes.
pub const ROPE_TYPES: &[&str] = &["default", "linear", "dynamic", "llama3", "yarn"];

/// Keys every rope parameter set may hold.
const COMMON_KEYS: &[&str] = &["rope_type", "type", "rope_theta", "partial_rotary_factor"];
const FACTOR_KEYS: &[&str] = &["factor"];
const LLAMA3_KEYS: &[&str] = &[
    "factor",
    "low_freq_factor",
    "high_freq_factor",
    "original_max_position_embeddings",
];
const YARN_KEYS: &[&str] = &[
    "factor",
    "original_max_position_embeddings",
    "beta_fast",
    "beta_slow",
    "attention_factor",
    "mscale",
    "mscale_all_dim",
    "truncate",
];

/// The share of each head that rotary embeddings turn (`partial_rotary_factor`, top level or in
/// the rope parameters; 1 when absent).
pub fn partial_rotary_factor(obj: &Map<String, Value>) -> Result<f64> {
    let mut found = Vec::new();
    if let Some(v) = obj.get("partial_rotary_factor").filter(|v| !v.is_null()) {
        found.push(number(v, "partial_rotary_factor")?);
    }
    if let Some(params) = obj.get("rope_parameters").and_then(Value::as_object) {
        let sets: Vec<&Map<String, Value>> = if params.values().all(Value::is_object) {
            params.values().filter_map(Value::as_object).collect()
        } else {
            vec![params]
        };
        for set in sets {
            if let Some(v) = set.get("partial_rotary_factor").filter(|v| !v.is_null()) {
                found.push(number(v, "rope_parameters.partial_rotary_factor")?);
            }
        }
    }
    match found.split_first() {
        None => Ok(1.0),
        Some((first, rest)) if rest.iter().all(|f| f == first) => Ok(*first),
        Some(_) => bail!("`partial_rotary_factor` is given more than once with different values"),
    }
}

/// transformers' `default_theta` for most families.
pub const DEFAULT_THETA: f64 = 10_000.0;

/// The parsed rope settings: base and optional scaling.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeSettings {
    pub theta: f64,
    pub scaling: Option<RopeScaling>,
    /// Where the base came from, for `inspect` (e.g. "rope_parameters.rope_theta").
    pub theta_source: String,
    /// Every scaling parameter in use, with where it came from.
    pub params: Vec<RopeParam>,
}

/// One resolved scaling parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeParam {
    pub name: &'static str,
    pub value: String,
    /// The key it was read from, or how transformers derives or defaults it.
    pub source: String,
    /// True when no key gave it.
    pub fallback: bool,
}

/// Rope settings of a model: one set for every layer, or (Gemma 3) one for full-attention layers
/// and another for sliding-window layers.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerRope {
    /// Full-attention layers, and every layer when `sliding` is `None`.
    pub global: RopeSettings,
    /// Sliding-window layers, when they differ.
    pub sliding: Option<RopeSettings>,
}

/// How a family reads a second, local rope (Gemma 3: `rope_local_base_freq` in transformers-4
/// files, or a `sliding_attention` entry of `rope_parameters`).
#[derive(Debug, Clone, Copy)]
pub struct LocalRope {
    /// transformers-4 key of the local base.
    pub legacy_key: &'static str,
    pub default_theta: f64,
}

/// Reads the rope settings of every layer type. `layer_types` names each layer's attention type;
/// `default_theta` is the family's base when none is given; `local` allows a separate rope for
/// sliding layers. Differing per-type settings are refused for families without one.
pub fn parse_layers(
    obj: &Map<String, Value>,
    max_position_embeddings: usize,
    layer_types: &[String],
    default_theta: f64,
    local: Option<LocalRope>,
) -> Result<LayerRope> {
    let sliding_used = layer_types.iter().any(|t| t == "sliding_attention");
    let keyed = obj
        .get("rope_parameters")
        .and_then(Value::as_object)
        .filter(|o| !o.is_empty() && o.values().all(Value::is_object));
    match (keyed, local) {
        (Some(sets), Some(_)) if sliding_used && sets.contains_key("sliding_attention") => {
            let global_types = vec!["full_attention".to_string()];
            let global = parse(obj, max_position_embeddings, &global_types, default_theta)?;
            let sliding_types = vec!["sliding_attention".to_string()];
            let sliding = parse(obj, max_position_embeddings, &sliding_types, default_theta)?;
            let sliding = (sliding != global).then_some(sliding);
            Ok(LayerRope { global, sliding })
        }
        (None, Some(local)) if sliding_used => {
            let global = parse(obj, max_position_embeddings, layer_types, default_theta)?;
            // transformers 4: the scaling applies to global layers only; local layers take
            // their own base without scaling.
            let (theta, theta_source) = match obj.get(local.legacy_key).filter(|v| !v.is_null()) {
                Some(v) => (number(v, local.legacy_key)?, local.legacy_key.to_string()),
                None => (
                    local.default_theta,
                    format!(
                        "default (no `{}`; transformers' default_theta local)",
                        local.legacy_key
                    ),
                ),
            };
            let sliding = RopeSettings {
                theta,
                scaling: None,
                theta_source,
                params: Vec::new(),
            };
            let sliding = (sliding != global).then_some(sliding);
            Ok(LayerRope { global, sliding })
        }
        _ => Ok(LayerRope {
            global: parse(obj, max_position_embeddings, layer_types, default_theta)?,
            sliding: None,
        }),
    }
}

/// Reads the rope settings from a config object. `layer_types` names the attention type of every
/// layer (used to pick a per-layer-type `rope_parameters` entry).
pub fn parse(
    obj: &Map<String, Value>,
    max_position_embeddings: usize,
    layer_types: &[String],
    default_theta: f64,
) -> Result<RopeSettings> {
    let params = obj.get("rope_parameters").filter(|v| !v.is_null());
    // Phi-3 style: the pretraining length outside the rope parameters takes priority.
    let top_original_max = match obj.get("original_max_position_embeddings") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().with_context(|| {
            format!("key `original_max_position_embeddings` must be a positive integer, got {v}")
        })? as usize),
    };
    let legacy_theta = obj.get("rope_theta").filter(|v| !v.is_null());
    let legacy_scaling = obj.get("rope_scaling").filter(|v| !v.is_null());
    if let Some(params) = params {
        let (set, prefix) = select_parameter_set(params, layer_types)?;
        let set = set
            .as_object()
            .with_context(|| format!("key `{prefix}` must be an object, got {set}"))?;
        let (theta, theta_source) = match set.get("rope_theta").filter(|v| !v.is_null()) {
            Some(v) => (
                number(v, &format!("{prefix}.rope_theta"))?,
                format!("{prefix}.rope_theta"),
            ),
            None => match legacy_theta {
                Some(v) => (number(v, "rope_theta")?, "rope_theta".to_string()),
                None => (
                    default_theta,
                    format!("default (no `{prefix}.rope_theta`; transformers' default_theta)"),
                ),
            },
        };
        if let (Some(top), true) = (legacy_theta, set.contains_key("rope_theta")) {
            let top = number(top, "rope_theta")?;
            if top != theta {
                bail!(
                    "`rope_theta` ({top}) and `{prefix}.rope_theta` ({theta}) disagree; remove one"
                );
            }
        }
        if legacy_scaling.is_some() {
            bail!("both `rope_parameters` and `rope_scaling` are set; keep only `rope_parameters` (transformers 5) or only `rope_scaling` (transformers 4)");
        }
        let scaling = scaling_from(set, &prefix, max_position_embeddings, top_original_max)?;
        let params = describe(scaling.as_ref(), set, &prefix, top_original_max.is_some());
        return Ok(RopeSettings {
            theta,
            scaling,
            theta_source,
            params,
        });
    }
    let (theta, theta_source) = match legacy_theta {
        Some(v) => (number(v, "rope_theta")?, "rope_theta".to_string()),
        None => (
            default_theta,
            "default (no `rope_theta` or `rope_parameters` in config.json)".to_string(),
        ),
    };
    let (scaling, params) = match legacy_scaling {
        None => (None, Vec::new()),
        Some(v) => {
            let set = v
                .as_object()
                .with_context(|| format!("key `rope_scaling` must be an object, got {v}"))?;
            let scaling = scaling_from(
                set,
                "rope_scaling",
                max_position_embeddings,
                top_original_max,
            )?;
            let params = describe(
                scaling.as_ref(),
                set,
                "rope_scaling",
                top_original_max.is_some(),
            );
            (scaling, params)
        }
    };
    Ok(RopeSettings {
        theta,
        scaling,
        theta_source,
        params,
    })
}

/// `rope_parameters` is either one parameter set or a map from layer type to parameter set.
fn select_parameter_set<'a>(
    params: &'a Value,
    layer_types: &[String],
) -> Result<(&'a Value, String)> {
    let obj = params
        .as_object()
        .with_context(|| format!("key `rope_parameters` must be an object, got {params}"))?;
    let keyed = !obj.is_empty() && obj.values().all(Value::is_object);
    if !keyed {
        return Ok((params, "rope_parameters".into()));
    }
    let mut used: Vec<&String> = layer_types.iter().collect();
    used.sort();
    used.dedup();
    if used.is_empty() {
        bail!(
            "`rope_parameters` is keyed by layer type ({}) but the config has no `layer_types`",
            keys_of(obj)
        );
    }
    let first = used[0];
    let set = obj.get(first).with_context(|| {
        format!(
            "`rope_parameters` has no entry for layer type `{first}` (it has {})",
            keys_of(obj)
        )
    })?;
    for other in &used[1..] {
        let other_set = obj.get(*other).with_context(|| {
            format!(
                "`rope_parameters` has no entry for layer type `{other}` (it has {})",
                keys_of(obj)
            )
        })?;
        if other_set != set {
            bail!(
                "`rope_parameters` differs between layer types `{first}` and `{other}`: per-layer-type rotary settings are not computed by tunescope's decoder"
            );
        }
    }
    Ok((set, format!("rope_parameters.{first}")))
}

fn keys_of(obj: &Map<String, Value>) -> String {
    obj.keys()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

fn number(v: &Value, key: &str) -> Result<f64> {
    v.as_f64()
        .with_context(|| format!("key `{key}` must be a number, got {v}"))
}

/// The scaling described by one parameter set (`None` for the default type).
fn scaling_from(
    set: &Map<String, Value>,
    prefix: &str,
    max_position_embeddings: usize,
    top_original_max: Option<usize>,
) -> Result<Option<RopeScaling>> {
    let get = |key: &str| set.get(key).filter(|v| !v.is_null());
    let num = |key: &str| -> Result<f64> {
        let v = get(key).with_context(|| format!("key `{prefix}.{key}` is missing"))?;
        number(v, &format!("{prefix}.{key}"))
    };
    let opt_num = |key: &str| -> Result<Option<f64>> {
        get(key)
            .map(|v| number(v, &format!("{prefix}.{key}")))
            .transpose()
    };
    let kind_value = get("rope_type").or_else(|| get("type"));
    let kind = match kind_value {
        None => "default",
        Some(v) => v
            .as_str()
            .with_context(|| format!("key `{prefix}.rope_type` must be a string, got {v}"))?,
    };
    let allowed: &[&str] = match kind {
        "default" => &[],
        "linear" | "dynamic" => FACTOR_KEYS,
        "llama3" => LLAMA3_KEYS,
        "yarn" => YARN_KEYS,
        other => bail!(
            "`{prefix}.rope_type` `{other}` is not computed by tunescope; supported: {}",
            ROPE_TYPES.join(", ")
        ),
    };
    for key in set.keys().map(String::as_str) {
        if COMMON_KEYS.contains(&key) || allowed.contains(&key) || get(key).is_none() {
            continue;
        }
        // `original_max_position_embeddings` rides along with dynamic sets in some configs;
        // transformers ignores it there, as tunescope does.
        if key == "original_max_position_embeddings" && kind == "dynamic" {
            continue;
        }
        if [LLAMA3_KEYS, YARN_KEYS]
            .iter()
            .any(|keys| keys.contains(&key))
        {
            bail!("key `{prefix}.{key}` does not apply to rope_type `{kind}`; remove it or fix the type");
        }
        bail!("key `{prefix}.{key}` is not computed by tunescope's rotary embedding");
    }
    let factor = || -> Result<f64> {
        let f = num("factor")?;
        if f < 1.0 {
            bail!("`{prefix}.factor` must be at least 1, got {f}");
        }
        Ok(f)
    };
    // As transformers' `standardize_rope_params`: a top-level value wins, then the set's own,
    // then `max_position_embeddings`.
    let original_max = || -> Result<usize> {
        if let Some(n) = top_original_max {
            return Ok(n);
        }
        match opt_num("original_max_position_embeddings")? {
            Some(n) if n >= 1.0 && n.fract() == 0.0 => Ok(n as usize),
            Some(n) => bail!(
                "`{prefix}.original_max_position_embeddings` must be a positive integer, got {n}"
            ),
            None => Ok(max_position_embeddings),
        }
    };
    Ok(match kind {
        "default" => None,
        "linear" => Some(RopeScaling::Linear { factor: factor()? }),
        // transformers scales from `max_position_embeddings` whatever else the set holds.
        "dynamic" => Some(RopeScaling::Dynamic {
            factor: factor()?,
            max_position_embeddings,
        }),
        "llama3" => Some(RopeScaling::Llama3(Llama3RopeScaling {
            factor: factor()?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: original_max()?,
        })),
        "yarn" => {
            let original = original_max()?;
            let factor = match opt_num("factor")? {
                Some(f) => f,
                None => max_position_embeddings as f64 / original as f64,
            };
            let attention_factor = match opt_num("attention_factor")? {
                Some(a) => a,
                None => {
                    let mscale = opt_num("mscale")?;
                    let mscale_all_dim = opt_num("mscale_all_dim")?;
                    match (mscale, mscale_all_dim) {
                        (Some(m), Some(all)) if m != 0.0 && all != 0.0 => {
                            yarn_mscale(factor, m) / yarn_mscale(factor, all)
                        }
                        _ => yarn_mscale(factor, 1.0),
                    }
                }
            };
            let truncate = match get("truncate") {
                None => true,
                Some(v) => v
                    .as_bool()
                    .with_context(|| format!("key `{prefix}.truncate` must be true or false"))?,
            };
            Some(RopeScaling::Yarn(YarnRopeScaling {
                factor,
                original_max_position_embeddings: original,
                beta_fast: opt_num("beta_fast")?.unwrap_or(32.0),
                beta_slow: opt_num("beta_slow")?.unwrap_or(1.0),
                attention_factor,
                truncate,
            }))
        }
        _ => unreachable!("checked above"),
    })
}

/// The parameters of `scaling` as `inspect` lists them: each with its key, or with the rule
/// transformers uses when the key is absent.
fn describe(
    scaling: Option<&RopeScaling>,
    set: &Map<String, Value>,
    prefix: &str,
    top_original_max: bool,
) -> Vec<RopeParam> {
    let given = |key: &str| set.get(key).is_some_and(|v| !v.is_null());
    let param = |name: &'static str, value: String, fallback_rule: &str| {
        let (source, fallback) = if name == "original_max_position_embeddings" && top_original_max {
            (
                "config.json `original_max_position_embeddings`".to_string(),
                false,
            )
        } else if given(name) {
            (format!("{prefix}.{name}"), false)
        } else {
            (fallback_rule.to_string(), true)
        };
        RopeParam {
            name,
            value,
            source,
            fallback,
        }
    };
    let from_max = "default: max_position_embeddings (transformers' standardize_rope_params)";
    match scaling {
        None => Vec::new(),
        Some(RopeScaling::Linear { factor }) => vec![param("factor", factor.to_string(), "")],
        Some(RopeScaling::Dynamic {
            factor,
            max_position_embeddings,
        }) => vec![
            param("factor", factor.to_string(), ""),
            RopeParam {
                name: "dynamic from length",
                value: max_position_embeddings.to_string(),
                source: "max_position_embeddings (transformers scales past it, whatever else the set holds)".into(),
                fallback: true,
            },
        ],
        Some(RopeScaling::Llama3(l)) => vec![
            param("factor", l.factor.to_string(), ""),
            param("low_freq_factor", l.low_freq_factor.to_string(), ""),
            param("high_freq_factor", l.high_freq_factor.to_string(), ""),
            param(
                "original_max_position_embeddings",
                l.original_max_position_embeddings.to_string(),
                from_max,
            ),
        ],
        Some(RopeScaling::Yarn(y)) => vec![
            param(
                "factor",
                y.factor.to_string(),
                "derived: max_position_embeddings / original_max_position_embeddings",
            ),
            param(
                "original_max_position_embeddings",
                y.original_max_position_embeddings.to_string(),
                from_max,
            ),
            param("beta_fast", y.beta_fast.to_string(), "default 32 (transformers)"),
            param("beta_slow", y.beta_slow.to_string(), "default 1 (transformers)"),
            param(
                "attention_factor",
                format!("{:.6}", y.attention_factor),
                if given("mscale") && given("mscale_all_dim") {
                    "derived: mscale(factor, mscale) / mscale(factor, mscale_all_dim)"
                } else {
                    "derived: 0.1·ln(factor) + 1"
                },
            ),
            param("truncate", y.truncate.to_string(), "default true (transformers)"),
        ],
    }
}

fn yarn_mscale(scale: f64, mscale: f64) -> f64 {
    if scale <= 1.0 {
        1.0
    } else {
        0.1 * mscale * scale.ln() + 1.0
    }
}

pub use super::rope_freq::{attention_scaling, inv_freq};
