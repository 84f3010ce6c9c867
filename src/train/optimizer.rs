//! AdamW over the trainable `Var`s only, with state that can be checkpointed.
//!
//! candle-nn's `AdamW` keeps its moments private, so a resumed run could not continue the same
//! trajectory; this one exposes its state. Moments and (for bf16/f16 weights) a master copy of
//! the weights are kept in f32.
//!
//! On the CPU (with the fused ops on, see [`crate::model::ops::set_fused`]) the moments and the
//! master copy live in plain vectors and each parameter is updated in one pass that writes the
//! weights in place ([`crate::model::ops::adamw_update`]); elsewhere the update is ~10 tensor ops
//! per parameter. Both compute the same f32 arithmetic.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Context, Result};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Tensor, Var};

use crate::model::ops::{self, AdamWStep};
use crate::recipe::OptimizerSpec;

/// Optimizer state of one parameter.
enum State {
    /// Tensors updated with tensor ops (any device).
    Tensors {
        /// f32 master weights when the var is in a lower precision.
        master: Option<Tensor>,
        m: Tensor,
        v: Tensor,
    },
    /// Host vectors updated in one fused pass (CPU).
    Host {
        master: Option<Vec<f32>>,
        m: Vec<f32>,
        v: Vec<f32>,
    },
}

struct Slot {
    var: Var,
    state: State,
    /// This parameter's learning rate as a multiple of the schedule's (`lr_by_kind`).
    lr_scale: f64,
}

/// Each selected parameter whose kind has a learning rate of its own in `spec.lr_by_kind`,
/// with that rate as a multiple of `spec.lr`. A kind tunescope does not know, or one that no
/// selected parameter has, is an error naming it.
pub fn lr_scales(
    spec: &OptimizerSpec,
    selected: &std::collections::BTreeSet<String>,
    map: &crate::model::ModuleMap,
) -> Result<BTreeMap<String, f64>> {
    let mut scales = BTreeMap::new();
    for (kind, &lr) in &spec.lr_by_kind {
        let parsed = crate::model::ParamKind::parse(kind).with_context(|| {
            format!(
                "`{kind}` is not a parameter kind; kinds: {}",
                crate::model::ParamKind::ALL
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        if !(lr >= 0.0 && lr.is_finite()) {
            bail!("the learning rate of `{kind}` must be a finite number ≥ 0, got {lr}");
        }
        if spec.lr <= 0.0 {
            bail!(
                "`lr` is {}, so `{kind}: {lr}` cannot be expressed as a multiple of it",
                spec.lr
            );
        }
        let before = scales.len();
        for name in selected {
            if map.get(name).is_some_and(|p| p.kind == parsed) {
                scales.insert(name.clone(), lr / spec.lr);
            }
        }
        if scales.len() == before {
            bail!("`{kind}: {lr}` names no trained parameter; select `{kind}` in `trainable` or remove it");
        }
    }
    Ok(scales)
}

/// Decoupled-weight-decay Adam (Loshchilov & Hutter), as PyTorch's `AdamW`.
pub struct AdamW {
    spec: OptimizerSpec,
    slots: BTreeMap<String, Slot>,
    /// Number of updates applied so far.
    pub step: usize,
}

fn host_f32(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

impl AdamW {
    /// An optimizer over `vars` with zeroed moments; the fused CPU update when the fused ops
    /// are on ([`ops::fused`]).
    pub fn new(vars: &BTreeMap<String, Var>, spec: &OptimizerSpec) -> Result<Self> {
        Self::with_fused(vars, spec, ops::fused())
    }

    /// As [`AdamW::new`], choosing the update: `fused` uses the one-pass CPU update for vars
    /// on the CPU, otherwise tensor ops.
    pub fn with_fused(
        vars: &BTreeMap<String, Var>,
        spec: &OptimizerSpec,
        fused: bool,
    ) -> Result<Self> {
        let mut slots = BTreeMap::new();
        for (name, var) in vars {
            let t = var.as_tensor();
            let low_precision = t.dtype() != DType::F32;
            let state = if fused && t.device().is_cpu() {
                let n = t.elem_count();
                State::Host {
                    master: if low_precision {
                        Some(host_f32(t)?)
                    } else {
                        None
                    },
                    m: vec![0f32; n],
                    v: vec![0f32; n],
                }
            } else {
                State::Tensors {
                    master: if low_precision {
                        Some(t.to_dtype(DType::F32)?)
                    } else {
                        None
                    },
                    m: t.zeros_like()?.to_dtype(DType::F32)?,
                    v: t.zeros_like()?.to_dtype(DType::F32)?,
                }
            };
            slots.insert(
                name.clone(),
                Slot {
                    var: var.clone(),
                    state,
                    lr_scale: 1.0,
                },
            );
        }
        Ok(Self {
            spec: spec.clone(),
            slots,
            step: 0,
        })
    }

    /// Gives the named parameters learning rates of their own: `scales[name]` times the
    /// schedule's. Names it does not update (selected tensors the decoder keeps frozen, such as
    /// vision layers past the feature layer) are skipped.
    pub fn set_lr_scales(&mut self, scales: &BTreeMap<String, f64>) -> Result<()> {
        for (name, &scale) in scales {
            if let Some(slot) = self.slots.get_mut(name) {
                slot.lr_scale = scale;
            }
        }
        Ok(())
    }

    /// Applies one update with learning rate `lr`; `grads` are f32, by parameter name.
    pub fn update(&mut self, grads: &HashMap<String, Tensor>, lr: f64) -> Result<()> {
        self.update_scaled(grads, lr, 1.0)
    }

    /// [`AdamW::update`] with every gradient multiplied by `grad_scale` first (gradient
    /// clipping), inside the update's own pass rather than as a pass of its own.
    pub fn update_scaled(
        &mut self,
        grads: &HashMap<String, Tensor>,
        lr: f64,
        grad_scale: f64,
    ) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let (b1, b2) = (self.spec.beta1, self.spec.beta2);
        let bias1 = 1.0 - b1.powi(t);
        let bias2 = 1.0 - b2.powi(t);
        let step = AdamWStep {
            lr,
            beta1: b1,
            beta2: b2,
            eps: self.spec.eps,
            weight_decay: self.spec.weight_decay,
            bias1,
            bias2,
            grad_scale,
        };
        let base_step = step;
        for (name, slot) in self.slots.iter_mut() {
            let lr = lr * slot.lr_scale;
            let step = AdamWStep { lr, ..base_step };
            let grad = grads
                .get(name)
                .with_context(|| format!("no gradient for {name}"))?;
            if grad.shape() != slot.var.shape() {
                bail!(
                    "gradient of {name} has shape {:?}, expected {:?}",
                    grad.dims(),
                    slot.var.dims()
                );
            }
            match &mut slot.state {
                State::Host {
                    master: Some(master),
                    m,
                    v,
                } => {
                    // Low-precision weights: update the f32 master copy, then round it into
                    // the var exactly as the tensor-op version does.
                    let grad = host_f32(grad)?;
                    ops::adamw_update(master, &grad, m, v, &step);
                    let updated = Tensor::from_slice(master, slot.var.shape(), slot.var.device())?;
                    slot.var.set(&updated.to_dtype(slot.var.dtype())?)?;
                }
                State::Host { master: None, m, v } => {
                    // f32 weights are updated in place in the var's own storage.
                    let grad = grad.to_dtype(DType::F32)?.contiguous()?;
                    let kernel = HostUpdate {
                        m: RefCell::new(m),
                        v: RefCell::new(v),
                        step,
                    };
                    slot.var.as_tensor().inplace_op2(&grad, &kernel)?;
                }
                State::Tensors { master, m, v } => {
                    let scaled;
                    let grad = if grad_scale == 1.0 {
                        grad
                    } else {
                        scaled = (grad * grad_scale)?;
                        &scaled
                    };
                    *m = ((&*m * b1)? + (grad * (1.0 - b1))?)?;
                    *v = ((&*v * b2)? + (grad.sqr()? * (1.0 - b2))?)?;
                    let denom = ((&*v / bias2)?.sqrt()? + self.spec.eps)?;
                    let update = ((&*m / bias1)? / denom)?;
                    let weights = match master {
                        Some(master) => master.clone(),
                        None => slot.var.as_tensor().clone(),
                    };
                    let decayed = if self.spec.weight_decay > 0.0 {
                        (weights * (1.0 - lr * self.spec.weight_decay))?
                    } else {
                        weights
                    };
                    let updated = (decayed - (update * lr)?)?;
                    match master {
                        Some(master) => {
                            slot.var.set(&updated.to_dtype(slot.var.dtype())?)?;
                            *master = updated;
                        }
                        None => slot.var.set(&updated)?,
                    }
                }
            }
        }
        Ok(())
    }

    /// Moments and master weights as named tensors (`m.NAME`, `v.NAME`, `master.NAME`).
    pub fn state_tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (name, slot) in &self.slots {
            let shape = slot.var.shape();
            let device = slot.var.device();
            let host = |values: &[f32]| {
                Tensor::from_slice(values, shape, device).expect("state matches its var's shape")
            };
            let (m, v, master) = match &slot.state {
                State::Tensors { master, m, v } => (m.clone(), v.clone(), master.clone()),
                State::Host { master, m, v } => (host(m), host(v), master.as_deref().map(host)),
            };
            out.insert(format!("m.{name}"), m);
            out.insert(format!("v.{name}"), v);
            if let Some(master) = master {
                out.insert(format!("master.{name}"), master);
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
            match &mut slot.state {
                State::Tensors { master, m, v } => {
                    *m = get(format!("m.{name}"))?;
                    *v = get(format!("v.{name}"))?;
                    if master.is_some() {
                        let saved = get(format!("master.{name}"))?;
                        slot.var.set(&saved.to_dtype(slot.var.dtype())?)?;
                        *master = Some(saved);
                    }
                }
                State::Host { master, m, v } => {
                    *m = host_f32(&get(format!("m.{name}"))?)?;
                    *v = host_f32(&get(format!("v.{name}"))?)?;
                    if master.is_some() {
                        let saved = get(format!("master.{name}"))?;
                        slot.var.set(&saved.to_dtype(slot.var.dtype())?)?;
                        *master = Some(host_f32(&saved)?);
                    }
                }
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
        let master = match &slot.state {
            State::Tensors { master, .. } => master.clone().map(Ok),
            State::Host { master, .. } => master.as_deref().map(|values| {
                Tensor::from_slice(values, slot.var.shape(), slot.var.device())
                    .map_err(anyhow::Error::from)
            }),
        };
        Some(match master {
            Some(master) => master,
            None => slot
                .var
                .as_tensor()
                .to_dtype(DType::F32)
                .map_err(anyhow::Error::from),
        })
    }
}

/// The one-pass update of one f32 CPU parameter, run in place on the var's storage with the
/// f32 gradient as the source; the moments are borrowed from the slot.
struct HostUpdate<'a> {
    m: RefCell<&'a mut Vec<f32>>,
    v: RefCell<&'a mut Vec<f32>>,
    step: AdamWStep,
}

impl candle_core::InplaceOp2 for HostUpdate<'_> {
    fn name(&self) -> &'static str {
        "adamw-update"
    }

    fn cpu_fwd(
        &self,
        weights: &mut CpuStorage,
        weights_layout: &Layout,
        grad: &CpuStorage,
        grad_layout: &Layout,
    ) -> candle_core::Result<()> {
        let (Some((ws, we)), Some((gs, ge))) = (
            weights_layout.contiguous_offsets(),
            grad_layout.contiguous_offsets(),
        ) else {
            candle_core::bail!("adamw: weights and gradient must be contiguous")
        };
        match (weights, grad) {
            (CpuStorage::F32(w), CpuStorage::F32(g)) => {
                ops::adamw_update(
                    &mut w[ws..we],
                    &g[gs..ge],
                    &mut self.m.borrow_mut(),
                    &mut self.v.borrow_mut(),
                    &self.step,
                );
                Ok(())
            }
            (w, g) => candle_core::bail!(
                "adamw: in-place update needs f32 weights and gradient, got {:?} and {:?}",
                w.dtype(),
                g.dtype()
            ),
        }
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

    /// Clipping inside the update gives bit for bit what scaling the gradients beforehand (as
    /// `tensor * scale`) and updating with them gives, over several steps.
    #[test]
    fn a_scaled_update_equals_the_update_of_scaled_gradients() {
        let dev = Device::Cpu;
        let start: Vec<f32> = (0..4099).map(|i| ((i as f32) * 0.37).sin()).collect();
        let make = || {
            let var = Var::from_slice(&start, start.len(), &dev).unwrap();
            let mut vars = BTreeMap::new();
            vars.insert("w".to_string(), var.clone());
            let spec = OptimizerSpec {
                lr: 0.01,
                weight_decay: 0.1,
                ..OptimizerSpec::default()
            };
            (var, AdamW::new(&vars, &spec).unwrap())
        };
        let ((inside, mut a), (outside, mut b)) = (make(), make());
        for step in 0..3 {
            let g: Vec<f32> = (0..start.len())
                .map(|i| ((i * (step + 2)) as f32 * 0.11).cos())
                .collect();
            let grad = Tensor::from_vec(g, start.len(), &dev).unwrap();
            let scale = 0.3 + 0.2 * step as f64;
            let grads = HashMap::from([("w".to_string(), grad.clone())]);
            a.update_scaled(&grads, 0.01, scale).unwrap();
            let scaled = HashMap::from([("w".to_string(), (&grad * scale).unwrap())]);
            b.update(&scaled, 0.01).unwrap();
        }
        assert_eq!(
            inside.as_tensor().to_vec1::<f32>().unwrap(),
            outside.as_tensor().to_vec1::<f32>().unwrap()
        );
    }
}
