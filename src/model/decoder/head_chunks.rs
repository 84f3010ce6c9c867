//! The loss head under activation checkpointing: the summed cross entropy of labelled rows
//! computed a block of rows at a time, each block's gradients formed at once, so the
//! full-vocabulary logits `(N, V)` never exist whole (at 16 × 512 tokens and a 49k vocabulary
//! they and their gradient are 3 GiB, more than all the checkpointed layers keep).
//!
//! The forward of one custom op on the labelled hidden rows runs, per block, the unembedding
//! and the cross entropy with a small graph and backpropagates it there and then; it keeps
//! the rows' gradient `(N, H)` and the head parameters' gradients. The op's backward scales
//! them by the incoming gradient (the loss is a scalar) and hands the parameters' share to
//! [`Checkpointing`] like a checkpointed layer.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{CustomOp1, DType, Tensor, TensorId, Var};

use super::checkpoint::{reachable, Checkpointing};
use super::Decoder;
use crate::model::grad_sink::accumulate;
use crate::model::ops;
use crate::model::precomputed::{precomputed_forwards, Precomputed};

/// Most logits one block holds (rows × vocabulary): 64 Mi f32 values, 256 MiB.
const HEAD_BLOCK_LOGITS: usize = 64 << 20;

/// Rows per block of the head for a vocabulary of `vocab` and `rows` labelled rows in all.
pub fn head_block_rows(vocab: usize, rows: usize) -> usize {
    (HEAD_BLOCK_LOGITS / vocab.max(1)).clamp(1, rows.max(1))
}

impl Decoder {
    /// Summed next-token NLL of hidden rows `(N, H)` at `targets` `(N,)`: with checkpointing
    /// block by block (see the module doc), without it the whole head at once.
    pub fn nll_in_blocks(&self, rows: &Tensor, targets: &Tensor) -> anyhow::Result<Tensor> {
        let block = head_block_rows(self.config.vocab_size, rows.dim(0)?);
        self.nll_in_blocks_of(rows, targets, block)
    }

    /// [`Decoder::nll_in_blocks`] with blocks of `block` rows.
    pub fn nll_in_blocks_of(
        &self,
        rows: &Tensor,
        targets: &Tensor,
        block: usize,
    ) -> anyhow::Result<Tensor> {
        let Some(shared) = &self.checkpoint else {
            return Ok(ops::cross_entropy_sum(&self.logits(rows)?, targets)?);
        };
        let (n, _) = rows.dims2()?;
        let block = block.clamp(1, n.max(1));
        let mut loss = 0f64;
        let mut row_grads = Vec::new();
        let mut head_grads: HashMap<TensorId, Tensor> = HashMap::new();
        let detached = rows.detach();
        for start in (0..n).step_by(block) {
            let len = block.min(n - start);
            let input = Var::from_tensor(&detached.narrow(0, start, len)?)?;
            let logits = self.logits(input.as_tensor())?;
            let nll = ops::cross_entropy_sum(&logits, &targets.narrow(0, start, len)?)?;
            loss += nll.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            let grads = nll.backward()?;
            for var in self.vars.values() {
                if let Some(g) = grads.get(var.as_tensor()) {
                    accumulate(&mut head_grads, var.id(), g.clone())?;
                }
            }
            if let Some(g) = grads.get(input.as_tensor()) {
                row_grads.push(g.clone());
            }
        }
        let value = Tensor::new(loss as f32, rows.device())?;
        if !rows.track_op() && head_grads.is_empty() {
            return Ok(value);
        }
        let row_grad = if row_grads.len() == n.div_ceil(block) && n > 0 {
            Some(Tensor::cat(&row_grads, 0)?)
        } else {
            None
        };
        let arg = reachable(rows)?;
        let op = HeadOp {
            value: Precomputed::new(value, "loss head in blocks"),
            row_grad,
            head_grads,
            shared: shared.clone(),
        };
        Ok(arg.apply_op1(op)?)
    }
}

/// The custom op of the blocked head (see the module doc).
struct HeadOp {
    value: Precomputed,
    row_grad: Option<Tensor>,
    head_grads: HashMap<TensorId, Tensor>,
    shared: Arc<Checkpointing>,
}

impl CustomOp1 for HeadOp {
    fn name(&self) -> &'static str {
        "loss-head-in-blocks"
    }

    precomputed_forwards!(value);

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        for (id, g) in &self.head_grads {
            let scaled = g.broadcast_mul(&grad_res.to_dtype(g.dtype())?)?;
            self.shared.add_grad(*id, scaled)?;
        }
        match &self.row_grad {
            Some(g) => Ok(Some(
                g.broadcast_mul(&grad_res.to_dtype(g.dtype())?)?
                    .to_dtype(arg.dtype())?,
            )),
            None => Ok(None),
        }
    }
}
