//! Causal attention `softmax(q·kᵀ·scale + mask)·v` with grouped-query heads, as one fused CPU op
//! (flash-attention style: tiles of scores with an online softmax, the log-sum-exp kept for a
//! backward that recomputes the scores tile by tile), or as the composition of candle ops.
//!
//! The fused op runs when the fused ops are on ([`super::set_fused`]) and so is fused attention
//! ([`set_fused_attention`]; the environment variable `TUNESCOPE_ATTENTION=composed` turns it off
//! at start), on the CPU. bf16/f16/f64 operands are upcast to f32 around it. On CUDA and Metal
//! the composed path runs.
//!
//! A checkpointed layer records the fused op's output and log-sum-exp in an [`AttentionMemo`]
//! during its forward and replays them in its recomputation, which then runs no attention kernel
//! before the backward's.

mod backward;
mod forward;
mod mask;
mod tile;
mod view;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};

use super::cpu::{for_each_item, OutPtr};
use backward::{backward_item, Grads, Saved};
use forward::{forward_item, Problem};
pub use mask::AttentionMask;
use view::Rows;

/// 0: not decided yet (read the environment), 1: fused, 2: composed.
static FUSED_ATTENTION: AtomicU8 = AtomicU8::new(0);

/// Turns fused attention on or off for the whole process (it also needs the fused ops on).
pub fn set_fused_attention(on: bool) {
    FUSED_ATTENTION.store(if on { 1 } else { 2 }, Ordering::Relaxed);
}

/// Whether fused attention is on (default: on unless `TUNESCOPE_ATTENTION=composed`).
pub fn fused_attention() -> bool {
    match FUSED_ATTENTION.load(Ordering::Relaxed) {
        0 => {
            let on = std::env::var("TUNESCOPE_ATTENTION").map_or(true, |v| v != "composed");
            set_fused_attention(on);
            on
        }
        state => state == 1,
    }
}

/// Whether [`causal_attention`] runs the fused kernel for these operands.
pub fn fused_attention_for(tensors: &[&Tensor]) -> bool {
    super::fused_for(tensors) && fused_attention()
}

/// Attention of `q` `(B, H, T, D)` over `k` and `v` `(B, H_kv, S, D)` (`H` a multiple of
/// `H_kv`) under `mask`, returned as `(B, T, H, D)` in the dtype of `q`.
pub fn causal_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &AttentionMask,
    scale: f64,
) -> Result<Tensor> {
    causal_attention_with_memo(q, k, v, mask, scale, None)
}

/// A fused attention's result kept from one pass for a later pass over the same operands (a
/// checkpointed layer's forward, then its recomputation): the output `(B, T, H, D)` in f32 and
/// the log-sum-exp. Replayed, the attention hands the output back without computing scores,
/// and its backward runs as usual from the recomputed operands.
#[derive(Debug, Default)]
pub struct AttentionMemo {
    kept: Mutex<Option<Kept>>,
}

/// A fused attention's output `(B, T, H, D)` (f32) and log-sum-exp `(B, H, T)`.
#[derive(Debug)]
struct Kept {
    out: Tensor,
    lse: Vec<f32>,
}

impl AttentionMemo {
    fn keep(&self, out: Tensor, lse: Vec<f32>) -> Result<()> {
        *self.lock()? = Some(Kept { out, lse });
        Ok(())
    }

    /// What was kept, once.
    fn take(&self) -> Result<Option<Kept>> {
        Ok(self.lock()?.take())
    }

    /// Whether a result is kept.
    pub fn is_kept(&self) -> bool {
        self.lock().map(|k| k.is_some()).unwrap_or(false)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Option<Kept>>> {
        self.kept
            .lock()
            .map_err(|_| candle_core::Error::Msg("attention memo: lock poisoned".into()))
    }
}

/// What [`causal_attention_with_memo`] does with a memo.
#[derive(Debug, Clone)]
pub enum MemoUse {
    /// Keep this pass's result in it.
    Record(Arc<AttentionMemo>),
    /// Hand back the kept result instead of computing one (computed when nothing is kept).
    Replay(Arc<AttentionMemo>),
}

/// [`causal_attention`] recording its result into a memo or replaying one (see
/// [`AttentionMemo`]); only the fused kernel uses the memo.
pub fn causal_attention_with_memo(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &AttentionMask,
    scale: f64,
    memo: Option<&MemoUse>,
) -> Result<Tensor> {
    let (batch, heads, queries, dim) = q.dims4()?;
    let (kb, kv_heads, keys, kd) = k.dims4()?;
    if k.dims() != v.dims()
        || kb != batch
        || kd != dim
        || kv_heads == 0
        || heads % kv_heads != 0
        || mask.batch() != batch
        || mask.keys() != keys
    {
        candle_core::bail!(
            "attention: q {:?}, k {:?}, v {:?} and a mask of {}x{} keys do not fit",
            q.dims(),
            k.dims(),
            v.dims(),
            mask.batch(),
            mask.keys()
        );
    }
    if !fused_attention_for(&[q, k, v]) {
        return causal_attention_composed(q, k, v, mask, scale);
    }
    super::count_fused_call();
    let dtype = q.dtype();
    let f32_of = |t: &Tensor| t.to_dtype(DType::F32);
    let kept = match memo {
        Some(MemoUse::Replay(memo)) => memo.take()?,
        _ => None,
    };
    let lse = Arc::new(Mutex::new(Vec::new()));
    let op = FusedAttention {
        scale: scale as f32,
        mask: mask.clone(),
        lse: lse.clone(),
        replay: Mutex::new(kept),
    };
    let _ = queries;
    let out = f32_of(&q.contiguous()?)?.apply_op3(&f32_of(k)?, &f32_of(v)?, op)?;
    if let Some(MemoUse::Record(memo)) = memo {
        // Detached: the kept value must not hold this pass's graph (q, k, v and what made them).
        memo.keep(out.detach(), lock_lse(&lse)?.clone())?;
    }
    out.to_dtype(dtype)
}

/// The composition of candle ops: repeated key/value heads, `q·kᵀ`, the masked softmax, `·v`.
pub fn causal_attention_composed(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &AttentionMask,
    scale: f64,
) -> Result<Tensor> {
    let (_, heads, queries, _) = q.dims4()?;
    let groups = heads / k.dim(1)?.max(1);
    let k = repeat_kv(&k.contiguous()?, groups)?;
    let v = repeat_kv(&v.contiguous()?, groups)?;
    let bias = mask.bias(queries, q.dtype(), q.device())?;
    let scores = q.matmul(&k.t()?)?;
    let probs = super::masked_softmax(&scores, &bias, scale)?;
    probs.matmul(&v)?.transpose(1, 2)
}

/// Repeats each key/value head `groups` times for grouped-query attention.
pub fn repeat_kv(x: &Tensor, groups: usize) -> Result<Tensor> {
    if groups == 1 {
        return Ok(x.clone());
    }
    let (b, heads, seq, dim) = x.dims4()?;
    x.unsqueeze(2)?
        .broadcast_as((b, heads, groups, seq, dim))?
        .reshape((b, heads * groups, seq, dim))
}

/// The fused op; `lse` holds the forward's log-sum-exp `(B, H, T)` for the backward.
struct FusedAttention {
    scale: f32,
    mask: AttentionMask,
    lse: Arc<Mutex<Vec<f32>>>,
    /// A kept output and log-sum-exp that the forward hands back instead of computing them.
    replay: Mutex<Option<Kept>>,
}

/// The log-sum-exp a fused attention op shares with its caller.
fn lock_lse(lse: &Mutex<Vec<f32>>) -> Result<std::sync::MutexGuard<'_, Vec<f32>>> {
    lse.lock()
        .map_err(|_| candle_core::Error::Msg("fused attention: lock poisoned".into()))
}

impl FusedAttention {
    fn lse(&self) -> Result<std::sync::MutexGuard<'_, Vec<f32>>> {
        lock_lse(&self.lse)
    }

    /// The kept output as this forward's result, when one was handed to the op.
    fn replayed(&self, shape: (usize, usize, usize, usize)) -> Result<Option<CpuStorage>> {
        let kept = self
            .replay
            .lock()
            .map_err(|_| candle_core::Error::Msg("fused attention: lock poisoned".into()))?
            .take();
        let Some(Kept { out, lse }) = kept else {
            return Ok(None);
        };
        if out.dims() != [shape.0, shape.1, shape.2, shape.3] {
            candle_core::bail!(
                "fused attention: a kept output of {:?} replayed for {shape:?}",
                out.dims()
            );
        }
        let storage = super::cpu::with_f32(&out, |values| Ok(CpuStorage::F32(values.to_vec())))?;
        *self.lse()? = lse;
        Ok(Some(storage))
    }
}

/// Whether `items` of `work` multiply-adds each are worth the thread pool.
fn parallel(items: usize, work: usize) -> bool {
    items > 1 && super::cpu::worth_parallel(items * work)
}

impl CustomOp3 for FusedAttention {
    fn name(&self) -> &'static str {
        "fused-causal-attention"
    }

    fn cpu_fwd(
        &self,
        sq: &CpuStorage,
        lq: &Layout,
        sk: &CpuStorage,
        lk: &Layout,
        sv: &CpuStorage,
        lv: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let p = Problem {
            q: Rows::from_cpu(sq, lq)?,
            k: Rows::from_cpu(sk, lk)?,
            v: Rows::from_cpu(sv, lv)?,
            mask: &self.mask,
            scale: self.scale,
        };
        let [batch, heads, queries, dim] = p.q.dims;
        let shape = Shape::from((batch, queries, heads, dim));
        if let Some(out) = self.replayed((batch, queries, heads, dim))? {
            return Ok((out, shape));
        }
        let keys = p.k.dims[2];
        let mut out = vec![0f32; batch * queries * heads * dim];
        let mut lse = vec![0f32; batch * heads * queries];
        let (out_ptr, lse_ptr) = (OutPtr(out.as_mut_ptr()), OutPtr(lse.as_mut_ptr()));
        let items = batch * heads;
        for_each_item(items, parallel(items, queries * keys * dim), |item| {
            forward_item(&p, item / heads, item % heads, out_ptr, lse_ptr)
        });
        *self.lse()? = lse;
        Ok((CpuStorage::F32(out), shape))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.to_dtype(DType::F32)?.contiguous()?;
        let res = res.contiguous()?;
        let lse = self.lse()?;
        let guards = [q, k, v, &res, &grad].map(|t| t.storage_and_layout());
        let rows = |i: usize| Rows::new(&guards[i].0, guards[i].1);
        let p = Problem {
            q: rows(0)?,
            k: rows(1)?,
            v: rows(2)?,
            mask: &self.mask,
            scale: self.scale,
        };
        let saved = Saved {
            out: rows(3)?,
            grad: rows(4)?,
            lse: &lse,
        };
        let [batch, heads, queries, dim] = p.q.dims;
        let [_, kv_heads, keys, _] = p.k.dims;
        if lse.len() != batch * heads * queries {
            candle_core::bail!("fused attention: backward without its forward");
        }
        let mut dq = vec![0f32; batch * heads * queries * dim];
        let mut dk = vec![0f32; batch * kv_heads * keys * dim];
        let mut dv = vec![0f32; batch * kv_heads * keys * dim];
        let grads = Grads {
            dq: OutPtr(dq.as_mut_ptr()),
            dk: OutPtr(dk.as_mut_ptr()),
            dv: OutPtr(dv.as_mut_ptr()),
        };
        let items = batch * kv_heads;
        let work = (heads / kv_heads.max(1)) * queries * keys * dim;
        for_each_item(items, parallel(items, work), |item| {
            backward_item(&p, &saved, item / kv_heads, item % kv_heads, grads)
        });
        let device = q.device();
        let dq = Tensor::from_vec(dq, q.shape(), device)?;
        let dk = Tensor::from_vec(dk, k.shape(), device)?;
        let dv = Tensor::from_vec(dv, v.shape(), device)?;
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}
