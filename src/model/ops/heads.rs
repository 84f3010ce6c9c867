//! A projection's output split into attention heads, `(B, T, n·D)` → `(B, n, T, D)`, with the
//! rotary embedding applied on the way when tables are given ([`to_heads`]).
//!
//! Fused on the CPU this is one pass and one graph node. The composition is a reshape, a
//! transpose, a copy and the rope: four nodes, and candle's backward fills a zeroed gradient
//! buffer and adds into it for each (plus a strided copy for the transpose).

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor};

use super::cpu::{for_each_row, storage_f32, storage_from_f32, tensor_from_f32, with_f32};
use super::rope::{position_row, rotate_row, rotate_row_grad};

/// `x` `(B, T, heads·D)` as `(B, heads, T, D)`, contiguous; with `rope`, the tables `cos` and
/// `sin` `(B or 1, 1, T, D)` (no gradient) turn each head as [`super::rope`] does. Fused on the
/// CPU (see the module doc).
pub fn to_heads(x: &Tensor, heads: usize, rope: Option<(&Tensor, &Tensor)>) -> Result<Tensor> {
    let (batch, seq, width) = x.dims3()?;
    if heads == 0 || width % heads != 0 {
        bail!("to_heads: a width of {width} does not split into {heads} heads");
    }
    let dim = width / heads;
    let fused = match rope {
        None => super::fused_for(&[x]),
        Some((cos, sin)) => {
            super::fused_for(&[x, cos, sin])
                && tables_fit(cos, sin, batch, seq, dim)
                && !cos.track_op()
                && !sin.track_op()
                && x.dtype() == cos.dtype()
                && dim.is_multiple_of(2)
        }
    };
    if !fused {
        return to_heads_composed(x, heads, rope);
    }
    super::count_fused_call();
    let op = Heads { heads };
    let x = x.contiguous()?;
    match rope {
        None => x.apply_op1(op),
        Some((cos, sin)) => x.apply_op3(&cos.contiguous()?, &sin.contiguous()?, op),
    }
}

/// The explicit composition: reshape, transpose, copy, then [`super::rope`].
pub fn to_heads_composed(
    x: &Tensor,
    heads: usize,
    rope: Option<(&Tensor, &Tensor)>,
) -> Result<Tensor> {
    let (batch, seq, width) = x.dims3()?;
    let split = x
        .reshape((batch, seq, heads, width / heads.max(1)))?
        .transpose(1, 2)?
        .contiguous()?;
    match rope {
        Some((cos, sin)) => super::rope(&split, cos, sin),
        None => Ok(split),
    }
}

/// Whether rotary tables of `cos`'s and `sin`'s shapes serve a `(batch, seq)` input of heads
/// of width `dim`.
fn tables_fit(cos: &Tensor, sin: &Tensor, batch: usize, seq: usize, dim: usize) -> bool {
    match cos.dims4() {
        Ok((cb, ch, ct, cd)) => {
            (cb == batch || cb == 1)
                && ch == 1
                && ct == seq
                && cd == dim
                && cos.shape() == sin.shape()
        }
        Err(_) => false,
    }
}

/// Rotary tables as f32 with their batch rows (1: shared).
struct Tables<'a> {
    cos: &'a [f32],
    sin: &'a [f32],
    batch: usize,
}

impl Tables<'_> {
    /// The `cos` and `sin` rows of batch row `b`, position `t`, for heads of width `dim`.
    fn rows(&self, b: usize, t: usize, seq: usize, dim: usize) -> (&[f32], &[f32]) {
        let row = position_row(b, t, seq, self.batch) * dim;
        (&self.cos[row..row + dim], &self.sin[row..row + dim])
    }
}

/// The op; its third operand pair, when present, is the rotary tables.
struct Heads {
    heads: usize,
}

impl Heads {
    /// `(B, n, T, D)` values of an `x` `(B, T, n·D)`.
    fn split(&self, x: &[f32], shape: &Shape, tables: Option<Tables>) -> Result<(Vec<f32>, Shape)> {
        let (batch, seq, width) = shape.dims3()?;
        let (n, dim) = (self.heads, width / self.heads);
        let mut out = vec![0f32; x.len()];
        for_each_row(&mut out, dim, |r, y| {
            let (t, h, b) = (r % seq, (r / seq) % n, r / (seq * n));
            let src = ((b * seq + t) * n + h) * dim;
            let x = &x[src..src + dim];
            match &tables {
                Some(tables) => {
                    let (cos, sin) = tables.rows(b, t, seq, dim);
                    rotate_row(x, cos, sin, y);
                }
                None => y.copy_from_slice(x),
            }
        });
        Ok((out, Shape::from((batch, n, seq, dim))))
    }

    /// The gradient `(B, T, n·D)` of `x` for the output gradient `g` `(B, n, T, D)`.
    fn merge_grad(&self, g: &[f32], x: &Tensor, tables: Option<Tables>) -> Result<Tensor> {
        let (_, seq, width) = x.dims3()?;
        let (n, dim) = (self.heads, width / self.heads);
        let mut dx = vec![0f32; g.len()];
        for_each_row(&mut dx, dim, |r, out| {
            let (h, t, b) = (r % n, (r / n) % seq, r / (n * seq));
            let src = ((b * n + h) * seq + t) * dim;
            let g = &g[src..src + dim];
            match &tables {
                Some(tables) => {
                    let (cos, sin) = tables.rows(b, t, seq, dim);
                    rotate_row_grad(g, cos, sin, out);
                }
                None => out.copy_from_slice(g),
            }
        });
        tensor_from_f32(dx, x.shape(), x.dtype(), x.device())
    }
}

impl CustomOp1 for Heads {
    fn name(&self) -> &'static str {
        "to-heads"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = storage_f32(s, l)?;
        let (out, shape) = self.split(&x, l.shape(), None)?;
        Ok((storage_from_f32(out, s.dtype())?, shape))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        with_f32(grad, |g| self.merge_grad(g, x, None)).map(Some)
    }
}

impl CustomOp3 for Heads {
    fn name(&self) -> &'static str {
        "to-heads-rope"
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
        let (x, cos, sin) = (
            storage_f32(s1, l1)?,
            storage_f32(s2, l2)?,
            storage_f32(s3, l3)?,
        );
        let tables = Tables {
            cos: &cos,
            sin: &sin,
            batch: l2.shape().dims4()?.0,
        };
        let (out, shape) = self.split(&x, l1.shape(), Some(tables))?;
        Ok((storage_from_f32(out, s1.dtype())?, shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let batch = cos.dims4()?.0;
        let dx = with_f32(cos, |cos| {
            with_f32(sin, |sin| {
                with_f32(grad, |g| {
                    self.merge_grad(g, x, Some(Tables { cos, sin, batch }))
                })
            })
        })?;
        Ok((Some(dx), None, None))
    }
}
