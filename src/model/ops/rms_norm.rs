//! RMS norm `y = x / √(mean(x²) + ε) · w` over the last dimension, computed in f32.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, D};

use super::cpu::{
    for_each_row, storage_f32, storage_from_f32, sum_over_rows, tensor_from_f32, with_f32,
};

/// RMS norm of `x` `(..., H)` with weight `(H)`; fused on the CPU.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    if !super::fused_for(&[x, weight]) || x.dtype() != weight.dtype() {
        return rms_norm_composed(x, weight, eps);
    }
    let hidden = x.dim(D::Minus1)?;
    if weight.dims() != [hidden] {
        bail!(
            "rms_norm: weight has shape {:?}, expected [{hidden}]",
            weight.dims()
        );
    }
    super::count_fused_call();
    x.contiguous()?
        .apply_op2(&weight.contiguous()?, RmsNorm { eps: eps as f32 })
}

/// The explicit composition (candle-nn's `rms_norm_slow`), with a backward for both operands.
pub fn rms_norm_composed(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    candle_nn::ops::rms_norm_slow(x, weight, eps as f32)
}

struct RmsNorm {
    eps: f32,
}

/// `1 / √(mean(x²) + ε)` of one row.
#[inline]
fn inv_rms(row: &[f32], eps: f32) -> f32 {
    let sum_sq: f32 = row.iter().map(|v| v * v).sum();
    1.0 / (sum_sq / row.len() as f32 + eps).sqrt()
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = storage_f32(s1, l1)?;
        let w = storage_f32(s2, l2)?;
        let h = w.len();
        let mut out = vec![0f32; x.len()];
        for_each_row(&mut out, h, |r, y| {
            let row = &x[r * h..(r + 1) * h];
            let inv = inv_rms(row, self.eps);
            for ((y, &xv), &wv) in y.iter_mut().zip(row).zip(w.iter()) {
                *y = xv * inv * wv;
            }
        });
        Ok((storage_from_f32(out, s1.dtype())?, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (want_x, want_w) = (x.track_op(), weight.track_op());
        if !want_x && !want_w {
            return Ok((None, None));
        }
        let eps = self.eps;
        with_f32(x, |xs| {
            with_f32(weight, |ws| {
                with_f32(grad, |gs| {
                    let h = ws.len();
                    let rows = xs.len() / h.max(1);
                    let dx = if want_x {
                        let mut dx = vec![0f32; xs.len()];
                        for_each_row(&mut dx, h, |r, out| {
                            let xr = &xs[r * h..(r + 1) * h];
                            let gr = &gs[r * h..(r + 1) * h];
                            let inv = inv_rms(xr, eps);
                            let dot: f32 = xr
                                .iter()
                                .zip(gr)
                                .zip(ws)
                                .map(|((xv, gv), wv)| gv * wv * xv)
                                .sum();
                            let k = inv * inv * inv * dot / h as f32;
                            for (((o, &xv), &gv), &wv) in out.iter_mut().zip(xr).zip(gr).zip(ws) {
                                *o = inv * gv * wv - xv * k;
                            }
                        });
                        Some(tensor_from_f32(dx, x.shape(), x.dtype(), x.device())?)
                    } else {
                        None
                    };
                    let dw = if want_w {
                        let dw = sum_over_rows(rows, h, h, |range, acc| {
                            for r in range {
                                let xr = &xs[r * h..(r + 1) * h];
                                let gr = &gs[r * h..(r + 1) * h];
                                let inv = inv_rms(xr, eps);
                                for ((a, &xv), &gv) in acc.iter_mut().zip(xr).zip(gr) {
                                    *a += gv * xv * inv;
                                }
                            }
                        });
                        Some(tensor_from_f32(
                            dw,
                            weight.shape(),
                            weight.dtype(),
                            weight.device(),
                        )?)
                    } else {
                        None
                    };
                    Ok((dx, dw))
                })
            })
        })
    }
}
