//! Rotary embedding with non-interleaved halves, `y = x ⊙ cos + rotate_half(x) ⊙ sin` where
//! `rotate_half([x₁, x₂]) = [−x₂, x₁]`, with per-row (per batch row and position) tables.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, D};

use super::cpu::{for_each_row, storage_f32, storage_from_f32, tensor_from_f32, with_f32};

/// Rotary embedding of `x` `(B, H, T, D)` with `cos`/`sin` `(B or 1, 1, T, D)`; the tables get
/// no gradient. Fused on the CPU.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let shapes_fit = match (x.dims4(), cos.dims4()) {
        (Ok((b, _, t, d)), Ok((cb, ch, ct, cd))) => {
            (cb == b || cb == 1) && ch == 1 && ct == t && cd == d && cos.shape() == sin.shape()
        }
        _ => false,
    };
    if !super::fused_for(&[x, cos, sin])
        || !shapes_fit
        || cos.track_op()
        || sin.track_op()
        || x.dtype() != cos.dtype()
    {
        return rope_composed(x, cos, sin);
    }
    if x.dim(D::Minus1)? % 2 != 0 {
        bail!("rope: head dimension {} is odd", x.dim(D::Minus1)?);
    }
    super::count_fused_call();
    x.contiguous()?
        .apply_op3(&cos.contiguous()?, &sin.contiguous()?, Rope)
}

/// The explicit composition (narrow, negate, concatenate, multiply, add).
pub fn rope_composed(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let half = x.dim(D::Minus1)? / 2;
    let x1 = x.narrow(D::Minus1, 0, half)?;
    let x2 = x.narrow(D::Minus1, half, half)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?
}

/// Index of the table row used by row `r` of `x` `(B, H, T, D)` flattened to rows.
#[inline]
fn table_row(r: usize, heads: usize, seq: usize, table_batch: usize) -> usize {
    let t = r % seq;
    let b = r / (seq * heads);
    position_row(b, t, seq, table_batch)
}

/// Index of the table row of batch row `b`, position `t` in tables of `table_batch` rows
/// (1: shared by the batch) of `seq` positions.
#[inline]
pub(super) fn position_row(b: usize, t: usize, seq: usize, table_batch: usize) -> usize {
    (if table_batch == 1 { 0 } else { b }) * seq + t
}

/// One head row turned: `y = x ⊙ cos + rotate_half(x) ⊙ sin`.
#[inline]
pub(super) fn rotate_row(x: &[f32], cos: &[f32], sin: &[f32], y: &mut [f32]) {
    let half = x.len() / 2;
    for i in 0..half {
        y[i] = x[i] * cos[i] - x[i + half] * sin[i];
        y[i + half] = x[i + half] * cos[i + half] + x[i] * sin[i + half];
    }
}

/// The input gradient of [`rotate_row`] for the output gradient `g`.
#[inline]
pub(super) fn rotate_row_grad(g: &[f32], cos: &[f32], sin: &[f32], dx: &mut [f32]) {
    let half = g.len() / 2;
    for i in 0..half {
        dx[i] = g[i] * cos[i] + g[i + half] * sin[i + half];
        dx[i + half] = g[i + half] * cos[i + half] - g[i] * sin[i];
    }
}

struct Rope;

impl CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        "fused-rope"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = storage_f32(s1, l1)?;
        let cos = storage_f32(s2, l2)?;
        let sin = storage_f32(s3, l3)?;
        let (_, heads, seq, d) = l1.shape().dims4()?;
        let table_batch = l2.shape().dims4()?.0;
        let mut out = vec![0f32; x.len()];
        for_each_row(&mut out, d, |r, y| {
            let tr = table_row(r, heads, seq, table_batch);
            let (c, s) = (&cos[tr * d..(tr + 1) * d], &sin[tr * d..(tr + 1) * d]);
            rotate_row(&x[r * d..(r + 1) * d], c, s, y);
        });
        Ok((storage_from_f32(out, s1.dtype())?, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (_, heads, seq, d) = x.dims4()?;
        let table_batch = cos.dims4()?.0;
        let dx = with_f32(cos, |cos| {
            with_f32(sin, |sin| {
                with_f32(grad, |g| {
                    let mut dx = vec![0f32; g.len()];
                    for_each_row(&mut dx, d, |r, out| {
                        let tr = table_row(r, heads, seq, table_batch);
                        let (c, s) = (&cos[tr * d..(tr + 1) * d], &sin[tr * d..(tr + 1) * d]);
                        rotate_row_grad(&g[r * d..(r + 1) * d], c, s, out);
                    });
                    tensor_from_f32(dx, x.shape(), x.dtype(), x.device())
                })
            })
        })?;
        Ok((Some(dx), None, None))
    }
}
