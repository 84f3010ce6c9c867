//! Parameters that are either trainable (`Var`) or frozen (plain `Tensor`), and a linear layer
//! whose frozen weights cost no weight-gradient matmul in backward. On the CPU in f32 its
//! product and both gradients run on [`gemm::sgemm`], the one GEMM entry point.

use std::sync::Arc;

use anyhow::Result;
use candle_core::{CustomOp1, Tensor, Var};

use super::ops::{self, gemm};
use crate::model::grad_sink::GradSink;
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
    /// Where a trainable weight's gradient goes when the GEMM linear computes it: this sink
    /// rather than candle's `GradStore` (see [`GradSink`]); `None` keeps it in the store.
    pub weight_grads: Option<Arc<GradSink>>,
}

impl Linear {
    /// A linear layer without an adapter.
    pub fn new(weight: Param, bias: Option<Param>) -> Self {
        Self {
            weight,
            bias,
            lora: None,
            weight_grads: None,
        }
    }

    /// The same layer with every parameter (adapter tensors included) passed through `f`; the
    /// copy's adapter has no dropout switch, and it keeps the gradient sink only while its
    /// weight still trains.
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
        let weight = f(&self.weight)?;
        let weight_grads = self.weight_grads.clone().filter(|_| weight.is_trainable());
        Ok(Self {
            weight,
            bias: self.bias.as_ref().map(&mut *f).transpose()?,
            lora,
            weight_grads,
        })
    }

    /// Applies the layer to `x` of shape `(..., in)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, false)
    }

    /// [`Linear::forward`], or with `inference` its value without a graph: a few rows (decoding)
    /// take [`ops::small_matmul`] over the weight as stored, whether it trains or not.
    pub fn apply(&self, x: &Tensor, inference: bool) -> Result<Tensor> {
        let y = if inference {
            let w = self.weight.tensor().detach();
            over_rows(&x.detach(), |x2| {
                Ok(match ops::small_matmul(x2, &w)? {
                    Some(y) => y,
                    None if gemm::handles(x2, &w) => gemm::linear(x2, &w)?,
                    None => x2.matmul(&w.t()?)?,
                })
            })?
        } else {
            match &self.weight {
                Param::Trainable(w) if gemm::handles(x, w.as_tensor()) => {
                    gemm::linear_with_grad_sink(x, w.as_tensor(), self.weight_grads.as_ref())?
                }
                Param::Trainable(w) => over_rows(x, |x2| Ok(x2.matmul(&w.as_tensor().t()?)?))?,
                Param::Frozen(w) => frozen_matmul(x, w)?,
            }
        };
        self.adapter_and_bias(x, y, inference)
    }

    /// [`Linear::forward`] for a value nobody reads, only backpropagates through (the last
    /// product of a checkpointed layer's recomputation): where the GEMM linear takes it, the
    /// product is a node of zeros with the linear's backward ([`gemm::linear_unread`]), so the
    /// forward product is not computed; elsewhere the plain forward. An adapter and a bias still
    /// add their (cheap) values.
    pub fn apply_unread(&self, x: &Tensor) -> Result<Tensor> {
        let w = self.weight.tensor();
        if !gemm::handles(x, w) {
            return self.forward(x);
        }
        let y = match &self.weight {
            Param::Trainable(_) => gemm::linear_unread(x, w, self.weight_grads.as_ref())?,
            Param::Frozen(w) => gemm::linear_unread(x, &w.detach(), None)?,
        };
        self.adapter_and_bias(x, y, false)
    }

    /// `y` plus the adapter's update of `x` and the bias, when the layer has them.
    fn adapter_and_bias(&self, x: &Tensor, y: Tensor, inference: bool) -> Result<Tensor> {
        let y = match &self.lora {
            Some(adapter) => (y + over_rows(x, |x2| adapter.forward(x2))?)?,
            None => y,
        };
        Ok(match &self.bias {
            Some(bias) if inference => y.broadcast_add(&bias.tensor().detach())?,
            Some(bias) => y.broadcast_add(bias.tensor())?,
            None => y,
        })
    }
}

/// `f` applied to `x` `(..., in)` seen as a matrix `(rows, in)`, its result `(rows, out)` seen
/// as `(..., out)`; a matrix goes to `f` as it is.
fn over_rows(x: &Tensor, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    if x.rank() == 2 {
        return f(x);
    }
    let dims = x.dims();
    let in_dim = *dims.last().unwrap_or(&0);
    let rows = x.elem_count() / in_dim.max(1);
    let y = f(&x.reshape((rows, in_dim))?)?;
    let mut out_dims = dims[..dims.len().saturating_sub(1)].to_vec();
    out_dims.push(y.dim(1)?);
    Ok(y.reshape(out_dims)?)
}

/// `x·Wᵀ` over the last dimension of `x` for a frozen `W`: when `x` carries a graph, backward
/// yields only `grad·W` for `x` (candle's own matmul backward would also compute the unused
/// weight gradient). f32 CPU tensors take [`gemm::linear`]; other tensors a product computed
/// outside the graph.
pub fn frozen_matmul(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if gemm::handles(x, w) {
        return Ok(gemm::linear(x, &w.detach())?);
    }
    over_rows(x, |x| {
        if !x.track_op() {
            return Ok(x.matmul(&w.t()?)?);
        }
        let value = x.detach().matmul(&w.t()?)?.contiguous()?;
        let op = InputGradOnly {
            value: Precomputed::new(value, "frozen linear"),
            weight: w.clone(),
        };
        Ok(x.apply_op1(op)?)
    })
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
