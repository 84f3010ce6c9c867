//! The one GEMM entry point of the linear layers: [`sgemm`] computes `C = op(A)·op(B) + beta·C`
//! on f32 row-major slices, and [`linear`] builds the linear product `x·Wᵀ` on it, so that the
//! forward product, the input gradient and the weight gradient all run on the same backend.
//!
//! Backend, chosen at build time (see [`backend_name`]): `cblas_sgemm` of the system OpenBLAS
//! (feature `openblas`) or of Intel MKL (feature `mkl`), else the `gemm` crate (candle's own
//! GEMM). Enabling both BLAS features is a build error.
//!
//! Threads: one pool. By default ([`Threading::Pool`]) the output is split into as many blocks
//! of rows (or, for a wide product, columns; where a backend draws that line is its
//! `ROW_TILES_FROM`) as candle's barrier pool has threads, and each block is one
//! single-threaded backend call on a pool thread — the same threads the fused ops run on, so no
//! second pool (rayon, OpenBLAS's pthreads, OpenMP) spins while they wait. [`Threading::Backend`]
//! instead lets the backend thread itself (rayon for the `gemm` crate, the library's own pool
//! for a BLAS); it exists to measure the choice (`tunescope bench --gemm`, `--gemm-threading`).
//! Measured on the 2-core development machine (README, "Performance"): per product shape the two
//! are within about ±10% of each other, either way, for every backend, while whole
//! SmolLM2-135M training steps take 12–19% less time with the pool split for all three
//! backends (not broken down further; the two sets of threads hand the cores back and forth
//! between the products). The pool split also keeps the thread count of the fused ops
//! (`CANDLE_NUM_THREADS`) and leaves MKL's global threading to candle's remaining MKL calls
//! (the count is set per call). A static split into one block per thread suffers when another
//! process takes a core; finer blocks would repack the shared operand once per block.

mod linear_op;
mod problem;

#[cfg(all(feature = "openblas", feature = "mkl"))]
compile_error!("features `openblas` and `mkl` both choose the GEMM backend: enable one of them");

#[cfg(any(feature = "openblas", feature = "mkl"))]
mod cblas;
#[cfg(any(feature = "openblas", feature = "mkl"))]
use cblas as backend;
#[cfg(not(any(feature = "openblas", feature = "mkl")))]
mod gemm_crate;
#[cfg(not(any(feature = "openblas", feature = "mkl")))]
use gemm_crate as backend;

use std::sync::atomic::{AtomicU8, Ordering};

use candle_core::{bail, Result};

pub use linear_op::{handles, linear, linear_unread, linear_with_grad_sink};
use problem::{split, Problem};

/// The backend compiled in: `gemm-crate`, `openblas` or `mkl`.
pub fn backend_name() -> &'static str {
    backend::NAME
}

/// Who spreads one product over the cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threading {
    /// Blocks of the output on candle's barrier pool, one single-threaded backend call each.
    Pool,
    /// One call; the backend threads itself.
    Backend,
}

impl Threading {
    /// `pool` or `backend`.
    pub fn name(self) -> &'static str {
        match self {
            Threading::Pool => "pool",
            Threading::Backend => "backend",
        }
    }

    /// Parses [`Threading::name`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pool" => Some(Threading::Pool),
            "backend" => Some(Threading::Backend),
            _ => None,
        }
    }
}

static THREADING: AtomicU8 = AtomicU8::new(0);

/// Sets the threading of every later product in this process (default [`Threading::Pool`]).
pub fn set_threading(threading: Threading) {
    THREADING.store(threading as u8, Ordering::Relaxed);
}

/// The threading in use.
pub fn threading() -> Threading {
    if THREADING.load(Ordering::Relaxed) == Threading::Backend as u8 {
        Threading::Backend
    } else {
        Threading::Pool
    }
}

/// Threads of candle's barrier pool, the calling thread included.
pub fn pool_threads() -> usize {
    candle_core::utils::barrier_pool().n_workers() + 1
}

/// Products below this many FLOPs run on the calling thread.
const PARALLEL_MIN_FLOPS: f64 = 4.0e6;

/// Tile starts are multiples of this (a whole number of the backends' register blocks).
const TILE_ALIGN: usize = 16;

/// One operand of [`sgemm`]: row-major `data` with `ld` elements between stored rows, used as
/// stored or transposed (`trans`).
#[derive(Debug, Clone, Copy)]
pub struct Operand<'a> {
    pub data: &'a [f32],
    pub ld: usize,
    pub trans: bool,
}

impl<'a> Operand<'a> {
    /// `data` as stored, rows `ld` apart.
    pub fn plain(data: &'a [f32], ld: usize) -> Self {
        Self {
            data,
            ld,
            trans: false,
        }
    }

    /// `data` transposed, stored rows `ld` apart.
    pub fn transposed(data: &'a [f32], ld: usize) -> Self {
        Self {
            data,
            ld,
            trans: true,
        }
    }

    /// Checks that `op(self)` of `rows × cols` fits in `data`.
    fn check(&self, rows: usize, cols: usize, what: &str) -> Result<()> {
        let (stored_rows, stored_cols) = if self.trans {
            (cols, rows)
        } else {
            (rows, cols)
        };
        check_block(self.data.len(), stored_rows, stored_cols, self.ld, what)
    }
}

fn check_block(len: usize, rows: usize, cols: usize, ld: usize, what: &str) -> Result<()> {
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    if ld < cols {
        bail!("sgemm: {what} has rows of {cols} but ld {ld}");
    }
    if len < (rows - 1) * ld + cols {
        bail!("sgemm: {what} needs {rows} rows of {cols} (ld {ld}) but has {len} values");
    }
    if ld > i32::MAX as usize || rows > i32::MAX as usize {
        bail!("sgemm: {what} is too large for a 32-bit BLAS");
    }
    Ok(())
}

/// `C = op(A)·op(B) + beta·C` with `op(A)` of `m × k`, `op(B)` of `k × n` and `C` of `m × n`
/// (rows `ldc` apart), with the process's [`threading`]. With `beta == 0`, `C` is only written.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: Operand,
    b: Operand,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
) -> Result<()> {
    sgemm_with(m, n, k, a, b, beta, c, ldc, threading())
}

/// `C = op(A)·op(B)` into `c`, whose contents need not be initialised: every element of the
/// `m × n` block (rows `ldc` apart) is written and none is read (every backend leaves `C`
/// unread when `beta` is 0). A fresh output buffer then needs no zeroing pass first.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_uninit(
    m: usize,
    n: usize,
    k: usize,
    a: Operand,
    b: Operand,
    c: &mut [std::mem::MaybeUninit<f32>],
    ldc: usize,
) -> Result<()> {
    let c_len = c.len();
    let p = checked(m, n, k, a, b, c.as_mut_ptr().cast::<f32>(), c_len, ldc, 0.0)?;
    // SAFETY: every operand was checked to hold its block, `c` is borrowed mutably, and with
    // beta 0 the backends only write `C`.
    unsafe { run(&p, threading()) };
    Ok(())
}

/// `op(A)·op(B)` of `m × n` in a new row-major buffer (not zeroed first: the product writes
/// every element).
pub fn sgemm_new(m: usize, n: usize, k: usize, a: Operand, b: Operand) -> Result<Vec<f32>> {
    let len = m * n;
    let mut c: Vec<f32> = Vec::with_capacity(len);
    sgemm_uninit(m, n, k, a, b, &mut c.spare_capacity_mut()[..len], n)?;
    // SAFETY: `sgemm_uninit` wrote all `m × n = len` elements (rows `n` apart).
    unsafe { c.set_len(len) };
    Ok(c)
}

/// [`sgemm`] with the threading given.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_with(
    m: usize,
    n: usize,
    k: usize,
    a: Operand,
    b: Operand,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
    threading: Threading,
) -> Result<()> {
    let c_len = c.len();
    let p = checked(m, n, k, a, b, c.as_mut_ptr(), c_len, ldc, beta)?;
    // SAFETY: every operand was checked to hold its block, and `c` is borrowed mutably.
    unsafe { run(&p, threading) };
    Ok(())
}

/// The problem, once each operand is checked to hold its block (`c` holds `c_len` values).
#[allow(clippy::too_many_arguments)]
fn checked(
    m: usize,
    n: usize,
    k: usize,
    a: Operand,
    b: Operand,
    c: *mut f32,
    c_len: usize,
    ldc: usize,
    beta: f32,
) -> Result<Problem> {
    a.check(m, k, "A")?;
    b.check(k, n, "B")?;
    check_block(c_len, m, n, ldc, "C")?;
    if k > i32::MAX as usize {
        bail!("sgemm: k {k} is too large for a 32-bit BLAS");
    }
    Ok(Problem {
        m,
        n,
        k,
        a: a.data.as_ptr(),
        lda: a.ld,
        trans_a: a.trans,
        b: b.data.as_ptr(),
        ldb: b.ld,
        trans_b: b.trans,
        c,
        ldc,
        beta,
    })
}

/// Runs a checked problem with `threading`.
///
/// # Safety
/// The buffers behind `p` must hold its blocks, and `C` must not alias `A` or `B`.
unsafe fn run(p: &Problem, threading: Threading) {
    if p.m == 0 || p.n == 0 {
        return;
    }
    if p.k == 0 {
        p.scale_c();
        return;
    }
    let threads = pool_threads();
    if threads <= 1 || p.flops() < PARALLEL_MIN_FLOPS {
        backend::run(p, 1);
        return;
    }
    if threading == Threading::Backend {
        backend::run(p, threads);
        return;
    }
    backend::threads_hint(1);
    let by_rows = p.m >= p.n || backend::ROW_TILES_FROM.is_some_and(|min| p.m >= threads * min);
    let tiles: Vec<Problem> = if by_rows {
        split(p.m, threads, TILE_ALIGN)
            .into_iter()
            .map(|r| p.rows(r))
            .collect()
    } else {
        split(p.n, threads, TILE_ALIGN)
            .into_iter()
            .map(|r| p.cols(r))
            .collect()
    };
    let tiles = &tiles;
    candle_core::utils::barrier_pool().execute_chunked(tiles.len(), |range| {
        for tile in &tiles[range] {
            // SAFETY: the tiles write disjoint blocks of `C` and read inside `A` and `B`.
            unsafe { backend::run(tile, 1) };
        }
    });
}
