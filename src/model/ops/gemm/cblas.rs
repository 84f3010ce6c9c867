//! Backend: `cblas_sgemm` of the BLAS chosen at build time: the system OpenBLAS (feature
//! `openblas`, linked here by name: `libopenblas.so` from `libopenblas-dev`) or Intel MKL
//! (feature `mkl`, linked statically by candle's `intel-mkl-src`).

use std::sync::atomic::{AtomicUsize, Ordering};

use cblas_sys::{cblas_sgemm, CBLAS_LAYOUT, CBLAS_TRANSPOSE};

use super::problem::Problem;

/// Name shown by `tunescope bench`.
#[cfg(feature = "openblas")]
pub const NAME: &str = "openblas";
/// Name shown by `tunescope bench`.
#[cfg(feature = "mkl")]
pub const NAME: &str = "mkl";

/// Products with at least this many output rows per pool thread are split by rows even when
/// they have more columns (each thread then packs all of `B` rather than all of `A`). With
/// OpenBLAS this made the 512-row products of SmolLM2-135M's 576-wide weights up to 20% faster
/// and `sa-proj` and `mlp` steps 1–3% faster than splitting such products by columns.
pub const ROW_TILES_FROM: Option<usize> = Some(64);

// The openblas-src crate would link the same library but builds a downloader (ureq, tar) even
// for its `system` feature; the system library needs only its name.
#[cfg(feature = "openblas")]
#[link(name = "openblas")]
extern "C" {
    fn openblas_set_num_threads(threads: std::ffi::c_int);
}

#[cfg(feature = "mkl")]
extern "C" {
    fn MKL_Set_Num_Threads_Local(threads: std::ffi::c_int) -> std::ffi::c_int;
}

/// The thread count last given to OpenBLAS (0: never set).
static SET_THREADS: AtomicUsize = AtomicUsize::new(0);

/// Makes the library's own threading use `threads` threads from now on (OpenBLAS: a global
/// setting, changed only when it differs; MKL: set per call, see [`run`]).
pub fn threads_hint(threads: usize) {
    if SET_THREADS.swap(threads, Ordering::Relaxed) != threads {
        #[cfg(feature = "openblas")]
        // SAFETY: plain setter of the library's thread count.
        unsafe {
            openblas_set_num_threads(threads as std::ffi::c_int)
        };
    }
}

/// Runs `p` with the library using `threads` threads of its own (1: the calling thread only).
///
/// # Safety
/// `p` must describe valid, non-overlapping buffers whose dimensions fit a C `int` (checked
/// by [`super::sgemm`]).
pub unsafe fn run(p: &Problem, threads: usize) {
    threads_hint(threads);
    let trans = |t: bool| {
        if t {
            CBLAS_TRANSPOSE::CblasTrans
        } else {
            CBLAS_TRANSPOSE::CblasNoTrans
        }
    };
    // MKL's thread-local count leaves candle's own MKL matmuls on the global setting.
    #[cfg(feature = "mkl")]
    let previous = MKL_Set_Num_Threads_Local(threads as std::ffi::c_int);
    cblas_sgemm(
        CBLAS_LAYOUT::CblasRowMajor,
        trans(p.trans_a),
        trans(p.trans_b),
        p.m as i32,
        p.n as i32,
        p.k as i32,
        1.0,
        p.a,
        p.lda.max(1) as i32,
        p.b,
        p.ldb.max(1) as i32,
        p.beta,
        p.c,
        p.ldc.max(1) as i32,
    );
    #[cfg(feature = "mkl")]
    MKL_Set_Num_Threads_Local(previous);
}
