//! LoRA: low-rank adapters on chosen linear layers of the language model, trained while the base
//! weights stay frozen, and written and read in PEFT's format.
//!
//! - [`adapter`]: one adapter's forward, initialisation and seeded training dropout;
//! - [`peft`]: `adapter_config.json` / `adapter_model.safetensors`, and folding an adapter into
//!   its base model's weights.

pub mod adapter;
pub mod open;
pub mod peft;

pub use adapter::{DropoutSwitch, LoraAdapter};

use std::collections::BTreeSet;

use anyhow::{bail, Result};

use crate::model::fused::fused_tensor_of;
use crate::model::{ModuleMap, ParamKind};

/// The numbers that define an adapter's computation.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSettings {
    pub r: usize,
    pub alpha: f64,
    pub dropout: f64,
    /// rsLoRA: scale by `alpha / √r` instead of `alpha / r`.
    pub use_rslora: bool,
}

impl LoraSettings {
    /// The factor on `B·A`: `alpha / r`, or `alpha / √r` with rsLoRA (as PEFT).
    pub fn scale(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.r as f64).sqrt()
        } else {
            self.alpha / self.r as f64
        }
    }
}

/// Which linear layers get adapters, with what settings and initialisation seed.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraPlan {
    pub settings: LoraSettings,
    /// Module names (`model.layers.0.mlp.gate_proj`), as the checkpoint names them.
    pub modules: BTreeSet<String>,
    /// Seeds each adapter's `A` (mixed with its module name).
    pub init_seed: u64,
}

impl LoraPlan {
    /// Trainable elements: `r·(in + out)` per adapted module.
    pub fn numel(&self, map: &ModuleMap) -> usize {
        self.modules
            .iter()
            .filter_map(|m| map.get(&format!("{m}.weight")))
            .map(|p| self.settings.r * p.shape.iter().sum::<usize>())
            .sum()
    }
}

/// The `base_model_name_or_path` to record for the model `spec`: an existing directory as an
/// absolute path (so the adapter finds its base from anywhere), a hub id as written.
pub fn base_name(spec: &str) -> String {
    let path = std::path::Path::new(spec);
    match path.is_dir().then(|| path.canonicalize()) {
        Some(Ok(abs)) => abs.to_string_lossy().into_owned(),
        _ => spec.to_string(),
    }
}

/// The adapter tensor names of a module, as PEFT names them (without PEFT's
/// `base_model.model.` prefix): `(…lora_A.weight, …lora_B.weight)`.
pub fn tensor_names(module: &str) -> (String, String) {
    (
        format!("{module}.lora_A.weight"),
        format!("{module}.lora_B.weight"),
    )
}

/// The modules a selection adapts: the weights of language-model linears (q k v o gate up
/// down). Anything else in the selection is an error naming it, with the fix.
pub fn targets(selected: &BTreeSet<String>, map: &ModuleMap) -> Result<BTreeSet<String>> {
    let mut modules = BTreeSet::new();
    let (mut biases, mut fused, mut vision, mut other) = (vec![], vec![], vec![], vec![]);
    for name in selected {
        let kind = map.get(name).map(|p| (p.kind, p.is_bias));
        let linear = kind.is_some_and(|(kind, _)| kind.is_layer_linear());
        if fused_tensor_of(name).is_some() {
            fused.push(name.as_str());
        } else if matches!(kind, Some((ParamKind::Vision | ParamKind::Projector, _))) {
            vision.push(name.as_str());
        } else if linear && kind.is_some_and(|(_, bias)| bias) {
            biases.push(name.as_str());
        } else if let (true, Some(module)) = (linear, name.strip_suffix(".weight")) {
            modules.insert(module.to_string());
        } else {
            other.push(name.as_str());
        }
    }
    let list = |names: &[&str]| -> String {
        let shown: Vec<&str> = names.iter().take(6).copied().collect();
        let more = names.len().saturating_sub(shown.len());
        if more > 0 {
            format!("{} and {more} more", shown.join(", "))
        } else {
            shown.join(", ")
        }
    };
    if !other.is_empty() {
        bail!(
            "LoRA adapts linear projections only (kinds q k v o gate up down); the selection also names {}: \
             remove those kinds from `trainable` (norms, embeddings and lm_head cannot carry a LoRA adapter here)",
            list(&other)
        );
    }
    if !biases.is_empty() {
        bail!(
            "LoRA trains no biases (PEFT's bias: none) but the selection names {}: set trainable.biases: false",
            list(&biases)
        );
    }
    if !vision.is_empty() {
        bail!(
            "LoRA on the vision tower or projector is not implemented; the selection names {}: \
             select language-model linears only (q k v o gate up down)",
            list(&vision)
        );
    }
    if !fused.is_empty() {
        bail!(
            "LoRA on fused projections (Phi-3's qkv_proj and gate_up_proj) is not implemented; the selection names {}: \
             select only o and down, or train without `lora:`",
            list(&fused)
        );
    }
    if modules.is_empty() {
        bail!(
            "LoRA needs at least one linear projection in `trainable` (kinds q k v o gate up down)"
        );
    }
    Ok(modules)
}
