//! Backend: the `gemm` crate (candle's own CPU GEMM, pure Rust), in the version candle uses.

use gemm::Parallelism;

use super::problem::Problem;

/// Name shown by `tunescope bench`.
pub const NAME: &str = "gemm-crate";

/// Split wide products by columns, whatever their rows (see the BLAS backend's constant): with
/// this crate, splitting by rows made `sa-proj` and `mlp` steps 2–5% slower.
pub const ROW_TILES_FROM: Option<usize> = None;

/// Runs `p` on the calling thread (`threads == 1`) or on rayon's pool with `threads` workers.
///
/// # Safety
/// `p` must describe valid, non-overlapping buffers (checked by [`super::sgemm`]).
pub unsafe fn run(p: &Problem, threads: usize) {
    let (a_rs, a_cs) = if p.trans_a { (1, p.lda) } else { (p.lda, 1) };
    let (b_rs, b_cs) = if p.trans_b { (1, p.ldb) } else { (p.ldb, 1) };
    let parallelism = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // The crate computes dst = alpha·dst + beta·lhs·rhs, reading dst only when asked.
    gemm::gemm(
        p.m,
        p.n,
        p.k,
        p.c,
        1,
        p.ldc as isize,
        p.beta != 0.0,
        p.a,
        a_cs as isize,
        a_rs as isize,
        p.b,
        b_cs as isize,
        b_rs as isize,
        p.beta,
        1.0,
        false,
        false,
        false,
        parallelism,
    );
}

/// Nothing to set up: rayon's pool is candle's, and single-threaded calls use no pool.
pub fn threads_hint(_threads: usize) {}
