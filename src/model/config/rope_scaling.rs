//! One rope parameter set read into a [`RopeScaling`] (each type's keys, checked), and the
//! values `inspect` shows for it.

use anyhow::{bail, Context, Result};
use serde_json::{Map, Value};

use super::rope_types::*;

/// The scaling described by one parameter set (`None` for the default type).
pub(super) fn scaling_from(
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
pub(super) fn describe(
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
