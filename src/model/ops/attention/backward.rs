//! The backward kernel: for one (batch row, key/value head) and every query head of its group,
//! the scores are recomputed tile by tile from the saved log-sum-exp, so the probabilities are
//! never stored; key and value gradients of the group accumulate in place.

use super::forward::{score_tile, Problem, BLOCK_K, BLOCK_Q};
use super::tile::{multiply, products, Columns};
use super::view::Rows;
use crate::model::ops::cpu::OutPtr;
use crate::model::ops::exp;
use crate::model::ops::simd::{self, dot, multiversion};

/// What the backward reads besides the problem: the output and its gradient `(B, T, H, D)` and
/// the forward's log-sum-exp `(B, H, T)`.
pub struct Saved<'a> {
    pub out: Rows<'a>,
    pub grad: Rows<'a>,
    pub lse: &'a [f32],
}

/// Gradient buffers: `dq` `(B, H, T, D)`, `dk` and `dv` `(B, H_kv, S, D)`, zero-initialised.
#[derive(Clone, Copy)]
pub struct Grads {
    pub dq: OutPtr,
    pub dk: OutPtr,
    pub dv: OutPtr,
}

multiversion! {
    /// Gradients for key/value head `g` of batch row `b` and its query heads.
    pub fn backward_item(p: &Problem, saved: &Saved, b: usize, g: usize, grads: Grads) => backward_item_body
}

#[inline(always)]
fn backward_item_body(p: &Problem, saved: &Saved, b: usize, g: usize, grads: Grads) {
    let [_, heads, queries, dim] = p.q.dims;
    let [_, kv_heads, keys, _] = p.k.dims;
    let groups = p.groups();
    // SAFETY: the key/value gradient rows of (b, g) belong to this item only.
    let (dk, dv) = unsafe {
        let at = (b * kv_heads + g) * keys * dim;
        (
            grads.dk.slice(at, keys * dim),
            grads.dv.slice(at, keys * dim),
        )
    };
    let mut probs = vec![0f32; BLOCK_Q * BLOCK_K];
    let mut dscores = vec![0f32; BLOCK_Q * BLOCK_K];
    let mut dq = vec![0f32; BLOCK_Q * dim];
    let mut delta = [0f32; BLOCK_Q];
    let mut live = [false; BLOCK_Q];
    let mut dprobs = vec![0f32; BLOCK_Q * BLOCK_K];
    let (mut keys_t, mut values_t) = (Columns::new(), Columns::new());
    keys_t.load(&p.k, b, g);
    values_t.load(&p.v, b, g);
    for h in g * groups..(g + 1) * groups {
        let q_row = |t: usize| p.q.row(b, h, t);
        let grad_row = |t: usize| saved.grad.row(b, t, h);
        for t0 in (0..queries).step_by(BLOCK_Q) {
            let rows = BLOCK_Q.min(queries - t0);
            dq.fill(0.0);
            for r in 0..rows {
                let t = t0 + r;
                delta[r] = dot(grad_row(t), saved.out.row(b, t, h));
                live[r] = saved.lse[(b * heads + h) * queries + t].is_finite();
                if !live[r] {
                    // A query that sees no key averages every value.
                    for s in 0..keys {
                        simd::axpy(
                            &mut dv[s * dim..(s + 1) * dim],
                            1.0 / keys as f32,
                            grad_row(t),
                        );
                    }
                }
            }
            let range = p.mask.key_range(t0..t0 + rows);
            let mut s0 = range.start;
            while s0 < range.end {
                let cols = BLOCK_K.min(range.end - s0);
                score_tile(p, Some(&keys_t), h, b, g, t0, rows, s0, cols, &mut probs);
                // dP = dO · Vᵀ for the whole tile.
                products(
                    |r| grad_row(t0 + r),
                    rows,
                    &values_t,
                    s0,
                    cols,
                    &mut dprobs,
                    BLOCK_K,
                );
                for r in 0..rows {
                    let t = t0 + r;
                    let lse = saved.lse[(b * heads + h) * queries + t];
                    let pr = &mut probs[r * BLOCK_K..r * BLOCK_K + cols];
                    let dr = &mut dscores[r * BLOCK_K..r * BLOCK_K + cols];
                    if !live[r] {
                        pr.fill(0.0);
                        dr.fill(0.0);
                        continue;
                    }
                    exp::exp_shifted_sum(pr, lse);
                    let dp = &dprobs[r * BLOCK_K..r * BLOCK_K + cols];
                    for ((d, &pv), &dpv) in dr.iter_mut().zip(pr.iter()).zip(dp) {
                        *d = pv * (dpv - delta[r]);
                    }
                }
                // dQ += dS · K, dK += dSᵀ · Q and dV += Pᵀ · dO for the whole tile.
                let key_rows = &mut dk[s0 * dim..(s0 + cols) * dim];
                let value_rows = &mut dv[s0 * dim..(s0 + cols) * dim];
                let k_row = |c: usize| p.k.row(b, g, s0 + c);
                multiply(
                    rows,
                    dim,
                    cols,
                    |r| (&dscores[r * BLOCK_K..], 1),
                    k_row,
                    &mut dq,
                    dim,
                    true,
                );
                // Column c of a tile, as a row of its transpose.
                let ds_column = |c: usize| (&dscores[c..], BLOCK_K);
                multiply(
                    cols,
                    dim,
                    rows,
                    ds_column,
                    |r| q_row(t0 + r),
                    key_rows,
                    dim,
                    true,
                );
                let p_column = |c: usize| (&probs[c..], BLOCK_K);
                multiply(
                    cols,
                    dim,
                    rows,
                    p_column,
                    |r| grad_row(t0 + r),
                    value_rows,
                    dim,
                    true,
                );
                s0 += cols;
            }
            for r in 0..rows {
                let t = t0 + r;
                // SAFETY: row (b, h, t) of `dq` belongs to this item (h is in its group).
                let out = unsafe { grads.dq.slice(((b * heads + h) * queries + t) * dim, dim) };
                for (o, v) in out.iter_mut().zip(&dq[r * dim..(r + 1) * dim]) {
                    *o = v * p.scale;
                }
            }
        }
    }
    simd::scale(dk, p.scale);
}
