//! The backward kernel: for one (batch row, key/value head) and every query head of its group,
//! the scores are recomputed tile by tile from the saved log-sum-exp, so the probabilities are
//! never stored; key and value gradients of the group accumulate in place.

use super::forward::{add_weighted_rows, score_tile, Problem, BLOCK_K, BLOCK_Q};
use super::view::Rows;
use crate::model::ops::cpu::OutPtr;
use crate::model::ops::exp;
use crate::model::ops::simd::{self, dot, dot4, multiversion};

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

/// `Σ_r weights[r][c] · rows_r` added to `acc` for column `c` of a tile (row stride
/// [`BLOCK_K`]); `row(r)` gives the rows.
#[inline(always)]
fn add_column<'a>(
    acc: &mut [f32],
    tile: &[f32],
    c: usize,
    count: usize,
    row: impl Fn(usize) -> &'a [f32],
) {
    let w = |r: usize| tile[r * BLOCK_K + c];
    let mut r = 0;
    while r + 4 <= count {
        simd::axpy4(
            acc,
            [w(r), w(r + 1), w(r + 2), w(r + 3)],
            [row(r), row(r + 1), row(r + 2), row(r + 3)],
        );
        r += 4;
    }
    for r in r..count {
        simd::axpy(acc, w(r), row(r));
    }
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
                score_tile(p, &p.q, h, b, g, t0, rows, s0, cols, &mut probs);
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
                    let gr = grad_row(t);
                    let mut c = 0;
                    while c + 4 <= cols {
                        let s = s0 + c;
                        let dp = dot4(
                            gr,
                            [
                                p.v.row(b, g, s),
                                p.v.row(b, g, s + 1),
                                p.v.row(b, g, s + 2),
                                p.v.row(b, g, s + 3),
                            ],
                        );
                        for ((d, &pv), dpv) in dr[c..c + 4].iter_mut().zip(&pr[c..c + 4]).zip(dp) {
                            *d = pv * (dpv - delta[r]);
                        }
                        c += 4;
                    }
                    for (i, (d, &pv)) in dr.iter_mut().zip(pr.iter()).enumerate().skip(c) {
                        *d = pv * (dot(gr, p.v.row(b, g, s0 + i)) - delta[r]);
                    }
                    add_weighted_rows(&mut dq[r * dim..(r + 1) * dim], dr, &p.k, b, g, s0);
                }
                for c in 0..cols {
                    let s = s0 + c;
                    let at = s * dim..(s + 1) * dim;
                    add_column(&mut dk[at.clone()], &dscores, c, rows, |r| q_row(t0 + r));
                    add_column(&mut dv[at], &probs, c, rows, |r| grad_row(t0 + r));
                }
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
