//! One GEMM problem on raw row-major storage, and its split into blocks of output rows or
//! columns (the tiles the thread pool hands out).

use std::ops::Range;

/// `C = op(A)·op(B) + beta·C` on row-major storage: `op(A)` is `m × k` (stored `k × m` when
/// `trans_a`), `op(B)` is `k × n` (stored `n × k` when `trans_b`), `C` is `m × n`; `ld*` are
/// the distances between stored rows.
#[derive(Debug, Clone, Copy)]
pub(super) struct Problem {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: *const f32,
    pub lda: usize,
    pub trans_a: bool,
    pub b: *const f32,
    pub ldb: usize,
    pub trans_b: bool,
    pub c: *mut f32,
    pub ldc: usize,
    pub beta: f32,
}

// SAFETY: a `Problem` is only built over buffers that outlive every call made with it, and the
// tiles of one problem write disjoint blocks of `C` (see `rows` and `cols`).
unsafe impl Send for Problem {}
unsafe impl Sync for Problem {}

impl Problem {
    /// Floating-point operations of the product (two per multiply-add).
    pub fn flops(&self) -> f64 {
        2.0 * self.m as f64 * self.n as f64 * self.k as f64
    }

    /// The sub-problem computing rows `r` of `C`.
    pub fn rows(&self, r: Range<usize>) -> Problem {
        let a_offset = if self.trans_a {
            r.start
        } else {
            r.start * self.lda
        };
        Problem {
            m: r.len(),
            // SAFETY (of the offsets): `r` lies in `0..m`, so both stay inside their buffers.
            a: self.a.wrapping_add(a_offset),
            c: self.c.wrapping_add(r.start * self.ldc),
            ..*self
        }
    }

    /// The sub-problem computing columns `r` of `C`.
    pub fn cols(&self, r: Range<usize>) -> Problem {
        let b_offset = if self.trans_b {
            r.start * self.ldb
        } else {
            r.start
        };
        Problem {
            n: r.len(),
            b: self.b.wrapping_add(b_offset),
            c: self.c.wrapping_add(r.start),
            ..*self
        }
    }

    /// `C = beta·C` (the whole product when `k == 0`).
    ///
    /// # Safety
    /// `c` must address an `m × n` block with row distance `ldc`, not read or written by anyone
    /// else during the call.
    pub unsafe fn scale_c(&self) {
        for i in 0..self.m {
            let row = self.c.add(i * self.ldc);
            if self.beta == 0.0 {
                // Written, not read: `C` may not be initialised yet (see `sgemm_uninit`).
                std::ptr::write_bytes(row, 0, self.n);
            } else {
                std::slice::from_raw_parts_mut(row, self.n)
                    .iter_mut()
                    .for_each(|v| *v *= self.beta);
            }
        }
    }
}

/// Splits `0..len` into at most `parts` ranges whose starts are multiples of `align` (the last
/// range takes the remainder); fewer parts when `len` is short.
pub(super) fn split(len: usize, parts: usize, align: usize) -> Vec<Range<usize>> {
    let per = len.div_ceil(parts.max(1)).div_ceil(align) * align;
    let per = per.max(align);
    (0..len)
        .step_by(per)
        .map(|start| start..len.min(start + per))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_covers_the_range_with_aligned_starts() {
        assert_eq!(split(512, 2, 16), vec![0..256, 256..512]);
        assert_eq!(split(65, 2, 16), vec![0..48, 48..65]);
        assert_eq!(split(7, 4, 16), vec![0..7]);
        assert_eq!(split(0, 2, 16), Vec::<Range<usize>>::new());
        assert_eq!(split(100, 3, 1), vec![0..34, 34..68, 68..100]);
    }
}
