//! The role a parameter plays in the model (query, gate, embedding, vision tower …).

use std::fmt;

use serde::Serialize;

/// What role a parameter plays; biases are tagged with the kind of their weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamKind {
    Q,
    K,
    V,
    O,
    /// Per-head RMSNorm of queries (Qwen3's `q_norm`).
    QNorm,
    /// Per-head RMSNorm of keys (Qwen3's `k_norm`).
    KNorm,
    Gate,
    Up,
    Down,
    Embed,
    LmHead,
    Norm,
    Vision,
    Projector,
    Other,
}

impl ParamKind {
    /// Whether the kind is one of a decoder layer's linear projections (q k v o gate up down).
    pub fn is_layer_linear(self) -> bool {
        matches!(
            self,
            ParamKind::Q
                | ParamKind::K
                | ParamKind::V
                | ParamKind::O
                | ParamKind::Gate
                | ParamKind::Up
                | ParamKind::Down
        )
    }

    /// Every kind, in display order.
    pub const ALL: [ParamKind; 15] = [
        ParamKind::Q,
        ParamKind::K,
        ParamKind::V,
        ParamKind::O,
        ParamKind::QNorm,
        ParamKind::KNorm,
        ParamKind::Gate,
        ParamKind::Up,
        ParamKind::Down,
        ParamKind::Embed,
        ParamKind::LmHead,
        ParamKind::Norm,
        ParamKind::Vision,
        ParamKind::Projector,
        ParamKind::Other,
    ];

    /// Short name used in recipes and on screen.
    pub fn as_str(self) -> &'static str {
        match self {
            ParamKind::Q => "q",
            ParamKind::K => "k",
            ParamKind::V => "v",
            ParamKind::O => "o",
            ParamKind::QNorm => "q_norm",
            ParamKind::KNorm => "k_norm",
            ParamKind::Gate => "gate",
            ParamKind::Up => "up",
            ParamKind::Down => "down",
            ParamKind::Embed => "embed",
            ParamKind::LmHead => "lm_head",
            ParamKind::Norm => "norm",
            ParamKind::Vision => "vision",
            ParamKind::Projector => "projector",
            ParamKind::Other => "other",
        }
    }

    /// Parses a short name as written by [`ParamKind::as_str`].
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for ParamKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
