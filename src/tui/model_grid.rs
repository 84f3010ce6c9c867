//! The Model pane's layer × projection grid: one row per decoder layer, a row of whole-model
//! parameters and, for a vision-language model, vision and projector rows; each cell names the
//! parameters it stands for. Built once from the module map.

use crate::model::module_map::{ModuleMap, ParamKind};

/// Per-layer grid columns; `qn`/`kn` (Qwen3's q_norm/k_norm) appear only in models that have
/// them.
pub const LAYER_COLUMNS: [(&str, ParamKind); 10] = [
    ("q", ParamKind::Q),
    ("k", ParamKind::K),
    ("v", ParamKind::V),
    ("o", ParamKind::O),
    ("qn", ParamKind::QNorm),
    ("kn", ParamKind::KNorm),
    ("gate", ParamKind::Gate),
    ("up", ParamKind::Up),
    ("down", ParamKind::Down),
    ("norm", ParamKind::Norm),
];

/// Whether a cell's parameters train.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellState {
    Absent,
    Frozen,
    Partial,
    Trainable,
}

/// One cell: a label and the parameter names it stands for.
#[derive(Debug, Clone, PartialEq)]
pub struct GridCell {
    pub label: String,
    pub names: Vec<String>,
}

/// The grid: one row per decoder layer, then a row of whole-model parameters (embeddings,
/// lm_head, final norm) and, for a vision-language model, a `vision` row (embeddings, each
/// encoder layer, post norm) and a `projector` row (its linears).
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    pub rows: Vec<(String, Vec<GridCell>)>,
    /// How many leading rows are decoder layers.
    pub layers: usize,
    /// The per-layer columns of this model (label, kind).
    pub columns: Vec<(&'static str, ParamKind)>,
}

impl Grid {
    /// The grid of `map`.
    pub fn build(map: &ModuleMap) -> Self {
        let layers = map.num_layers();
        let mut rows = Vec::with_capacity(layers + 3);
        let optional = [ParamKind::QNorm, ParamKind::KNorm];
        let columns: Vec<(&'static str, ParamKind)> = LAYER_COLUMNS
            .into_iter()
            .filter(|(_, kind)| {
                !optional.contains(kind) || map.params.iter().any(|p| p.kind == *kind)
            })
            .collect();
        for layer in 0..layers {
            let cells = columns
                .iter()
                .map(|(label, kind)| GridCell {
                    label: label.to_string(),
                    names: map
                        .params
                        .iter()
                        .filter(|p| p.layer == Some(layer) && p.kind == *kind)
                        .map(|p| p.name.clone())
                        .collect(),
                })
                .collect();
            rows.push((format!("{layer}"), cells));
        }
        let mut globals = Vec::new();
        for (label, kind) in [
            ("embed", ParamKind::Embed),
            ("lm_head", ParamKind::LmHead),
            ("final norm", ParamKind::Norm),
            ("other", ParamKind::Other),
        ] {
            let names: Vec<String> = map
                .params
                .iter()
                .filter(|p| p.kind == kind && p.layer.is_none())
                .map(|p| p.name.clone())
                .collect();
            if !names.is_empty() {
                globals.push(GridCell {
                    label: label.to_string(),
                    names,
                });
            }
        }
        rows.push(("model".to_string(), globals));
        for (label, kind) in [
            ("vision", ParamKind::Vision),
            ("proj", ParamKind::Projector),
        ] {
            let cells = side_cells(map, kind);
            if !cells.is_empty() {
                rows.push((label.to_string(), cells));
            }
        }
        Self {
            rows,
            layers,
            columns,
        }
    }
}

/// Cells of a vision-side row: parameters grouped by the module after the kind's prefix
/// (`embeddings`, `pre_layrnorm`, `layers.0`, ..., `post_layernorm`; `linear_1`, `linear_2`).
fn side_cells(map: &ModuleMap, kind: ParamKind) -> Vec<GridCell> {
    let mut cells: Vec<GridCell> = Vec::new();
    for p in map.params.iter().filter(|p| p.kind == kind) {
        let label = side_label(&p.name);
        match cells.iter_mut().find(|c| c.label == label) {
            Some(cell) => cell.names.push(p.name.clone()),
            None => cells.push(GridCell {
                label,
                names: vec![p.name.clone()],
            }),
        }
    }
    // Data-flow order: embeddings, pre-norm, encoder layers, post-norm, then the rest.
    cells.sort_by_key(|c| match c.label.as_str() {
        "embed" => (0, 0),
        "pre-norm" => (1, 0),
        "post-norm" => (3, 0),
        label => match label
            .strip_prefix('L')
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => (2, n),
            None => (4, 0),
        },
    });
    cells
}

/// A short label for a vision-tower or projector parameter's module.
fn side_label(name: &str) -> String {
    let parts: Vec<&str> = name.split('.').collect();
    if let Some(i) = parts.iter().position(|p| *p == "layers") {
        return format!("L{}", parts.get(i + 1).unwrap_or(&"?"));
    }
    let module = parts.iter().rev().nth(1).copied().unwrap_or(name);
    match module {
        "patch_embedding" | "position_embedding" | "embeddings" => "embed".into(),
        "pre_layrnorm" => "pre-norm".into(),
        "post_layernorm" => "post-norm".into(),
        other => other.to_string(),
    }
}
