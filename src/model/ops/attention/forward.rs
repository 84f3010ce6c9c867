//! The forward kernel: for one (batch row, head), query blocks against key blocks with an online
//! softmax, so only a `BLOCK_Q × BLOCK_K` tile of scores exists at a time; keeps each query's
//! log-sum-exp for the backward.

use super::mask::AttentionMask;
use super::tile::{multiply, products, Columns};
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

/// Fewer queries than this (decoding's one) take the row-by-row products: transposing a
/// head's keys, and blocks of four query rows, would cost more than they save.
pub const BLOCKED_MIN_QUERIES: usize = 4;

/// Scaled scores `q_r · k_c` of `rows` queries from `t0` against keys `s0..s0 + cols` of head
/// `g` of batch row `b`, into `tile` (row stride [`BLOCK_K`]); hidden keys get −∞. With
/// `keys_t` (those keys held transposed) as register blocks, otherwise row by row.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn score_tile(
    p: &Problem,
    keys_t: Option<&Columns>,
    qh: usize,
    b: usize,
    g: usize,
    t0: usize,
    rows: usize,
    s0: usize,
    cols: usize,
    tile: &mut [f32],
) {
    let q_row = |r: usize| p.q.row(b, qh, t0 + r);
    match keys_t {
        Some(keys_t) => products(q_row, rows, keys_t, s0, cols, tile, BLOCK_K),
        None => {
            for r in 0..rows {
                let out = &mut tile[r * BLOCK_K..r * BLOCK_K + cols];
                let mut c = 0;
                while c + 4 <= cols {
                    let k = |i: usize| p.k.row(b, g, s0 + c + i);
                    out[c..c + 4].copy_from_slice(&dot4(q_row(r), [k(0), k(1), k(2), k(3)]));
                    c += 4;
                }
                for (c, o) in out.iter_mut().enumerate().skip(c) {
                    *o = dot(q_row(r), p.k.row(b, g, s0 + c));
                }
            }
        }
    }
    for r in 0..rows {
        let t = t0 + r;
        let out = &mut tile[r * BLOCK_K..r * BLOCK_K + cols];
        for (c, o) in out.iter_mut().enumerate() {
            *o = if p.mask.visible(b, t, s0 + c) {
                *o * p.scale
            } else {
                f32::NEG_INFINITY
            };
        }
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
    let blocked = queries >= BLOCKED_MIN_QUERIES;
    let mut keys_t = Columns::new();
    if blocked {
        keys_t.load(&p.k, b, g);
    }
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
            let keys = blocked.then_some(&keys_t);
            score_tile(p, keys, h, b, g, t0, rows, s0, cols, &mut tile);
            for r in 0..rows {
                let scores = &mut tile[r * BLOCK_K..r * BLOCK_K + cols];
                let tile_max = exp::max(scores);
                let new_max = max[r].max(tile_max);
                if new_max == f32::NEG_INFINITY {
                    // Every key of the tile is hidden: it adds nothing.
                    scores.fill(0.0);
                    continue;
                }
                if new_max > max[r] {
                    let alpha = exp::exp(max[r] - new_max);
                    sum[r] *= alpha;
                    simd::scale(&mut acc[r * dim..(r + 1) * dim], alpha);
                    max[r] = new_max;
                }
                sum[r] += exp::exp_shifted_sum(scores, new_max);
            }
            // acc += P · V for the whole tile.
            let v_row = |c: usize| p.v.row(b, g, s0 + c);
            if blocked {
                let p_row = |r: usize| (&tile[r * BLOCK_K..], 1);
                multiply(rows, dim, cols, p_row, v_row, &mut acc, dim, true);
            } else {
                for r in 0..rows {
                    let acc_row = &mut acc[r * dim..(r + 1) * dim];
                    for (c, &w) in tile[r * BLOCK_K..r * BLOCK_K + cols].iter().enumerate() {
                        simd::axpy(acc_row, w, v_row(c));
                    }
                }
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
