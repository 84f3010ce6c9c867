//! AdamW over the trainable `Var`s only, with state that can be checkpointed.
//!
//! candle-nn's `AdamW` keeps its moments private, so a resumed run could not continue the same
//! trajectory; this one exposes its state. Moments and (for bf16/f16 weights) a master copy of
//! the weights are kept in f32.

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor, Var};

use crate::recipe::OptimizerSpec;

struct Slot {
    var: Var,
    /// f32 master weights when the var is in a lower precision.
    master: Option<Tensor>,
    m: Tensor,
    v: Tensor,
}

/// Decoupled-weight-decay Adam (Loshchilov & Hutter), as PyTorch's `AdamW`.
pub struct AdamW {
    spec: OptimizerSpec,
    slots: BTreeMap<String, Slot>,
    /// Number of updates applied so far.
    pub step: usize,
}

impl AdamW {
    /// An optimizer over `vars` with zeroed moments.
    pub fn new(vars: &BTreeMap<String, Var>, spec: &OptimizerSpec) -> Result<Self> {
        let mut slots = BTreeMap::new();
        for (name, var) in vars {
            let t = var.as_tensor();
            let master = if t.dtype() == DType::F32 {
                None
            } else {
                Some(t.to_dtype(DType::F32)?)
            };
            slots.insert(
                name.clone(),
                Slot {
                    var: var.clone(),
                    master,
                    m: t.zeros_like()?.to_dtype(DType::F32)?,
                    v: t.zeros_like()?.to_dtype(DType::F32)?,
                },
            );
        }
        Ok(Self {
            spec: spec.clone(),
            slots,
            step: 0,
        })
    }

    /// Applies one update with learning rate `lr`; `grads` are f32, by parameter name.
    pub fn update(&mut self, grads: &HashMap<String, Tensor>, lr: f64) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let (b1, b2) = (self.spec.beta1, self.spec.beta2);
        let bias1 = 1.0 - b1.powi(t);
        let bias2 = 1.0 - b2.powi(t);
        for (name, slot) in self.slots.iter_mut() {
            let grad = grads
                .get(name)
                .with_context(|| format!("no gradient for {name}"))?;
            slot.m = ((&slot.m * b1)? + (grad * (1.0 - b1))?)?;
            slot.v = ((&slot.v * b2)? + (grad.sqr()? * (1.0 - b2))?)?;
            let denom = ((&slot.v / bias2)?.sqrt()? + self.spec.eps)?;
            let step = ((&slot.m / bias1)? / denom)?;
            let weights = match &slot.master {
                Some(master) => master.clone(),
                None => slot.var.as_tensor().clone(),
            };
            let decayed = if self.spec.weight_decay > 0.0 {
                (weights * (1.0 - lr * self.spec.weight_decay))?
            } else {
                weights
            };
            let updated = (decayed - (step * lr)?)?;
            match &mut slot.master {
                Some(master) => {
                    slot.var.set(&updated.to_dtype(slot.var.dtype())?)?;
                    *master = updated;
                }
                None => slot.var.set(&updated)?,
            }
        }
        Ok(())
    }

    /// Moments and master weights as named tensors (`m.NAME`, `v.NAME`, `master.NAME`).
    pub fn state_tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (name, slot) in &self.slots {
            out.insert(format!("m.{name}"), slot.m.clone());
            out.insert(format!("v.{name}"), slot.v.clone());
            if let Some(master) = &slot.master {
                out.insert(format!("master.{name}"), master.clone());
            }
        }
        out
    }

    /// Restores state saved by [`AdamW::state_tensors`] after `step` updates.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, step: usize) -> Result<()> {
        for (name, slot) in self.slots.iter_mut() {
            let get = |key: String| -> Result<Tensor> {
                let t = tensors
                    .get(&key)
                    .with_context(|| format!("optimizer state lacks {key}"))?;
                if t.shape() != slot.var.shape() {
                    bail!(
                        "optimizer state {key} has shape {:?}, expected {:?}",
                        t.dims(),
                        slot.var.dims()
                    );
                }
                Ok(t.to_device(slot.var.device())?.to_dtype(DType::F32)?)
            };
            slot.m = get(format!("m.{name}"))?;
            slot.v = get(format!("v.{name}"))?;
            if slot.master.is_some() {
                let master = get(format!("master.{name}"))?;
                slot.var.set(&master.to_dtype(slot.var.dtype())?)?;
                slot.master = Some(master);
            }
        }
        self.step = step;
        Ok(())
    }

    /// Names of the parameters this optimizer updates.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.slots.keys()
    }

    /// The f32 value of a parameter (the master copy when there is one).
    pub fn weights_f32(&self, name: &str) -> Option<Result<Tensor>> {
        let slot = self.slots.get(name)?;
        Some(match &slot.master {
            Some(master) => Ok(master.clone()),
            None => slot
                .var
                .as_tensor()
                .to_dtype(DType::F32)
                .map_err(anyhow::Error::from),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn first_adamw_step_moves_each_weight_by_lr() {
        // With bias correction the first step is lr·sign(g) (up to eps), plus decoupled decay.
        let dev = Device::Cpu;
        let var = Var::from_tensor(&Tensor::new(&[1.0f32, -2.0, 3.0], &dev).unwrap()).unwrap();
        let mut vars = BTreeMap::new();
        vars.insert("w".to_string(), var.clone());
        let spec = OptimizerSpec {
            lr: 0.1,
            weight_decay: 0.5,
            ..OptimizerSpec::default()
        };
        let mut opt = AdamW::new(&vars, &spec).unwrap();
        let mut grads = HashMap::new();
        grads.insert(
            "w".to_string(),
            Tensor::new(&[0.5f32, -0.25, 0.0], &dev).unwrap(),
        );
        opt.update(&grads, 0.1).unwrap();
        let got = var.as_tensor().to_vec1::<f32>().unwrap();
        let expected = [
            1.0 * (1.0 - 0.05) - 0.1,
            -2.0 * (1.0 - 0.05) + 0.1,
            3.0 * (1.0 - 0.05),
        ];
        for (g, e) in got.iter().zip(expected) {
            assert!((g - e).abs() < 1e-5, "{got:?} vs {expected:?}");
        }
    }
}
