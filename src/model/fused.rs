//! Phi-3's fused projections seen as their parts: `…qkv_proj.weight` holds q, k and v as row
//! ranges, `…gate_up_proj.weight` holds gate and up. Each part is a virtual parameter named
//! `TENSOR[PART]` (`model.layers.0.self_attn.qkv_proj.weight[q]`), so the module map, selection,
//! recipes and the grid treat q, k, v, gate and up alike in every family; training a part
//! updates exactly its rows.

use std::ops::Range;

use super::config::ModelConfig;
use super::param_kind::ParamKind;

/// One part of a fused tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct FusedPart {
    /// The virtual parameter name, `TENSOR[PART]`.
    pub name: String,
    pub kind: ParamKind,
    /// The part's rows in the fused tensor.
    pub rows: Range<usize>,
}

/// The virtual name of part `part` of `tensor`.
pub fn part_name(tensor: &str, part: &str) -> String {
    format!("{tensor}[{part}]")
}

/// The fused tensor a virtual part name belongs to (`None` for an ordinary name).
pub fn fused_tensor_of(name: &str) -> Option<&str> {
    let (tensor, rest) = name.rsplit_once('[')?;
    rest.ends_with(']').then_some(tensor)
}

/// The parts of `name` when the model fuses it (Phi-3's `qkv_proj` and `gate_up_proj`).
pub fn parts(config: &ModelConfig, name: &str) -> Option<Vec<FusedPart>> {
    if !config.fused_projections {
        return None;
    }
    let stem = name
        .strip_suffix(".weight")
        .or_else(|| name.strip_suffix(".bias"))?;
    let widths: Vec<(&str, ParamKind, usize)> = if stem.ends_with("self_attn.qkv_proj") {
        vec![
            ("q", ParamKind::Q, config.q_dim()),
            ("k", ParamKind::K, config.kv_dim()),
            ("v", ParamKind::V, config.kv_dim()),
        ]
    } else if stem.ends_with("mlp.gate_up_proj") {
        vec![
            ("gate", ParamKind::Gate, config.intermediate_size),
            ("up", ParamKind::Up, config.intermediate_size),
        ]
    } else {
        return None;
    };
    let mut start = 0;
    Some(
        widths
            .into_iter()
            .map(|(part, kind, width)| {
                let rows = start..start + width;
                start += width;
                FusedPart {
                    name: part_name(name, part),
                    kind,
                    rows,
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_names_round_trip() {
        let name = part_name("model.layers.3.self_attn.qkv_proj.weight", "k");
        assert_eq!(name, "model.layers.3.self_attn.qkv_proj.weight[k]");
        assert_eq!(
            fused_tensor_of(&name),
            Some("model.layers.3.self_attn.qkv_proj.weight")
        );
        assert_eq!(fused_tensor_of("model.norm.weight"), None);
    }
}
