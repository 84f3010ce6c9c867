//! The reverse of resolution: a compact [`TrainableSpec`] that selects exactly a given set of
//! parameter names (used when the workbench's grid edits the selection).

use std::collections::{BTreeMap, BTreeSet};

use super::{resolve, LayerSpec, TrainableSpec};
use crate::model::module_map::{ModuleMap, ParamKind};

/// A spec whose resolution is exactly `names`: kinds plus one layer filter when the choice is
/// that regular, else per-kind regexes, else the names themselves.
pub fn spec_for(names: &BTreeSet<String>, map: &ModuleMap) -> TrainableSpec {
    let candidates = [by_kind(names, map), by_kind_regex(names, map)];
    for spec in candidates.into_iter().flatten() {
        if resolve(&spec, map).is_ok_and(|s| &s.names == names) {
            return spec;
        }
    }
    TrainableSpec {
        kinds: Vec::new(),
        include: names
            .iter()
            .map(|n| format!("re:{}", regex::escape(n)))
            .collect(),
        ..TrainableSpec::default()
    }
}

/// Kinds whose every parameter is selected in the same set of layers (and fully elsewhere).
fn by_kind(names: &BTreeSet<String>, map: &ModuleMap) -> Option<TrainableSpec> {
    let mut kinds: BTreeMap<ParamKind, (usize, usize)> = BTreeMap::new();
    let mut layer_sets: BTreeMap<ParamKind, BTreeSet<usize>> = BTreeMap::new();
    for p in &map.params {
        let entry = kinds.entry(p.kind).or_default();
        entry.0 += 1;
        if names.contains(&p.name) {
            entry.1 += 1;
            if let Some(l) = p.layer {
                layer_sets.entry(p.kind).or_default().insert(l);
            }
        }
    }
    let chosen: Vec<ParamKind> = kinds
        .iter()
        .filter(|(_, (_, sel))| *sel > 0)
        .map(|(k, _)| *k)
        .collect();
    if chosen.is_empty() {
        return None;
    }
    let layered: Vec<&BTreeSet<usize>> = chosen.iter().filter_map(|k| layer_sets.get(k)).collect();
    let layers = match layered.first() {
        Some(first) if layered.iter().all(|s| s == first) => {
            if first.len() == map.num_layers() {
                None
            } else {
                Some(LayerSpec::List(first.iter().map(|&l| l as i64).collect()))
            }
        }
        Some(_) => return None,
        None => None,
    };
    Some(TrainableSpec {
        kinds: chosen.iter().map(|k| k.as_str().to_string()).collect(),
        layers,
        ..TrainableSpec::default()
    })
}

/// One anchored regex per kind and layer set: `re:model\.layers\.(?:0|3)\..*\.q_proj\..*`.
fn by_kind_regex(names: &BTreeSet<String>, map: &ModuleMap) -> Option<TrainableSpec> {
    let mut per_kind: BTreeMap<(ParamKind, String), BTreeSet<usize>> = BTreeMap::new();
    let mut include = Vec::new();
    for p in map.params.iter().filter(|p| names.contains(&p.name)) {
        match p.layer {
            Some(layer) => {
                // The name with its layer index replaced: `model.layers.{}.self_attn.q_proj`.
                let module = p.name.rsplit_once('.').map_or(p.name.as_str(), |(m, _)| m);
                let shape = module.replacen(&format!(".{layer}."), ".{}.", 1);
                per_kind.entry((p.kind, shape)).or_default().insert(layer);
            }
            None => include.push(format!("re:{}", regex::escape(&p.name))),
        }
    }
    for ((_, shape), layers) in per_kind {
        let alternatives: Vec<String> = layers.iter().map(|l| l.to_string()).collect();
        let (head, tail) = shape.split_once("{}")?;
        include.push(format!(
            "re:{}(?:{}){}\\.(?:weight|bias)",
            regex::escape(head),
            alternatives.join("|"),
            regex::escape(tail)
        ));
    }
    include.sort();
    include.dedup();
    Some(TrainableSpec {
        kinds: Vec::new(),
        include,
        ..TrainableSpec::default()
    })
}
