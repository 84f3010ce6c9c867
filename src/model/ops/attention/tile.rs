//! The products inside an attention tile, all through one kernel ([`multiply`]) over register
//! blocks of 4 rows × 16 columns: it broadcasts one element of each of four left rows and
//! multiplies it into sixteen consecutive elements of a right row, so it needs no horizontal
//! sums and reads each right block once per four rows. The scores `Q·Kᵀ` and `dO·Vᵀ` use a head's
//! keys or values held transposed ([`Columns`], `D × S`), so their right rows are contiguous.

// Indexed lane loops are the form the vectoriser turns into one register operation.
#![allow(clippy::needless_range_loop)]

use super::view::Rows;

/// Rows of `a` per kernel call.
const ROWS: usize = 4;
/// Columns per kernel call: two AVX registers of f32.
const COLS: usize = 16;
/// Elements of the left rows packed at a time.
const PACK: usize = 256;

/// The rows `(b, g, 0..S)` of a `(B, G, S, D)` tensor, transposed to `D × S`.
pub struct Columns {
    data: Vec<f32>,
    len: usize,
}

impl Columns {
    /// An empty buffer, filled by [`Columns::load`].
    pub fn new() -> Self {
        Self {
            data: Vec::new(),
            len: 0,
        }
    }

    /// Holds the rows `(b, g, ·)` of `rows`, transposed.
    pub fn load(&mut self, rows: &Rows, b: usize, g: usize) {
        let [_, _, len, dim] = rows.dims;
        self.len = len;
        self.data.clear();
        self.data.resize(len * dim, 0.0);
        for s in 0..len {
            for (d, &v) in rows.row(b, g, s).iter().enumerate() {
                self.data[d * len + s] = v;
            }
        }
    }

    /// Row `d`: key (or value) element `d` of every position.
    #[inline(always)]
    pub fn row(&self, d: usize) -> &[f32] {
        &self.data[d * self.len..(d + 1) * self.len]
    }
}

/// `out[i · stride + j] (+)= Σ_k A[i][k] · b(k)[j]` for `i < m`, `j < n`, `k < depth`: added to
/// what `out` holds when `accumulate`, written over it otherwise. `a(i)` gives row `i` of `A` as
/// a slice and the step between its elements (`A[i][k] = slice[k · step]`, so a column of a
/// row-major tile serves as a row); `b(k)` is row `k` of the right operand (at least `n` long).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn multiply<'a, 'b>(
    m: usize,
    n: usize,
    depth: usize,
    a: impl Fn(usize) -> (&'a [f32], usize),
    b: impl Fn(usize) -> &'b [f32],
    out: &mut [f32],
    stride: usize,
    accumulate: bool,
) {
    let whole = n - n % COLS;
    if depth == 0 {
        if !accumulate {
            for i in 0..m {
                out[i * stride..i * stride + n].fill(0.0);
            }
        }
        return;
    }
    // The four rows' elements side by side, `PACK` of them at a time: the kernel then reads
    // them in order, with no strides or bounds to check per element.
    let mut packed = [[0f32; ROWS]; PACK];
    let mut i0 = 0;
    while i0 < m {
        let take = ROWS.min(m - i0);
        // Rows past `m` repeat the last one; their results are dropped.
        let rows: [(&[f32], usize); ROWS] = std::array::from_fn(|i| a(i0 + i.min(take - 1)));
        for k0 in (0..depth).step_by(PACK) {
            let stretch = PACK.min(depth - k0);
            for (k, lane) in packed.iter_mut().enumerate().take(stretch) {
                for i in 0..ROWS {
                    lane[i] = rows[i].0[(k0 + k) * rows[i].1];
                }
            }
            // After the first stretch, the output holds the sums so far.
            let add = accumulate || k0 > 0;
            let mut j0 = 0;
            while j0 < whole {
                let mut acc = [[0f32; COLS]; ROWS];
                let column = |k: usize| -> &[f32; COLS] {
                    b(k0 + k)[j0..j0 + COLS].try_into().expect("COLS values")
                };
                add_products(&mut acc, &packed[..stretch], column);
                for (i, acc) in acc.iter().enumerate().take(take) {
                    let o = &mut out[(i0 + i) * stride + j0..(i0 + i) * stride + j0 + COLS];
                    if add {
                        for l in 0..COLS {
                            o[l] += acc[l];
                        }
                    } else {
                        o.copy_from_slice(acc);
                    }
                }
                j0 += COLS;
            }
        }
        for i in 0..take {
            for j in whole..n {
                let (row, step) = rows[i];
                let sum: f32 = (0..depth).map(|k| row[k * step] * b(k)[j]).sum();
                let o = &mut out[(i0 + i) * stride + j];
                *o = if accumulate { *o + sum } else { sum };
            }
        }
        i0 += ROWS;
    }
}

/// `acc[i][l] += Σ_k packed[k][i] · column(k)[l]`, with AVX2 + FMA when the CPU has them.
#[inline(always)]
fn add_products<'b>(
    acc: &mut [[f32; COLS]; ROWS],
    packed: &[[f32; ROWS]],
    column: impl Fn(usize) -> &'b [f32; COLS],
) {
    #[cfg(target_arch = "x86_64")]
    {
        if crate::model::ops::simd::has_avx2() {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            unsafe { add_products_avx2(acc, packed, column) };
            return;
        }
    }
    for (k, x) in packed.iter().enumerate() {
        let bk = column(k);
        for i in 0..ROWS {
            for l in 0..COLS {
                acc[i][l] += x[i] * bk[l];
            }
        }
    }
}

/// [`add_products`] in registers: eight accumulators, two loads and four broadcasts per step.
/// (The vectoriser turned the lane loops into scalar code in some callers.)
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn add_products_avx2<'b>(
    acc: &mut [[f32; COLS]; ROWS],
    packed: &[[f32; ROWS]],
    column: impl Fn(usize) -> &'b [f32; COLS],
) {
    use std::arch::x86_64::*;
    // SAFETY (every block): each row of `acc` and each column block holds 16 f32s, read or
    // written as two groups of eight.
    let mut lo: [__m256; ROWS] =
        std::array::from_fn(|i| unsafe { _mm256_loadu_ps(acc[i].as_ptr()) });
    let mut hi: [__m256; ROWS] =
        std::array::from_fn(|i| unsafe { _mm256_loadu_ps(acc[i].as_ptr().add(8)) });
    for (k, x) in packed.iter().enumerate() {
        let bk = column(k);
        let (b_lo, b_hi) = unsafe {
            (
                _mm256_loadu_ps(bk.as_ptr()),
                _mm256_loadu_ps(bk.as_ptr().add(8)),
            )
        };
        for i in 0..ROWS {
            let xi = _mm256_set1_ps(x[i]);
            lo[i] = _mm256_fmadd_ps(xi, b_lo, lo[i]);
            hi[i] = _mm256_fmadd_ps(xi, b_hi, hi[i]);
        }
    }
    for i in 0..ROWS {
        unsafe {
            _mm256_storeu_ps(acc[i].as_mut_ptr(), lo[i]);
            _mm256_storeu_ps(acc[i].as_mut_ptr().add(8), hi[i]);
        }
    }
}

/// `out[r · stride + c] = a(r) · b_(s0 + c)` for `r < rows` and `c < cols`, where `a(r)` is a row
/// of the head dimension and `b` holds the columns.
#[inline(always)]
pub fn products<'a>(
    a: impl Fn(usize) -> &'a [f32],
    rows: usize,
    b: &Columns,
    s0: usize,
    cols: usize,
    out: &mut [f32],
    stride: usize,
) {
    let dim = if rows == 0 { 0 } else { a(0).len() };
    multiply(
        rows,
        cols,
        dim,
        |r| (a(r), 1),
        |d| &b.row(d)[s0..],
        out,
        stride,
        false,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn multiply_matches_the_triple_loop_over_several_packs() {
        // A column-strided left operand, depth over one pack, ragged rows and columns.
        let (m, n, depth) = (6, 37, 300);
        let a_data: Vec<f32> = (0..depth * 8)
            .map(|i| ((i * 31) % 17) as f32 / 8.0 - 1.0)
            .collect();
        let b_data: Vec<f32> = (0..depth * n)
            .map(|i| ((i * 13) % 23) as f32 / 11.0 - 1.0)
            .collect();
        let a = |i: usize| (&a_data[i..], 8);
        let b = |k: usize| &b_data[k * n..(k + 1) * n];
        let stride = n + 3;
        for accumulate in [false, true] {
            let mut out = vec![0.5f32; m * stride];
            multiply(m, n, depth, a, b, &mut out, stride, accumulate);
            for i in 0..m {
                for j in 0..stride {
                    let got = out[i * stride + j];
                    if j >= n {
                        assert_eq!(got, 0.5, "padding at ({i}, {j})");
                        continue;
                    }
                    let sum: f32 = (0..depth)
                        .map(|k| a_data[i + 8 * k] * b_data[k * n + j])
                        .sum();
                    let want = if accumulate { 0.5 + sum } else { sum };
                    assert!(
                        (got - want).abs() < 1e-3,
                        "({i}, {j}) {accumulate}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn products_match_plain_dots_for_ragged_tiles() {
        // (B, G, S, D) = (2, 3, 37, 9): 37 keys leave a ragged column tail, 7 rows a ragged row tail.
        let values: Vec<f32> = (0..2 * 3 * 37 * 9)
            .map(|i| ((i * 7919) % 97) as f32 / 50.0 - 1.0)
            .collect();
        let t = Tensor::from_vec(values, (2, 3, 37, 9), &Device::Cpu).unwrap();
        let (storage, layout) = t.storage_and_layout();
        let rows = Rows::new(&storage, layout).unwrap();
        let mut cols = Columns::new();
        cols.load(&rows, 1, 2);
        let a = |r: usize| rows.row(0, 1, r);
        let (n, s0, width, stride) = (7, 3, 34, 40);
        let mut out = vec![f32::NAN; n * stride];
        products(a, n, &cols, s0, width, &mut out, stride);
        for r in 0..n {
            for c in 0..width {
                let want: f32 = a(r)
                    .iter()
                    .zip(rows.row(1, 2, s0 + c))
                    .map(|(x, y)| x * y)
                    .sum();
                let got = out[r * stride + c];
                assert!((got - want).abs() < 1e-5, "({r}, {c}): {got} vs {want}");
            }
            assert!(out[r * stride + width..(r + 1) * stride]
                .iter()
                .all(|v| v.is_nan()));
        }
    }
}
