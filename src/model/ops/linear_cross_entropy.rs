//! The loss head in one pass: the summed cross entropy `Σᵣ −log softmax(zᵣ)[targetᵣ]` of the
//! logits `z = x·Wᵀ` (optionally soft-capped, `z = c·tanh(x·Wᵀ / c)`), together with the
//! gradients of that sum for `x` and `W`.
//!
//! The logits are formed a block of rows at a time ([`block_rows`]), turned into their gradient
//! `softmax − onehot` in place, and multiplied out at once into the rows' gradient (`dz·W`) and
//! the weight's (`dzᵀ·x`, added up over blocks). So the full `(N, V)` logits, their gradient
//! and the gradient buffer candle's backward would add them into never exist: at 16 × 512 tokens
//! and a 49k vocabulary those are three 1.5 GiB tensors. All three products go through
//! [`sgemm`](super::gemm::sgemm), the one GEMM entry point.
//!
//! The gradients are formed in the forward because the loss is the last op of a training step:
//! backward always follows, and only scales them by its incoming gradient.

use std::mem::MaybeUninit;

use candle_core::{bail, Result, Tensor};

use super::cpu::{for_each_row_with, with_f32, with_u32, worth_parallel, OutPtr};
use super::exp;
use super::gemm::{self, sgemm, sgemm_new, sgemm_uninit, Operand};

/// Most logits one block holds (rows × vocabulary): 32 Mi f32 values, 128 MiB.
const BLOCK_LOGITS: usize = 32 << 20;

/// Rows per block for `rows` rows over a vocabulary of `vocab`: as many as
/// [`BLOCK_LOGITS`] allows, evened out over the blocks needed.
pub fn block_rows(vocab: usize, rows: usize) -> usize {
    let most = (BLOCK_LOGITS / vocab.max(1)).max(1);
    let rows = rows.max(1);
    rows.div_ceil(rows.div_ceil(most))
}

/// Whether [`linear_cross_entropy_sum`] takes `x` and `w`: the GEMM linear's conditions (fused
/// ops on, f32 on the CPU) with `x` a matrix.
pub fn handles(x: &Tensor, w: &Tensor) -> bool {
    x.rank() == 2 && gemm::handles(x, w)
}

/// The summed loss and, where asked for, its gradients.
#[derive(Debug)]
pub struct HeadLoss {
    /// `Σᵣ −log softmax(zᵣ)[targetᵣ]`, summed in f64.
    pub sum: f64,
    /// The gradient for `x`, `(N, H)`.
    pub x_grad: Option<Tensor>,
    /// The gradient for `W`, `(V, H)`.
    pub w_grad: Option<Tensor>,
}

/// The summed cross entropy of `x·Wᵀ` (soft-capped at `softcap` when given) at `targets`, for
/// `x` of `(N, H)`, `W` of `(V, H)` and u32 `targets` of `(N,)`, with the gradient for `x` when
/// `want_x_grad` and for `W` when `want_w_grad` (see the module doc). The caller checks
/// [`handles`] first.
pub fn linear_cross_entropy_sum(
    x: &Tensor,
    w: &Tensor,
    targets: &Tensor,
    softcap: Option<f64>,
    want_x_grad: bool,
    want_w_grad: bool,
) -> Result<HeadLoss> {
    if !handles(x, w) {
        bail!("linear_cross_entropy_sum takes an f32 CPU matrix of rows and an f32 CPU weight, with fused ops on");
    }
    let (rows, hidden) = x.dims2()?;
    let (vocab, w_hidden) = w.dims2()?;
    if w_hidden != hidden {
        bail!("linear_cross_entropy_sum: the rows have {hidden} columns but W has {w_hidden}");
    }
    if targets.dims() != [rows] {
        bail!(
            "linear_cross_entropy_sum: targets have shape {:?}, expected [{rows}]",
            targets.dims()
        );
    }
    super::count_fused_call();
    let shape = HeadShape {
        rows,
        hidden,
        vocab,
    };
    let grads = with_f32(x, |x| {
        with_f32(w, |w| {
            with_u32(&targets.to_dtype(candle_core::DType::U32)?, |targets| {
                if let Some(bad) = targets.iter().find(|&&t| t as usize >= vocab) {
                    bail!(
                        "linear_cross_entropy_sum: target {bad} is outside a vocabulary of {vocab}"
                    );
                }
                let cap = softcap.map(|c| c as f32);
                let block = block_rows(vocab, rows);
                head_loss(shape, block, x, w, targets, cap, want_x_grad, want_w_grad)
            })
        })
    })?;
    let device = x.device();
    Ok(HeadLoss {
        sum: grads.sum,
        x_grad: grads
            .x_grad
            .map(|g| Tensor::from_vec(g, (rows, hidden), device))
            .transpose()?,
        w_grad: grads
            .w_grad
            .map(|g| Tensor::from_vec(g, (vocab, hidden), device))
            .transpose()?,
    })
}

/// The sizes of one head: `rows` rows of `hidden` values over a vocabulary of `vocab`.
#[derive(Debug, Clone, Copy)]
struct HeadShape {
    rows: usize,
    hidden: usize,
    vocab: usize,
}

/// [`HeadLoss`] over plain buffers.
struct Sums {
    sum: f64,
    x_grad: Option<Vec<f32>>,
    w_grad: Option<Vec<f32>>,
}

/// The loss and gradients of `shape`'s head in blocks of `block` rows.
#[allow(clippy::too_many_arguments)]
fn head_loss(
    shape: HeadShape,
    block: usize,
    x: &[f32],
    w: &[f32],
    targets: &[u32],
    cap: Option<f32>,
    want_x_grad: bool,
    want_w_grad: bool,
) -> Result<Sums> {
    let HeadShape {
        rows,
        hidden,
        vocab,
    } = shape;
    let block = block.max(1);
    let mut logits: Vec<f32> = Vec::with_capacity(block * vocab);
    // Each block writes its rows into the spare capacity; the length is set once all have.
    let mut x_grad: Option<Vec<f32>> = want_x_grad.then(|| Vec::with_capacity(rows * hidden));
    let mut w_grad: Option<Vec<f32>> = None;
    let mut losses = vec![0f32; rows];
    for start in (0..rows).step_by(block) {
        let len = block.min(rows - start);
        let x_block = &x[start * hidden..(start + len) * hidden];
        let z = &mut logits.spare_capacity_mut()[..len * vocab];
        sgemm_uninit(
            len,
            vocab,
            hidden,
            Operand::plain(x_block, hidden),
            Operand::transposed(w, hidden),
            z,
            vocab,
        )?;
        // SAFETY: the product wrote all `len × vocab` values.
        let z = unsafe { &mut *(z as *mut [MaybeUninit<f32>] as *mut [f32]) };
        let loss_out = OutPtr(losses[start..].as_mut_ptr());
        let block_targets = &targets[start..start + len];
        for_each_row_with(z, vocab, worth_parallel(len * vocab), |r, row| {
            let loss = row_loss_and_grad(row, block_targets[r] as usize, cap);
            // SAFETY: row `r` of this block is written by this call only.
            unsafe { loss_out.slice(r, 1)[0] = loss };
        });
        let dz: &[f32] = z;
        if let Some(g) = x_grad.as_mut() {
            sgemm_uninit(
                len,
                hidden,
                vocab,
                Operand::plain(dz, vocab),
                Operand::plain(w, hidden),
                &mut g.spare_capacity_mut()[start * hidden..(start + len) * hidden],
                hidden,
            )?;
        }
        if want_w_grad {
            let (a, b) = (
                Operand::transposed(dz, vocab),
                Operand::plain(x_block, hidden),
            );
            match w_grad.as_mut() {
                Some(g) => sgemm(vocab, hidden, len, a, b, 1.0, g, hidden)?,
                None => w_grad = Some(sgemm_new(vocab, hidden, len, a, b)?),
            }
        }
    }
    let x_grad = x_grad.map(|mut g| {
        // SAFETY: the blocks cover every row, and each wrote its rows of the gradient in full.
        unsafe { g.set_len(rows * hidden) };
        g
    });
    let w_grad = match w_grad {
        Some(g) => Some(g),
        // No rows: the weight's gradient is zero.
        None if want_w_grad => Some(vec![0f32; vocab * hidden]),
        None => None,
    };
    Ok(Sums {
        sum: losses.iter().map(|&l| l as f64).sum(),
        x_grad,
        w_grad,
    })
}

/// Turns one row of logits into the gradient of its cross entropy at `target` (soft-capped at
/// `cap` first when given) and returns that cross entropy.
fn row_loss_and_grad(row: &mut [f32], target: usize, cap: Option<f32>) -> f32 {
    match cap {
        None => plain_row(row, target),
        Some(cap) => capped_row(row, target, cap),
    }
}

/// `row ← softmax(row) − onehot(target)`; returns `logsumexp(row) − row[target]`.
fn plain_row(row: &mut [f32], target: usize) -> f32 {
    let picked = row[target];
    let max = exp::max(row);
    let sum = exp::exp_shifted_sum(row, max);
    scale(row, 1.0 / sum);
    row[target] -= 1.0;
    max + sum.ln() - picked
}

/// [`plain_row`] for the logits `c·tanh(row / c)`, whose gradient is the plain one times
/// `1 − tanh²`.
fn capped_row(row: &mut [f32], target: usize, cap: f32) -> f32 {
    let mut tanh = row.to_vec();
    for (t, z) in tanh.iter_mut().zip(row.iter_mut()) {
        *t = (*z / cap).tanh();
        *z = cap * *t;
    }
    let loss = plain_row(row, target);
    for (g, t) in row.iter_mut().zip(&tanh) {
        *g *= 1.0 - t * t;
    }
    loss
}

super::simd::multiversion! {
    /// `xs[i] *= factor`.
    fn scale(xs: &mut [f32], factor: f32) => scale_body
}

#[inline(always)]
fn scale_body(xs: &mut [f32], factor: f32) {
    for x in xs {
        *x *= factor;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_cover_the_rows_evenly_within_the_budget() {
        assert_eq!(block_rows(49152, 512), 512);
        // 8192 rows at 682 per block at most: 13 blocks of 631 or fewer.
        let b = block_rows(49152, 8192);
        assert!(
            b * 49152 <= BLOCK_LOGITS && 8192usize.div_ceil(b) == 13,
            "{b}"
        );
        assert_eq!(block_rows(BLOCK_LOGITS * 2, 5), 1);
        assert_eq!(block_rows(10, 0), 1);
    }

    /// A seeded value in [-1, 1).
    fn noise(i: usize, seed: u64) -> f32 {
        let mut z = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed;
        z = (z ^ (z >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// The loss and both gradients by the definition, in f64, one row at a time.
    fn by_definition(
        shape: HeadShape,
        x: &[f32],
        w: &[f32],
        targets: &[u32],
        cap: Option<f64>,
    ) -> (f64, Vec<f64>, Vec<f64>) {
        let HeadShape {
            rows,
            hidden,
            vocab,
        } = shape;
        let (mut loss, mut dx, mut dw) =
            (0f64, vec![0f64; rows * hidden], vec![0f64; vocab * hidden]);
        for r in 0..rows {
            let xr = &x[r * hidden..(r + 1) * hidden];
            let raw: Vec<f64> = (0..vocab)
                .map(|v| {
                    (0..hidden)
                        .map(|k| xr[k] as f64 * w[v * hidden + k] as f64)
                        .sum()
                })
                .collect();
            let z: Vec<f64> = raw
                .iter()
                .map(|&a| cap.map_or(a, |c| c * (a / c).tanh()))
                .collect();
            let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = z.iter().map(|&v| (v - max).exp()).sum();
            let t = targets[r] as usize;
            loss += max + sum.ln() - z[t];
            for v in 0..vocab {
                let mut g = (z[v] - max).exp() / sum - if v == t { 1.0 } else { 0.0 };
                if let Some(c) = cap {
                    g *= 1.0 - (raw[v] / c).tanh().powi(2);
                }
                for k in 0..hidden {
                    dx[r * hidden + k] += g * w[v * hidden + k] as f64;
                    dw[v * hidden + k] += g * xr[k] as f64;
                }
            }
        }
        (loss, dx, dw)
    }

    fn assert_close(label: &str, got: &[f32], want: &[f64]) {
        assert_eq!(got.len(), want.len(), "{label}");
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g as f64 - w).abs() <= 1e-5 + 1e-4 * w.abs(),
                "{label}[{i}]: {g} vs {w}"
            );
        }
    }

    #[test]
    fn blocked_loss_and_gradients_match_the_definition() {
        let shape = HeadShape {
            rows: 10,
            hidden: 8,
            vocab: 37,
        };
        let x: Vec<f32> = (0..80).map(|i| 2.0 * noise(i, 1)).collect();
        let w: Vec<f32> = (0..37 * 8).map(|i| noise(i, 2)).collect();
        let targets: Vec<u32> = (0..10).map(|r| (r * 7 % 37) as u32).collect();
        for cap in [None, Some(1.5)] {
            let (loss, dx, dw) = by_definition(shape, &x, &w, &targets, cap);
            // One block, blocks of 3 (the last one short) and single rows.
            for block in [10, 3, 1] {
                let label = format!("cap {cap:?}, blocks of {block}");
                let got = head_loss(
                    shape,
                    block,
                    &x,
                    &w,
                    &targets,
                    cap.map(|c| c as f32),
                    true,
                    true,
                )
                .unwrap();
                assert!(
                    (got.sum - loss).abs() <= 1e-5 * loss.abs(),
                    "{label}: {} vs {loss}",
                    got.sum
                );
                assert_close(&format!("{label}, dx"), &got.x_grad.unwrap(), &dx);
                assert_close(&format!("{label}, dw"), &got.w_grad.unwrap(), &dw);
            }
        }
        // Only the gradients asked for are formed.
        let got = head_loss(shape, 4, &x, &w, &targets, None, false, true).unwrap();
        assert!(got.x_grad.is_none() && got.w_grad.is_some());
        let got = head_loss(shape, 4, &x, &w, &targets, None, false, false).unwrap();
        assert!(got.x_grad.is_none() && got.w_grad.is_none());
    }

    #[test]
    fn a_target_outside_the_vocabulary_is_an_error() {
        let device = candle_core::Device::Cpu;
        let x = Tensor::zeros((2, 4), candle_core::DType::F32, &device).unwrap();
        let w = Tensor::zeros((5, 4), candle_core::DType::F32, &device).unwrap();
        let targets = Tensor::new(&[1u32, 5], &device).unwrap();
        let err = linear_cross_entropy_sum(&x, &w, &targets, None, true, true).unwrap_err();
        assert!(
            err.to_string()
                .contains("target 5 is outside a vocabulary of 5"),
            "{err}"
        );
    }
}
