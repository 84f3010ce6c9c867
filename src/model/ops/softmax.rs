//! Softmax over the last dimension, plain and as attention uses it (`softmax(x·scale + mask)`
//! with the mask broadcast over batch rows or heads), computed in f32.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor, D};

use super::cpu::{for_each_row, storage_f32, storage_from_f32, tensor_from_f32, with_f32};
use super::exp;
use super::simd::multiversion;

/// Softmax over the last dimension; fused on the CPU.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if !super::fused_for(&[x]) || x.rank() == 0 {
        return softmax_last_dim_composed(x);
    }
    super::count_fused_call();
    x.contiguous()?.apply_op1(Softmax { scale: 1.0 })
}

/// The explicit composition (candle-nn's `softmax`).
pub fn softmax_last_dim_composed(x: &Tensor) -> Result<Tensor> {
    candle_nn::ops::softmax(x, D::Minus1)
}

/// Attention probabilities `softmax(scores·scale + bias)` over the last dimension, in the dtype
/// of `scores`. `scores` is `(B, H, T, S)`; `bias` `(B or 1, H or 1, T, S)` is an additive mask
/// and receives no gradient. Fused on the CPU.
pub fn masked_softmax(scores: &Tensor, bias: &Tensor, scale: f64) -> Result<Tensor> {
    let shapes_fit = match (scores.dims4(), bias.dims4()) {
        (Ok((b, h, t, s)), Ok((bb, bh, bt, bs))) => {
            (bb == b || bb == 1) && (bh == h || bh == 1) && bt == t && bs == s
        }
        _ => false,
    };
    if !super::fused_for(&[scores, bias]) || !shapes_fit || bias.track_op() {
        return masked_softmax_composed(scores, bias, scale);
    }
    super::count_fused_call();
    scores.contiguous()?.apply_op2(
        &bias.contiguous()?,
        MaskedSoftmax {
            scale: scale as f32,
        },
    )
}

/// The explicit composition: scale and mask in the scores' dtype, softmax in f32.
pub fn masked_softmax_composed(scores: &Tensor, bias: &Tensor, scale: f64) -> Result<Tensor> {
    let dtype = scores.dtype();
    let logits = (scores * scale)?.broadcast_add(bias)?;
    softmax_last_dim_composed(&logits.to_dtype(DType::F32)?)?.to_dtype(dtype)
}

multiversion! {
    /// `y = softmax(z)` of one row given `z`, written into `y`.
    fn softmax_row(y: &mut [f32]) => softmax_row_body
}

#[inline(always)]
fn softmax_row_body(y: &mut [f32]) {
    let max = exp::max(y);
    let sum = exp::exp_shifted_sum(y, max);
    for v in y.iter_mut() {
        *v /= sum;
    }
}

/// `dx = scale · y ⊙ (dy − Σ dy⊙y)` row by row.
fn softmax_backward(res: &Tensor, grad: &Tensor, scale: f32) -> Result<Tensor> {
    with_f32(res, |ys| {
        with_f32(grad, |gs| {
            let width = res.dim(D::Minus1)?;
            let mut dx = vec![0f32; ys.len()];
            for_each_row(&mut dx, width, |r, out| {
                let y = &ys[r * width..(r + 1) * width];
                let g = &gs[r * width..(r + 1) * width];
                let dot: f32 = y.iter().zip(g).map(|(a, b)| a * b).sum();
                for ((o, &yv), &gv) in out.iter_mut().zip(y).zip(g) {
                    *o = scale * yv * (gv - dot);
                }
            });
            tensor_from_f32(dx, res.shape(), res.dtype(), res.device())
        })
    })
}

struct Softmax {
    scale: f32,
}

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "fused-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = storage_f32(storage, layout)?;
        let width = *layout.dims().last().unwrap_or(&1);
        let mut out = vec![0f32; x.len()];
        for_each_row(&mut out, width, |r, y| {
            for (y, &v) in y.iter_mut().zip(&x[r * width..(r + 1) * width]) {
                *y = v * self.scale;
            }
            softmax_row(y);
        });
        Ok((
            storage_from_f32(out, storage.dtype())?,
            layout.shape().clone(),
        ))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(softmax_backward(res, grad, self.scale)?))
    }
}

struct MaskedSoftmax {
    scale: f32,
}

impl CustomOp2 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "fused-masked-softmax"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = storage_f32(s1, l1)?;
        let bias = storage_f32(s2, l2)?;
        let (_, heads, seq, width) = l1.shape().dims4()?;
        let (bias_batch, bias_heads, _, _) = l2.shape().dims4()?;
        let mut out = vec![0f32; x.len()];
        for_each_row(&mut out, width, |r, y| {
            let t = r % seq;
            let h = (r / seq) % heads;
            let b = r / (seq * heads);
            let bb = if bias_batch == 1 { 0 } else { b };
            let bh = if bias_heads == 1 { 0 } else { h };
            let br = (bb * bias_heads + bh) * seq + t;
            let xr = &x[r * width..(r + 1) * width];
            let mr = &bias[br * width..(br + 1) * width];
            for ((y, &v), &m) in y.iter_mut().zip(xr).zip(mr) {
                *y = v * self.scale + m;
            }
            softmax_row(y);
        });
        Ok((storage_from_f32(out, s1.dtype())?, l1.shape().clone()))
    }

    fn bwd(
        &self,
        _scores: &Tensor,
        _bias: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(softmax_backward(res, grad, self.scale)?), None))
    }
}
