//! Parameters that are either trainable (`Var`) or frozen (plain `Tensor`), and a linear layer
//! whose frozen weights cost no weight-gradient matmul in backward. On the CPU in f32 its
//! product and both gradients run on [`gemm::sgemm`], the one GEMM entry point.

use anyhow::Result;
use candle_core::{CustomOp1, Tensor, Var};

use super::ops::{self, gemm};
use crate::model::lora::LoraAdapter;
use crate::model::precomputed::{precomputed_forwards, Precomputed};

/// One model parameter: trainable ones are `Var`s, frozen ones stay plain tensors so they get
/// no gradient and never reach the optimizer.
#[derive(Debug, Clone)]
pub enum Param {
    Trainable(Var),
    Frozen(Tensor),
}

impl Param {
    /// The parameter's value.
    pub fn tensor(&self) -> &Tensor {
        match self {
            Param::Trainable(var) => var.as_tensor(),
            Param::Frozen(tensor) => tensor,
        }
    }

    /// Whether the optimizer updates this parameter.
    pub fn is_trainable(&self) -> bool {
        matches!(self, Param::Trainable(_))
    }
}

/// `y = x·Wᵀ + b` over the last dimension of `x`, plus a LoRA adapter's update when it has one.
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Param,
    pub bias: Option<Param>,
    pub lora: Option<LoraAdapter>,
}

impl Linear {
    /// A linear layer without an adapter.
    pub fn new(weight: Param, bias: Option<Param>) -> Self {
        Self {
            weight,
            bias,
            lora: None,
        }
    }

    /// The same layer with every parameter (adapter tensors included) passed through `f`; the
    /// copy's adapter has no dropout switch.
    pub fn map(&self, f: &mut dyn FnMut(&Param) -> Result<Param>) -> Result<Self> {
        let lora = match &self.lora {
            Some(l) => Some(LoraAdapter {
                a: f(&l.a)?,
                b: f(&l.b)?,
                scale: l.scale,
                dropout: l.dropout,
                switch: None,
            }),
            None => None,
        };
        Ok(Self {
            weight: f(&self.weight)?,
            bias: self.bias.as_ref().map(&mut *f).transpose()?,
            lora,
        })
    }

    /// Applies the layer to `x` of shape `(..., in)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, false)
    }

    /// [`Linear::forward`], or with `inference` its value without a graph: a few rows (decoding)
    /// take [`ops::small_matmul`] over the weight as stored, whether it trains or not.
    pub fn apply(&self, x: &Tensor, inference: bool) -> Result<Tensor> {
        let dims = x.dims();
        let in_dim = *dims.last().unwrap_or(&0);
        let rows = x.elem_count() / in_dim.max(1);
        let x2 = x.reshape((rows, in_dim))?;
        let y = if inference {
            let (x2, w) = (x2.detach(), self.weight.tensor().detach());
            match ops::small_matmul(&x2, &w)? {
                Some(y) => y,
                None if gemm::handles(&x2, &w) => gemm::linear(&x2, &w)?,
                None => x2.matmul(&w.t()?)?,
            }
        } else {
            match &self.weight {
                Param::Trainable(w) if gemm::handles(&x2, w.as_tensor()) => {
                    gemm::linear(&x2, w.as_tensor())?
                }
                Param::Trainable(w) => x2.matmul(&w.as_tensor().t()?)?,
                Param::Frozen(w) => frozen_matmul(&x2, w)?,
            }
        };
        let y = match &self.lora {
            Some(adapter) => (y + adapter.forward(&x2)?)?,
            None => y,
        };
        let mut out_dims = dims[..dims.len() - 1].to_vec();
        out_dims.push(y.dim(1)?);
        let y = y.reshape(out_dims)?;
        Ok(match &self.bias {
            Some(bias) if inference => y.broadcast_add(&bias.tensor().detach())?,
            Some(bias) => y.broadcast_add(bias.tensor())?,
            None => y,
        })
    }
}

/// `x·Wᵀ` for a frozen `W`: when `x` carries a graph, backward yields only `grad·W` for `x`
/// (candle's own matmul backward would also compute the unused weight gradient). f32 CPU
/// matrices take [`gemm::linear`]; other tensors a product computed outside the graph.
pub fn frozen_matmul(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if gemm::handles(x, w) {
        return Ok(gemm::linear(x, &w.detach())?);
    }
    if !x.track_op() {
        return Ok(x.matmul(&w.t()?)?);
    }
    let value = x.detach().matmul(&w.t()?)?.contiguous()?;
    let op = InputGradOnly {
        value: Precomputed::new(value, "frozen linear"),
        weight: w.clone(),
    };
    Ok(x.apply_op1(op)?)
}

/// Custom op whose forward hands back a product computed outside the graph and whose backward
/// returns only the input gradient.
struct InputGradOnly {
    value: Precomputed,
    weight: Tensor,
}

impl CustomOp1 for InputGradOnly {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    precomputed_forwards!(value);

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad_res.matmul(&self.weight)?))
    }
}
