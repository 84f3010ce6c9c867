//! Rotary position embeddings as transformers computes them (`modeling_rope_utils.py`): the base
//! frequency and the scaling types default, linear, dynamic (NTK), llama3 and yarn, read from
//! either config generation (`rope_parameters`, or top-level `rope_theta`/`rope_scaling`).

use super::rope_scaling::{describe, scaling_from};
pub use super::rope_types::*;
use anyhow::{bail, Context, Result};
use serde_json::{Map, Value};

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
