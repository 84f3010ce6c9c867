//! Loading parameters by name: trainable ones become `Var`s, frozen ones stay tensors.

use std::collections::{BTreeMap, HashSet};

use std::sync::Arc;

use anyhow::Result;
use candle_core::{DType, Device, Tensor, Var};

use crate::model::fused::FusedPart;
use crate::model::linear::{Linear, Param};
use crate::model::lora::{self, DropoutSwitch, LoraAdapter, LoraPlan};
use crate::model::weights::WeightStore;

/// Hands out parameters by name: a `Var` for names in the trainable set, a tensor otherwise.
pub struct WeightSource<'a> {
    pub(super) store: &'a WeightStore,
    pub(super) trainable: &'a HashSet<String>,
    pub(super) dtype: DType,
    pub(super) device: Device,
    pub(super) vars: BTreeMap<String, Var>,
    pub(super) params: BTreeMap<String, Param>,
    /// Selected parts of fused tensors (virtual names) that a fused `Var` stands for.
    pub(super) covered: HashSet<String>,
    /// Fused tensors of which only some parts train: 1 on the rows that do, `(rows, 1)`.
    pub(super) row_masks: BTreeMap<String, Tensor>,
    /// Linear layers that get LoRA adapters, and the training switch of their dropout.
    pub(super) lora: Option<(&'a LoraPlan, Arc<DropoutSwitch>)>,
    /// Modules that received an adapter.
    pub(super) adapted: HashSet<String>,
}

impl<'a> WeightSource<'a> {
    /// A source over `store` where exactly the names in `trainable` become `Var`s.
    pub fn new(
        store: &'a WeightStore,
        trainable: &'a HashSet<String>,
        dtype: DType,
        device: &Device,
    ) -> Self {
        Self {
            store,
            trainable,
            dtype,
            device: device.clone(),
            vars: BTreeMap::new(),
            params: BTreeMap::new(),
            covered: HashSet::new(),
            row_masks: BTreeMap::new(),
            lora: None,
            adapted: HashSet::new(),
        }
    }

    /// Loads a fused tensor (Phi-3) whose parts are selected separately: a `Var` when any part
    /// trains, with a row mask when only some do.
    pub(super) fn fused_param(
        &mut self,
        name: &str,
        shape: &[usize],
        parts: &[FusedPart],
    ) -> Result<Param> {
        let chosen: Vec<&FusedPart> = parts
            .iter()
            .filter(|p| self.trainable.contains(&p.name))
            .collect();
        if chosen.is_empty() && !self.trainable.contains(name) {
            return self.param(name, shape);
        }
        let tensor = self.store.load(name, shape, self.dtype, &self.device)?;
        let var = Var::from_tensor(&tensor)?;
        self.vars.insert(name.to_string(), var.clone());
        self.covered.extend(chosen.iter().map(|p| p.name.clone()));
        if chosen.len() < parts.len() && !self.trainable.contains(name) {
            let mut mask = vec![0f32; shape[0]];
            for p in &chosen {
                mask[p.rows.clone()].iter_mut().for_each(|m| *m = 1.0);
            }
            let mask = Tensor::from_vec(mask, (shape[0], 1), &self.device)?;
            self.row_masks.insert(name.to_string(), mask);
        }
        let param = Param::Trainable(var);
        self.params.insert(name.to_string(), param.clone());
        Ok(param)
    }

    /// Loads `name`, checking it has `shape`.
    pub fn param(&mut self, name: &str, shape: &[usize]) -> Result<Param> {
        let tensor = self.store.load(name, shape, self.dtype, &self.device)?;
        let param = if self.trainable.contains(name) {
            let var = Var::from_tensor(&tensor)?;
            self.vars.insert(name.to_string(), var.clone());
            Param::Trainable(var)
        } else {
            Param::Frozen(tensor)
        };
        self.params.insert(name.to_string(), param.clone());
        Ok(param)
    }

    /// Every tensor name in the weight files.
    pub fn store_names(&self) -> impl Iterator<Item = &str> {
        self.store.infos().map(|i| i.name.as_str())
    }

    pub(crate) fn linear(
        &mut self,
        prefix: &str,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
    ) -> Result<Linear> {
        let weight = self.param(&format!("{prefix}.weight"), &[out_dim, in_dim])?;
        let bias = if bias {
            Some(self.param(&format!("{prefix}.bias"), &[out_dim])?)
        } else {
            None
        };
        let mut linear = Linear::new(weight, bias);
        if let Some((plan, switch)) = &self.lora {
            if plan.modules.contains(prefix) {
                let seed = lora::adapter::module_seed(plan.init_seed, prefix);
                let r = plan.settings.r;
                let (a, b) =
                    LoraAdapter::init((out_dim, in_dim), r, seed, self.dtype, &self.device)?;
                let (a_name, b_name) = lora::tensor_names(prefix);
                for (name, var) in [(a_name, &a), (b_name, &b)] {
                    self.vars.insert(name.clone(), var.clone());
                    self.params.insert(name, Param::Trainable(var.clone()));
                }
                linear.lora = Some(LoraAdapter {
                    a: Param::Trainable(a),
                    b: Param::Trainable(b),
                    scale: plan.settings.scale(),
                    dropout: plan.settings.dropout as f32,
                    switch: Some(switch.clone()),
                });
                self.adapted.insert(prefix.to_string());
            }
        }
        Ok(linear)
    }
}
