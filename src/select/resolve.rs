//! Resolving a [`TrainableSpec`] against a [`ModuleMap`].

use std::collections::{BTreeSet, HashSet};

use anyhow::{anyhow, bail, Result};

use super::patterns::{closest, quoted_list, NamePattern};
use super::{is_vision_side, Selection, TrainableSpec};
use crate::model::module_map::{ModuleMap, ParamEntry, ParamKind};

/// Kind names accepted in `kinds:` (besides the aliases).
pub const KIND_NAMES: &[&str] = &[
    "q",
    "k",
    "v",
    "o",
    "q_norm",
    "k_norm",
    "gate",
    "up",
    "down",
    "embed",
    "lm_head",
    "norm",
    "projector",
    "vision",
    "other",
];

/// Aliases accepted in `kinds:`, with what they stand for.
pub const KIND_ALIASES: &[(&str, &str)] = &[
    ("attn", "q k v o"),
    ("mlp", "gate up down"),
    (
        "llm",
        "every language-model parameter: all kinds but vision and projector",
    ),
    ("merger", "projector (Qwen2.5-VL's patch merger)"),
];

/// The kinds a `kinds:` entry stands for; errors on an unknown name, suggesting the closest.
pub fn expand_kind(term: &str) -> Result<Vec<ParamKind>> {
    use ParamKind::*;
    let lower = term.trim().to_ascii_lowercase();
    Ok(match lower.as_str() {
        "attn" => vec![Q, K, V, O],
        "mlp" => vec![Gate, Up, Down],
        "merger" => vec![Projector],
        "llm" => ParamKind::ALL
            .into_iter()
            .filter(|k| !is_vision_side(*k))
            .collect(),
        other => match ParamKind::parse(other) {
            Some(kind) => vec![kind],
            None => return Err(unknown_kind(term, &lower)),
        },
    })
}

/// The error for a name that is neither a kind nor an alias.
fn unknown_kind(term: &str, lower: &str) -> anyhow::Error {
    let names = KIND_NAMES
        .iter()
        .copied()
        .chain(KIND_ALIASES.iter().map(|(a, _)| *a));
    let suggestion = closest(lower, names, 1)
        .first()
        .map(|b| format!(" (did you mean `{b}`?)"))
        .unwrap_or_default();
    let aliases: Vec<String> = KIND_ALIASES
        .iter()
        .map(|(a, m)| format!("`{a}` ({m})"))
        .collect();
    anyhow!(
        "trainable.kinds: unknown kind `{term}`{suggestion}; valid kinds are {}; aliases are {}",
        quoted_list(KIND_NAMES.iter().copied()),
        aliases.join(", "),
    )
}

/// The last meaningful segment of a parameter name (`q_proj` in `...q_proj.weight`).
fn module_segment(name: &str) -> &str {
    let stem = name
        .strip_suffix(".weight")
        .or_else(|| name.strip_suffix(".bias"))
        .unwrap_or(name);
    stem.rsplit('.').next().unwrap_or(stem)
}

/// Resolves `spec` against `map` into the set of trainable parameter names.
pub fn resolve(spec: &TrainableSpec, map: &ModuleMap) -> Result<Selection> {
    // Kinds: each entry may itself hold several names separated by spaces or commas.
    let mut terms: Vec<(String, Vec<ParamKind>)> = Vec::new();
    for entry in &spec.kinds {
        let parts: Vec<&str> = entry
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .collect();
        if parts.is_empty() {
            bail!("trainable.kinds: an entry is empty; name kinds such as q, k, v, o or an alias (attn, mlp, llm)");
        }
        for part in parts {
            terms.push((part.to_string(), expand_kind(part)?));
        }
    }

    // Layers: counted over the decoder stack only.
    let decoder_layers = map
        .params
        .iter()
        .filter(|p| !is_vision_side(p.kind))
        .filter_map(|p| p.layer)
        .max()
        .map_or(0, |l| l + 1);
    let allowed = spec
        .layers
        .as_ref()
        .map(|l| l.resolve(decoder_layers))
        .transpose()?;
    let passes_layer = |p: &ParamEntry| match (p.layer, &allowed) {
        (Some(layer), Some(allowed)) if !is_vision_side(p.kind) => allowed.contains(&layer),
        _ => true,
    };

    let includes = spec
        .include
        .iter()
        .map(|t| NamePattern::compile(t, "include"))
        .collect::<Result<Vec<_>>>()?;
    let excludes = spec
        .exclude
        .iter()
        .map(|t| NamePattern::compile(t, "exclude"))
        .collect::<Result<Vec<_>>>()?;

    let mut selected: BTreeSet<String> = BTreeSet::new();
    for (term, kinds) in &terms {
        let mut matched = false;
        for p in map
            .params
            .iter()
            .filter(|p| kinds.contains(&p.kind) && passes_layer(p))
        {
            matched = true;
            selected.insert(p.name.clone());
        }
        if !matched {
            return Err(unmatched_kind(term, kinds, spec, map));
        }
    }

    for (pattern, key) in includes
        .iter()
        .map(|p| (p, "include"))
        .chain(excludes.iter().map(|p| (p, "exclude")))
    {
        let mut any = false;
        for p in map.params.iter().filter(|p| pattern.is_match(&p.name)) {
            any = true;
            if key == "include" {
                selected.insert(p.name.clone());
            }
        }
        if !any {
            let near = closest(&pattern.text, map.params.iter().map(|p| p.name.as_str()), 3);
            bail!(
                "trainable.{key}: pattern `{}` matches no parameter; closest parameter names: {} \
                 (globs match the whole dotted name; prefix `re:` for a regex)",
                pattern.text,
                quoted_list(near)
            );
        }
    }
    selected.retain(|name| !excludes.iter().any(|p| p.is_match(name)));

    // Biases follow their weights (or are dropped), unless a pattern names them.
    let all_names: HashSet<&str> = map.params.iter().map(|p| p.name.as_str()).collect();
    for p in map.params.iter().filter(|p| p.is_bias) {
        if excludes.iter().any(|x| x.is_match(&p.name))
            || includes.iter().any(|x| x.is_match(&p.name))
        {
            continue;
        }
        if !spec.biases {
            selected.remove(&p.name);
            continue;
        }
        let weight = format!("{}.weight", p.name.strip_suffix(".bias").unwrap_or(&p.name));
        if all_names.contains(weight.as_str()) {
            if selected.contains(&weight) {
                selected.insert(p.name.clone());
            } else {
                selected.remove(&p.name);
            }
        }
    }

    if selected.is_empty() {
        let hint = if spec.kinds.is_empty() && spec.include.is_empty() {
            "name `kinds` (e.g. [attn]) or `include` patterns, or use a preset"
        } else {
            "the `exclude` patterns (or `biases: false`) removed everything the kinds and includes chose"
        };
        bail!("the trainable selection is empty: {hint}");
    }
    Ok(Selection { names: selected })
}

/// The error for a kind (or alias) that matches no parameter.
fn unmatched_kind(
    term: &str,
    kinds: &[ParamKind],
    spec: &TrainableSpec,
    map: &ModuleMap,
) -> anyhow::Error {
    let has = |k: ParamKind| map.params.iter().any(|p| p.kind == k);
    if kinds == [ParamKind::LmHead] && !has(ParamKind::LmHead) && has(ParamKind::Embed) {
        return anyhow!(
            "trainable.kinds: `{term}` matches no parameter: this model ties its output head to \
             the input embeddings (there is no lm_head tensor); use `embed` to train the shared matrix"
        );
    }
    if kinds.iter().any(|k| has(*k)) {
        let layers: BTreeSet<usize> = map
            .params
            .iter()
            .filter(|p| kinds.contains(&p.kind))
            .filter_map(|p| p.layer)
            .collect();
        let shown = spec
            .layers
            .as_ref()
            .map(|l| l.to_string())
            .unwrap_or_default();
        let at: Vec<String> = layers.iter().map(|l| l.to_string()).collect();
        return anyhow!(
            "trainable.kinds: `{term}` matches no parameter in layers {shown:?}; its parameters are \
             in layers {}; widen `layers`",
            at.join(",")
        );
    }
    let present: Vec<&str> = ParamKind::ALL
        .into_iter()
        .filter(|k| has(*k))
        .map(ParamKind::as_str)
        .collect();
    let segments: Vec<&str> = map.params.iter().map(|p| module_segment(&p.name)).collect();
    let mut scored: Vec<(usize, usize)> = segments
        .iter()
        .enumerate()
        .map(|(i, s)| (strsim::levenshtein(&term.to_ascii_lowercase(), s), i))
        .collect();
    scored.sort();
    let mut near: Vec<&str> = Vec::new();
    for (_, i) in scored {
        let name = map.params[i].name.as_str();
        if near.len() == 3 {
            break;
        }
        if !near.contains(&name) {
            near.push(name);
        }
    }
    anyhow!(
        "trainable.kinds: `{term}` matches no parameter of this model; it has kinds {}; \
         closest parameter names: {}",
        quoted_list(present),
        quoted_list(near)
    )
}
