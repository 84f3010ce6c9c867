//! The module map: every parameter with its kind and layer, grouped as a tree with
//! element counts summed at every level.

use std::collections::BTreeMap;

use serde::Serialize;

pub use super::param_kind::ParamKind;
use super::weights::WeightStore;

/// One parameter of the model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamEntry {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: String,
    pub numel: usize,
    /// Decoder layer index, when the parameter belongs to one.
    pub layer: Option<usize>,
    pub kind: ParamKind,
    /// True for a bias (its kind is the kind of the weight it belongs to).
    pub is_bias: bool,
}

impl ParamEntry {
    /// Display label of the kind, `bias-of-q` style for biases.
    pub fn kind_label(&self) -> String {
        if self.is_bias {
            format!("bias-of-{}", self.kind)
        } else {
            self.kind.to_string()
        }
    }
}

/// Classifies a Hugging Face parameter name into (kind, layer, is_bias).
pub fn classify(name: &str) -> (ParamKind, Option<usize>, bool) {
    // A part of a fused tensor (`…qkv_proj.weight[q]`) has the kind its part names.
    if let Some(tensor) = super::fused::fused_tensor_of(name) {
        let part = &name[tensor.len() + 1..name.len() - 1];
        if let Some(kind) = ParamKind::parse(part) {
            return (kind, layer_index(tensor), tensor.ends_with(".bias"));
        }
    }
    let is_bias = name.ends_with(".bias");
    let layer = layer_index(name);
    let has = |part: &str| name.split('.').any(|p| p == part);
    let kind = if name.contains("multi_modal_projector")
        || name.contains("mm_projector")
        || has("image_newline")
        || (has("visual") && has("merger"))
    {
        ParamKind::Projector
    } else if name.contains("vision_tower") || name.contains("vision_model") || has("visual") {
        ParamKind::Vision
    } else if has("q_norm") {
        ParamKind::QNorm
    } else if has("k_norm") {
        ParamKind::KNorm
    } else if has("q_proj") {
        ParamKind::Q
    } else if has("k_proj") {
        ParamKind::K
    } else if has("v_proj") {
        ParamKind::V
    } else if has("o_proj") {
        ParamKind::O
    } else if has("gate_proj") {
        ParamKind::Gate
    } else if has("up_proj") {
        ParamKind::Up
    } else if has("down_proj") {
        ParamKind::Down
    } else if has("embed_tokens") {
        ParamKind::Embed
    } else if has("lm_head") {
        ParamKind::LmHead
    } else if name
        .split('.')
        .any(|p| p.ends_with("norm") || p.ends_with("layernorm"))
    {
        ParamKind::Norm
    } else {
        ParamKind::Other
    };
    // Vision-tower encoder layers are not decoder layers.
    let layer = if matches!(kind, ParamKind::Vision | ParamKind::Projector) {
        None
    } else {
        layer
    };
    (kind, layer, is_bias)
}

fn layer_index(name: &str) -> Option<usize> {
    let parts: Vec<&str> = name.split('.').collect();
    parts
        .windows(2)
        .find(|w| w[0] == "layers" || w[0] == "h" || w[0] == "blocks")
        .and_then(|w| w[1].parse().ok())
}

/// Every parameter of a model, sorted by layer then name.
#[derive(Debug, Clone, Serialize)]
pub struct ModuleMap {
    pub params: Vec<ParamEntry>,
}

/// A node of the module tree; leaves are parameters.
#[derive(Debug, Clone, Serialize)]
pub struct ModuleNode {
    pub name: String,
    /// Full dotted path of this node.
    pub path: String,
    pub numel: usize,
    pub param_count: usize,
    pub children: Vec<ModuleNode>,
    /// Index into [`ModuleMap::params`] for a leaf.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param: Option<usize>,
}

impl ModuleMap {
    /// Builds the map from the weight files' headers.
    pub fn from_store(store: &WeightStore) -> Self {
        Self::from_entries(
            store
                .infos()
                .map(|info| (info.name.clone(), info.shape.clone(), info.dtype.clone())),
        )
    }

    /// The map of a model's weights, with fused tensors (Phi-3) listed as their parts
    /// (`…qkv_proj.weight[q]`, see [`super::fused`]).
    pub fn from_store_for(store: &WeightStore, config: &super::ModelConfig) -> Self {
        Self::from_entries(store.infos().flat_map(|info| {
            match super::fused::parts(config, &info.name) {
                Some(parts) => parts
                    .into_iter()
                    .map(|p| {
                        let mut shape = info.shape.clone();
                        shape[0] = p.rows.len();
                        (p.name, shape, info.dtype.clone())
                    })
                    .collect::<Vec<_>>(),
                None => vec![(info.name.clone(), info.shape.clone(), info.dtype.clone())],
            }
        }))
    }

    /// Builds the map from `(name, shape, dtype)` triples.
    pub fn from_entries(entries: impl IntoIterator<Item = (String, Vec<usize>, String)>) -> Self {
        let mut params: Vec<ParamEntry> = entries
            .into_iter()
            .map(|(name, shape, dtype)| {
                let (kind, layer, is_bias) = classify(&name);
                ParamEntry {
                    numel: shape.iter().product(),
                    name,
                    shape,
                    dtype,
                    layer,
                    kind,
                    is_bias,
                }
            })
            .collect();
        params.sort_by_key(|a| natural_key(&a.name));
        Self { params }
    }

    /// Total number of elements.
    pub fn total(&self) -> usize {
        self.params.iter().map(|p| p.numel).sum()
    }

    /// Number of decoder layers seen (highest layer index + 1).
    pub fn num_layers(&self) -> usize {
        self.params
            .iter()
            .filter_map(|p| p.layer)
            .max()
            .map_or(0, |l| l + 1)
    }

    /// Element totals per kind (biases counted with their weight's kind).
    pub fn totals_by_kind(&self) -> BTreeMap<ParamKind, usize> {
        let mut totals = BTreeMap::new();
        for p in &self.params {
            *totals.entry(p.kind).or_insert(0) += p.numel;
        }
        totals
    }

    /// Element totals per layer index.
    pub fn totals_by_layer(&self) -> BTreeMap<usize, usize> {
        let mut totals = BTreeMap::new();
        for p in &self.params {
            if let Some(layer) = p.layer {
                *totals.entry(layer).or_insert(0) += p.numel;
            }
        }
        totals
    }

    /// Looks a parameter up by name.
    pub fn get(&self, name: &str) -> Option<&ParamEntry> {
        self.params.iter().find(|p| p.name == name)
    }

    /// The dotted names grouped as a tree, counts summed at every level.
    pub fn tree(&self) -> ModuleNode {
        let mut root = ModuleNode {
            name: "(model)".into(),
            path: String::new(),
            numel: 0,
            param_count: 0,
            children: Vec::new(),
            param: None,
        };
        for (index, p) in self.params.iter().enumerate() {
            let mut node = &mut root;
            node.numel += p.numel;
            node.param_count += 1;
            let mut path = String::new();
            for part in p.name.split('.') {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(part);
                let pos = match node.children.iter().position(|c| c.name == part) {
                    Some(pos) => pos,
                    None => {
                        node.children.push(ModuleNode {
                            name: part.to_string(),
                            path: path.clone(),
                            numel: 0,
                            param_count: 0,
                            children: Vec::new(),
                            param: None,
                        });
                        node.children.len() - 1
                    }
                };
                node = &mut node.children[pos];
                node.numel += p.numel;
                node.param_count += 1;
            }
            node.param = Some(index);
        }
        root
    }
}

/// Sort key that orders `layers.10` after `layers.9`.
fn natural_key(name: &str) -> Vec<(u8, u64, String)> {
    name.split('.')
        .map(|part| match part.parse::<u64>() {
            Ok(n) => (0, n, String::new()),
            Err(_) => (1, 0, part.to_string()),
        })
        .collect()
}
