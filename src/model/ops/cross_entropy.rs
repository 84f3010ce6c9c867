//! Summed cross entropy `Σᵣ −log softmax(logitsᵣ)[targetᵣ]` of logits `(N, V)` at `u32`
//! targets `(N)`: log-softmax, gather and sum in one pass; backward `softmax − onehot`.

use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};

use super::cpu::{
    for_each_row_with, storage_f32, storage_u32, tensor_from_f32, with_f32, with_u32,
    worth_parallel,
};
use super::exp;
use super::simd::multiversion;

/// Summed negative log-likelihood of `targets` under `logits` (an f32 scalar); fused on the CPU.
pub fn cross_entropy_sum(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let (rows, _) = logits.dims2()?;
    if targets.dims() != [rows] {
        bail!(
            "cross_entropy_sum: targets have shape {:?}, expected [{rows}]",
            targets.dims()
        );
    }
    if !super::fused_for(&[logits]) || !targets.device().is_cpu() {
        return cross_entropy_sum_composed(logits, targets);
    }
    super::count_fused_call();
    logits
        .contiguous()?
        .apply_op2(&targets.to_dtype(DType::U32)?.contiguous()?, CrossEntropy)
}

/// The explicit composition: f32 log-softmax, gather, sum, negate.
pub fn cross_entropy_sum_composed(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let log_probs = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, 1)?;
    let targets = targets.to_dtype(DType::U32)?.unsqueeze(1)?;
    log_probs.gather(&targets, 1)?.sum_all()?.neg()
}

multiversion! {
    /// Max and `Σ exp(x − max)` of one row.
    fn max_and_sum(row: &[f32]) -> (f32, f32) => max_and_sum_body
}

#[inline(always)]
fn max_and_sum_body(row: &[f32]) -> (f32, f32) {
    let max = exp::max(row);
    (max, exp::sum_exp_shifted(row, max))
}

multiversion! {
    /// `out = scale · softmax(row)`, the gradient of the summed cross entropy before the target
    /// is subtracted.
    fn scaled_softmax(out: &mut [f32], row: &[f32], scale: f32) => scaled_softmax_body
}

#[inline(always)]
fn scaled_softmax_body(out: &mut [f32], row: &[f32], scale: f32) {
    let (max, sum) = max_and_sum_body(row);
    exp::scaled_exp_shifted(out, row, max, scale / sum);
}

fn check_targets(targets: &[u32], vocab: usize) -> Result<()> {
    if let Some(bad) = targets.iter().find(|&&t| t as usize >= vocab) {
        bail!("cross_entropy_sum: target {bad} is outside a vocabulary of {vocab}");
    }
    Ok(())
}

struct CrossEntropy;

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "fused-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = storage_f32(s1, l1)?;
        let targets = storage_u32(s2, l2)?;
        let (rows, vocab) = l1.shape().dims2()?;
        check_targets(targets, vocab)?;
        let mut per_row = vec![0f32; rows];
        for_each_row_with(&mut per_row, 1, worth_parallel(x.len()), |r, out| {
            let row = &x[r * vocab..(r + 1) * vocab];
            let (max, sum) = max_and_sum(row);
            out[0] = -((row[targets[r] as usize] - max) - sum.ln());
        });
        let total: f64 = per_row.iter().map(|&v| v as f64).sum();
        Ok((CpuStorage::F32(vec![total as f32]), Shape::from(())))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (rows, vocab) = logits.dims2()?;
        let scale = grad.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        let dx = with_f32(logits, |x| {
            with_u32(targets, |targets| {
                check_targets(targets, vocab)?;
                let mut dx = vec![0f32; rows * vocab];
                for_each_row_with(&mut dx, vocab, worth_parallel(x.len()), |r, out| {
                    let row = &x[r * vocab..(r + 1) * vocab];
                    scaled_softmax(out, row, scale);
                    out[targets[r] as usize] -= scale;
                });
                tensor_from_f32(dx, logits.shape(), logits.dtype(), logits.device())
            })
        })?;
        Ok((Some(dx), None))
    }
}
