//! The forward kernel: for one (batch row, head), query blocks against key blocks with an online
//! softmax, so only a `BLOCK_Q × BLOCK_K` tile of scores exists at a time; keeps each query's
//! log-sum-exp for the backward.

use super::mask::AttentionMask;
use super::view::Rows;
use crate::model::ops::cpu::OutPtr;
use crate::model::ops::exp;
use crate::model::ops::simd::{self, dot, dot4, multiversion};

/// Queries per tile.
pub const BLOCK_Q: usize = 32;
/// Keys per tile.
pub const BLOCK_K: usize = 64;

/// The operands of one attention call: `q` `(B, H, T, D)`, `k` and `v` `(B, H_kv, S, D)`.
pub struct Problem<'a> {
    pub q: Rows<'a>,
    pub k: Rows<'a>,
    pub v: Rows<'a>,
    pub mask: &'a AttentionMask,
    pub scale: f32,
}

impl Problem<'_> {
    /// Query heads per key/value head.
    pub fn groups(&self) -> usize {
        self.q.dims[1] / self.k.dims[1].max(1)
    }
}

/// Scaled scores `q_r · k_c` of `rows` queries from `t0` against keys `s0..s0 + cols` of
/// key/value head `g` into `tile` (row stride [`BLOCK_K`]); hidden keys get −∞.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn score_tile(
    p: &Problem,
    q: &Rows,
    qh: usize,
    b: usize,
    g: usize,
    t0: usize,
    rows: usize,
    s0: usize,
    cols: usize,
    tile: &mut [f32],
) {
    for r in 0..rows {
        let t = t0 + r;
        let qr = q.row(b, qh, t);
        let out = &mut tile[r * BLOCK_K..r * BLOCK_K + cols];
        let mut c = 0;
        while c + 4 <= cols {
            let s = s0 + c;
            let d = dot4(
                qr,
                [
                    p.k.row(b, g, s),
                    p.k.row(b, g, s + 1),
                    p.k.row(b, g, s + 2),
                    p.k.row(b, g, s + 3),
                ],
            );
            out[c..c + 4].copy_from_slice(&d);
            c += 4;
        }
        for (c, o) in out.iter_mut().enumerate().skip(c) {
            *o = dot(qr, p.k.row(b, g, s0 + c));
        }
        for (c, o) in out.iter_mut().enumerate() {
            *o = if p.mask.visible(b, t, s0 + c) {
                *o * p.scale
            } else {
                f32::NEG_INFINITY
            };
        }
    }
}

/// `acc += Σ_c weights[c] · v_c` over keys `s0..s0 + weights.len()` of head `g`.
#[inline(always)]
pub fn add_weighted_rows(
    acc: &mut [f32],
    weights: &[f32],
    rows: &Rows,
    b: usize,
    g: usize,
    s0: usize,
) {
    let cols = weights.len();
    let mut c = 0;
    while c + 4 <= cols {
        let s = s0 + c;
        simd::axpy4(
            acc,
            [weights[c], weights[c + 1], weights[c + 2], weights[c + 3]],
            [
                rows.row(b, g, s),
                rows.row(b, g, s + 1),
                rows.row(b, g, s + 2),
                rows.row(b, g, s + 3),
            ],
        );
        c += 4;
    }
    for (c, &w) in weights.iter().enumerate().skip(c) {
        simd::axpy(acc, w, rows.row(b, g, s0 + c));
    }
}

multiversion! {
    /// Attention of query head `h` of batch row `b`: writes its rows of `out` `(B, T, H, D)` and
    /// of `lse` `(B, H, T)` (+∞ for a query that sees no key: it then averages every value, as
    /// the composed path's uniform softmax over masked scores does).
    pub fn forward_item(p: &Problem, b: usize, h: usize, out: OutPtr, lse: OutPtr) => forward_item_body
}

#[inline(always)]
fn forward_item_body(p: &Problem, b: usize, h: usize, out: OutPtr, lse: OutPtr) {
    let [_, heads, queries, dim] = p.q.dims;
    let keys = p.k.dims[2];
    let g = h / p.groups();
    let mut tile = vec![0f32; BLOCK_Q * BLOCK_K];
    let mut acc = vec![0f32; BLOCK_Q * dim];
    let mut max = [f32::NEG_INFINITY; BLOCK_Q];
    let mut sum = [0f32; BLOCK_Q];
    for t0 in (0..queries).step_by(BLOCK_Q) {
        let rows = BLOCK_Q.min(queries - t0);
        acc.fill(0.0);
        max.fill(f32::NEG_INFINITY);
        sum.fill(0.0);
        let range = p.mask.key_range(t0..t0 + rows);
        let mut s0 = range.start;
        while s0 < range.end {
            let cols = BLOCK_K.min(range.end - s0);
            score_tile(p, &p.q, h, b, g, t0, rows, s0, cols, &mut tile);
            for r in 0..rows {
                let scores = &mut tile[r * BLOCK_K..r * BLOCK_K + cols];
                let tile_max = exp::max(scores);
                let new_max = max[r].max(tile_max);
                if new_max == f32::NEG_INFINITY {
                    continue;
                }
                let acc_row = &mut acc[r * dim..(r + 1) * dim];
                if new_max > max[r] {
                    let alpha = exp::exp(max[r] - new_max);
                    sum[r] *= alpha;
                    simd::scale(acc_row, alpha);
                    max[r] = new_max;
                }
                sum[r] += exp::exp_shifted_sum(scores, new_max);
                add_weighted_rows(acc_row, scores, &p.v, b, g, s0);
            }
            s0 += cols;
        }
        for r in 0..rows {
            let t = t0 + r;
            let acc_row = &mut acc[r * dim..(r + 1) * dim];
            let log_sum = if max[r] == f32::NEG_INFINITY {
                acc_row.fill(0.0);
                for s in 0..keys {
                    simd::axpy(acc_row, 1.0 / keys as f32, p.v.row(b, g, s));
                }
                f32::INFINITY
            } else {
                simd::scale(acc_row, 1.0 / sum[r]);
                max[r] + sum[r].ln()
            };
            // SAFETY: row (b, t, h) of `out` and entry (b, h, t) of `lse` belong to this item.
            unsafe {
                out.slice(((b * queries + t) * heads + h) * dim, dim)
                    .copy_from_slice(acc_row);
                lse.slice((b * heads + h) * queries + t, 1)[0] = log_sum;
            }
        }
    }
}
