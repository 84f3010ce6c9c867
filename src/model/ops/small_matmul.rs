//! The product of decoding, `x·Wᵀ` for a few rows of `x` `(R, K)` and a weight `W` `(N, K)`
//! stored row-major: a set of dot products over the weight as it is stored (candle's GEMM
//! packs the whole weight on every call, which costs more than the product at R ≤ 16), spread
//! over candle's thread pool by blocks of output columns. Four weight rows meet two rows of
//! `x` at a time, so each weight row is read from memory once and from cache `R / 2` times.

use candle_core::{Result, Storage, Tensor};

use super::cpu::{for_each_item, worth_parallel, OutPtr};
use super::simd::{dot, dot4, dot4x2, multiversion};

/// Most rows of `x` that [`small_matmul`] takes: the probe decodes 16 prompts at a time.
pub const SMALL_MATMUL_MAX_ROWS: usize = 16;

/// Weight rows per work item of the thread pool.
const COLUMNS_PER_ITEM: usize = 64;

/// `x·wᵀ` `(R, N)` for f32 CPU tensors `x` `(R, K)`, `R ≤` [`SMALL_MATMUL_MAX_ROWS`], and a
/// contiguous `w` `(N, K)`; `None` where it does not apply (the caller then uses `matmul`).
/// The result carries no graph.
pub fn small_matmul(x: &Tensor, w: &Tensor) -> Result<Option<Tensor>> {
    let (Ok((rows, k)), Ok((n, wk))) = (x.dims2(), w.dims2()) else {
        return Ok(None);
    };
    let applies = rows <= SMALL_MATMUL_MAX_ROWS
        && k == wk
        && k > 0
        && x.device().is_cpu()
        && w.device().is_cpu()
        && x.dtype() == candle_core::DType::F32
        && w.dtype() == candle_core::DType::F32
        && w.is_contiguous();
    if !applies {
        return Ok(None);
    }
    let x = x.contiguous()?;
    let (xs, xl) = x.storage_and_layout();
    let (ws, wl) = w.storage_and_layout();
    let (Storage::Cpu(xs), Storage::Cpu(ws)) = (&*xs, &*ws) else {
        return Ok(None);
    };
    let (Some((x0, x1)), Some((w0, w1))) = (xl.contiguous_offsets(), wl.contiguous_offsets())
    else {
        return Ok(None);
    };
    let xv = &xs.as_slice::<f32>()?[x0..x1];
    let wv = &ws.as_slice::<f32>()?[w0..w1];
    let mut out = vec![0f32; rows * n];
    let ptr = OutPtr(out.as_mut_ptr());
    let items = n.div_ceil(COLUMNS_PER_ITEM);
    let shape = Shape { rows, k, n };
    for_each_item(items, worth_parallel(rows * n * k / 8), |item| {
        let start = item * COLUMNS_PER_ITEM;
        let end = n.min(start + COLUMNS_PER_ITEM);
        columns(xv, wv, shape, start, end, ptr);
    });
    Ok(Some(Tensor::from_vec(out, (rows, n), x.device())?))
}

/// Sizes of one product.
#[derive(Clone, Copy)]
struct Shape {
    rows: usize,
    k: usize,
    n: usize,
}

multiversion! {
    /// Output columns `start..end` of every row.
    fn columns(x: &[f32], w: &[f32], s: Shape, start: usize, end: usize, out: OutPtr) => columns_body
}

#[inline(always)]
fn columns_body(x: &[f32], w: &[f32], s: Shape, start: usize, end: usize, out: OutPtr) {
    let Shape { rows, k, n } = s;
    let w_row = |j: usize| &w[j * k..(j + 1) * k];
    let mut j = start;
    while j + 4 <= end {
        let ws = [w_row(j), w_row(j + 1), w_row(j + 2), w_row(j + 3)];
        let x_row = |r: usize| &x[r * k..(r + 1) * k];
        let mut r = 0;
        while r + 2 <= rows {
            let d = dot4x2(x_row(r), x_row(r + 1), ws);
            for (i, d) in d.iter().enumerate() {
                // SAFETY: columns j..j + 4 of rows r and r + 1 belong to this call's range.
                unsafe { out.slice((r + i) * n + j, 4) }.copy_from_slice(d);
            }
            r += 2;
        }
        if r < rows {
            let d = dot4(x_row(r), ws);
            // SAFETY: columns j..j + 4 of row r belong to this call's column range.
            unsafe { out.slice(r * n + j, 4) }.copy_from_slice(&d);
        }
        j += 4;
    }
    for j in j..end {
        for r in 0..rows {
            // SAFETY: column j of row r belongs to this call's column range.
            let cell = unsafe { out.slice(r * n + j, 1) };
            cell[0] = dot(&x[r * k..(r + 1) * k], w_row(j));
        }
    }
}
