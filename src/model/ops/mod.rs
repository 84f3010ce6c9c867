//! Fused ops with their own backward pass: RMS norm, softmax over the last dimension (plain and
//! with the attention scale and mask folded in), causal attention, rotary embedding (alone, or
//! while splitting a projection into heads), SwiGLU, the summed cross entropy at given targets
//! (alone, or with the unembedding and both gradients in one blocked pass); and the few-row
//! product of decoding.
//!
//! On the CPU each op is one candle `CustomOp` whose forward and backward are single passes over
//! the rows (computed in f32 whatever the storage dtype, spread over candle's thread pool); the
//! explicit compositions of candle ops build several intermediate tensors per op and as many
//! backward nodes. On other devices, or with [`set_fused`]`(false)`, every function here runs the
//! explicit composition (the `*_composed` functions), so CUDA and Metal builds need no kernels.
//! Operands that are plain tensors (frozen weights, masks, rotary tables) receive no gradient.

mod adamw;
mod attention;
mod cpu;
mod cross_entropy;
pub(crate) mod exp;
pub mod gemm;
mod heads;
mod in_place;
pub mod linear_cross_entropy;
mod rms_norm;
mod rope;
pub(crate) mod simd;
mod small_matmul;
mod softmax;
mod swiglu;

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Tensor};

pub use adamw::{adamw_update, AdamWStep};
pub use attention::{
    causal_attention, causal_attention_composed, causal_attention_with_memo, fused_attention,
    fused_attention_for, repeat_kv, set_fused_attention, AttentionMask, AttentionMemo, MemoUse,
};
pub use cross_entropy::{cross_entropy_sum, cross_entropy_sum_composed};
pub use heads::{to_heads, to_heads_composed};
pub use in_place::{add_in_place, scale_in_place};
pub use linear_cross_entropy::{linear_cross_entropy_sum, HeadLoss};
pub use rms_norm::{rms_norm, rms_norm_composed};
pub use rope::{rope, rope_composed};
pub use small_matmul::{small_matmul, SMALL_MATMUL_MAX_ROWS};
pub use softmax::{
    masked_softmax, masked_softmax_composed, softmax_last_dim, softmax_last_dim_composed,
};
pub use swiglu::{swiglu, swiglu_composed};

static FUSED: AtomicBool = AtomicBool::new(true);

/// Turns the fused CPU ops on or off for the whole process (off: the explicit compositions).
pub fn set_fused(on: bool) {
    FUSED.store(on, Ordering::Relaxed);
}

/// Whether the fused CPU ops are in use.
pub fn fused() -> bool {
    FUSED.load(Ordering::Relaxed)
}

thread_local! {
    static FUSED_CALLS: Cell<usize> = const { Cell::new(0) };
}

/// How many fused kernels this thread has run (tests use it to see the fused path was taken).
pub fn fused_calls_on_this_thread() -> usize {
    FUSED_CALLS.with(Cell::get)
}

/// Whether the fused kernel handles these tensors: fused ops on, CPU, float dtype.
fn fused_for(tensors: &[&Tensor]) -> bool {
    fused()
        && tensors.iter().all(|t| {
            t.device().is_cpu()
                && matches!(
                    t.dtype(),
                    DType::F32 | DType::F64 | DType::BF16 | DType::F16
                )
        })
}

/// Counts one fused call (see [`fused_calls_on_this_thread`]).
fn count_fused_call() {
    FUSED_CALLS.with(|c| c.set(c.get() + 1));
}
