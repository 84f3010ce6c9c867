//! Selection: which parameters train. A recipe's `trainable:` section ([`TrainableSpec`]) is
//! resolved against a model's [`ModuleMap`] into a [`Selection`] of parameter names.
//!
//! Resolution, in order:
//! 1. every parameter whose kind is among the expanded `kinds` (a bias has its weight's kind)
//!    and which either has no layer or sits in a layer passing `layers`;
//! 2. plus every parameter matched by an `include` pattern;
//! 3. minus every parameter matched by an `exclude` pattern;
//! 4. biases: with `biases: true` a bias follows its weight (added when the weight is
//!    selected, dropped when it is not); with `biases: false` biases are dropped. Either way a
//!    bias named by an `include` pattern stays, and one named by an `exclude` pattern stays out.
//!
//! The `layers` filter counts decoder layers only: vision-tower and projector parameters
//! selected by kind are taken whole (select parts of them with `include`/`exclude`).

pub mod compact;
pub mod layers;
pub mod patterns;
mod resolve;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::{Deserialize, Deserializer, Serialize};

use crate::model::module_map::{ModuleMap, ParamKind};

pub use layers::{LayerItem, LayerSpec};
pub use resolve::{expand_kind, resolve, KIND_ALIASES, KIND_NAMES};

/// Which parameters train; a recipe's `trainable:` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainableSpec {
    /// Kinds: q k v o gate up down embed lm_head norm projector vision (and `other`), plus
    /// aliases `attn` (= q k v o), `mlp` (= gate up down), `llm` (every language-model
    /// parameter: all kinds except vision and projector, `other` included). In YAML either a
    /// list or one string of names separated by spaces or commas.
    #[serde(deserialize_with = "kinds_from_yaml")]
    pub kinds: Vec<String>,
    /// Layer filter for layered parameters selected by kind: None = all layers. A string
    /// (`"all"`, `"0..8"`, `"4.."`, `"..4"`, `"-4.."`, `"-4..-1"`, `"3"`, `"0,2,5..7"`) or a
    /// list of integers (`[0, 1, 5]`); see [`LayerSpec`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layers: Option<LayerSpec>,
    /// Extra parameters by name: a glob (`*` `?` `[..]`, matched against the whole dotted
    /// name) or, prefixed `re:`, a regex that must match the whole name.
    pub include: Vec<String>,
    /// Parameters to drop after the above, same pattern syntax.
    pub exclude: Vec<String>,
    /// Whether a bias follows its weight (default true). When false, biases are never selected
    /// unless an `include` pattern names them.
    pub biases: bool,
}

impl Default for TrainableSpec {
    fn default() -> Self {
        Self {
            kinds: Vec::new(),
            layers: None,
            include: Vec::new(),
            exclude: Vec::new(),
            biases: true,
        }
    }
}

impl TrainableSpec {
    /// A spec selecting `kinds` in every layer, biases following their weights.
    pub fn from_kinds(kinds: &[&str]) -> Self {
        Self {
            kinds: kinds.iter().map(|k| k.to_string()).collect(),
            ..Self::default()
        }
    }
}

fn kinds_from_yaml<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Kinds {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Kinds::deserialize(deserializer)? {
        Kinds::One(text) => text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        Kinds::Many(list) => list,
    })
}

/// The study's named recipes.
pub const PRESETS: &[&str] = &[
    "sa-proj",
    "sa-qkv",
    "mlp",
    "mlp-gate-up",
    "mlp-down",
    "sa-proj+gate-up",
    "full-llm",
    "projector",
    "vision",
];

/// The trainable spec of a named preset (see [`PRESETS`]; `merger` is `projector` by
/// Qwen2.5-VL's name); all layers, biases following.
pub fn preset(name: &str) -> Option<TrainableSpec> {
    let kinds: &[&str] = match name {
        "sa-proj" => &["q", "k", "v", "o"],
        "sa-qkv" => &["q", "k", "v"],
        "mlp" => &["gate", "up", "down"],
        "mlp-gate-up" => &["gate", "up"],
        "mlp-down" => &["down"],
        "sa-proj+gate-up" => &["q", "k", "v", "o", "gate", "up"],
        "full-llm" => &["llm"],
        "projector" | "merger" => &["projector"],
        "vision" => &["vision"],
        _ => return None,
    };
    Some(TrainableSpec::from_kinds(kinds))
}

/// The resolved trainable set.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    pub names: BTreeSet<String>,
}

/// Whether a kind belongs to the vision side (outside the decoder's layer stack).
pub(crate) fn is_vision_side(kind: ParamKind) -> bool {
    matches!(kind, ParamKind::Vision | ParamKind::Projector)
}

impl Selection {
    /// Whether `name` trains.
    pub fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// Number of trainable parameters (tensors).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether nothing trains (never true for a selection returned by [`resolve`]).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    fn entries<'a>(
        &'a self,
        map: &'a ModuleMap,
    ) -> impl Iterator<Item = &'a crate::model::module_map::ParamEntry> {
        map.params.iter().filter(|p| self.names.contains(&p.name))
    }

    /// Trainable elements (names absent from `map` count nothing).
    pub fn trainable_numel(&self, map: &ModuleMap) -> usize {
        self.entries(map).map(|p| p.numel).sum()
    }

    /// Trainable elements over all elements, in 0..=1 (0 for an empty model).
    pub fn fraction(&self, map: &ModuleMap) -> f64 {
        let total = map.total();
        if total == 0 {
            0.0
        } else {
            self.trainable_numel(map) as f64 / total as f64
        }
    }

    /// Trainable elements per kind (biases counted with their weight's kind); kinds with
    /// nothing trainable are absent.
    pub fn numel_by_kind(&self, map: &ModuleMap) -> BTreeMap<ParamKind, usize> {
        let mut out = BTreeMap::new();
        for p in self.entries(map) {
            *out.entry(p.kind).or_insert(0) += p.numel;
        }
        out
    }

    /// Trainable elements per layer index, like [`ModuleMap::totals_by_layer`] (every
    /// parameter with a layer index); layers with nothing trainable are absent.
    pub fn numel_by_layer(&self, map: &ModuleMap) -> BTreeMap<usize, usize> {
        let mut out = BTreeMap::new();
        for p in self.entries(map) {
            if let Some(layer) = p.layer {
                *out.entry(layer).or_insert(0) += p.numel;
            }
        }
        out
    }

    /// The lowest decoder layer holding a trainable parameter: where backpropagation can stop.
    ///
    /// `None` when an embedding, vision or projector parameter is trainable (gradients must
    /// then reach the bottom of the graph), or when no trainable parameter sits in a decoder
    /// layer (only the final norm / lm_head train, above every layer).
    pub fn lowest_layer(&self, map: &ModuleMap) -> Option<usize> {
        let mut lowest = None;
        for p in self.entries(map) {
            if p.kind == ParamKind::Embed || is_vision_side(p.kind) {
                return None;
            }
            if let Some(layer) = p.layer {
                lowest = Some(lowest.map_or(layer, |l: usize| l.min(layer)));
            }
        }
        lowest
    }

    /// The names as a hash set (what [`crate::model::Model::decoder`] takes).
    pub fn to_hash_set(&self) -> HashSet<String> {
        self.names.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests;
