//! The loss head: the summed cross entropy of labelled hidden rows `(N, H)` under the
//! unembedding, by one of three paths ([`HeadPath`]).
//!
//! - **Fused** (f32 on the CPU, an unembedding without bias or adapter):
//!   [`ops::linear_cross_entropy_sum`] forms the logits a block of rows at a time and the rows'
//!   and the unembedding's gradients with them, so the `(N, V)` logits never exist whole (at
//!   16 × 512 tokens and a 49k vocabulary they, their gradient and candle's gradient buffer are
//!   three 1.5 GiB tensors).
//! - **Blocks** (activation checkpointing, other dtypes and devices): the same blocking, each
//!   block's unembedding and cross entropy run with a small candle graph and backpropagated at
//!   once.
//! - **Whole**: the logits of all rows, then the cross entropy, in the step's graph.
//!
//! The first two hand their result to candle through one custom op on the rows, whose backward
//! scales the precomputed gradients by the incoming gradient (the loss is a scalar): the rows'
//! share back to candle, the head parameters' to the decoder's [`GradSink`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{CustomOp1, DType, Tensor, TensorId, Var};

use super::checkpoint::reachable;
use super::Decoder;
use crate::model::grad_sink::{accumulate, GradSink};
use crate::model::ops;
use crate::model::precomputed::{precomputed_forwards, Precomputed};

/// Most logits one block of the graph path holds (rows × vocabulary): 64 Mi f32 values, 256 MiB.
const HEAD_BLOCK_LOGITS: usize = 64 << 20;

/// Rows per block of the graph path for a vocabulary of `vocab` and `rows` labelled rows.
pub fn head_block_rows(vocab: usize, rows: usize) -> usize {
    (HEAD_BLOCK_LOGITS / vocab.max(1)).clamp(1, rows.max(1))
}

/// How the loss head runs (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadPath {
    /// One fused op: unembedding, cross entropy and both gradients, a block of rows at a time.
    Fused,
    /// A small graph per block of this many rows.
    Blocks(usize),
    /// The whole logits in the step's graph.
    Whole,
}

impl Decoder {
    /// The path [`Decoder::rows_nll`] takes for `rows`: fused where the op handles them,
    /// else in blocks with activation checkpointing, else whole.
    pub fn head_path(&self, rows: &Tensor) -> HeadPath {
        let head = &self.lm_head;
        if head.bias.is_none()
            && head.lora.is_none()
            && ops::linear_cross_entropy::handles(rows, head.weight.tensor())
        {
            HeadPath::Fused
        } else if self.checkpoint.is_some() {
            let n = rows.dim(0).unwrap_or(1);
            HeadPath::Blocks(head_block_rows(self.config.vocab_size, n))
        } else {
            HeadPath::Whole
        }
    }

    /// Summed next-token NLL of hidden rows `(N, H)` at `targets` `(N,)`, by
    /// [`Decoder::head_path`].
    pub fn rows_nll(&self, rows: &Tensor, targets: &Tensor) -> anyhow::Result<Tensor> {
        self.rows_nll_by(self.head_path(rows), rows, targets)
    }

    /// [`Decoder::rows_nll`] by the `path` given (the fused path needs what
    /// [`Decoder::head_path`] checks).
    pub fn rows_nll_by(
        &self,
        path: HeadPath,
        rows: &Tensor,
        targets: &Tensor,
    ) -> anyhow::Result<Tensor> {
        match path {
            HeadPath::Fused => self.fused_nll(rows, targets),
            HeadPath::Blocks(block) => self.nll_in_blocks(rows, targets, block),
            HeadPath::Whole => Ok(ops::cross_entropy_sum(&self.logits(rows)?, targets)?),
        }
    }

    fn fused_nll(&self, rows: &Tensor, targets: &Tensor) -> anyhow::Result<Tensor> {
        let weight = &self.lm_head.weight;
        let w = weight.tensor();
        let want_w_grad = weight.is_trainable();
        let loss = ops::linear_cross_entropy_sum(
            rows,
            w,
            targets,
            self.config.gemma.final_logit_softcapping,
            rows.track_op(),
            want_w_grad,
        )?;
        let value = Tensor::new(loss.sum as f32, rows.device())?;
        if loss.x_grad.is_none() && loss.w_grad.is_none() {
            return Ok(value);
        }
        let grads = HeadGrads {
            rows: loss.x_grad,
            params: loss.w_grad.map(|g| (w.id(), g)).into_iter().collect(),
        };
        let op = HeadOp::new(value, grads, &self.grads);
        Ok(reachable(rows)?.apply_op1(op)?)
    }

    fn nll_in_blocks(
        &self,
        rows: &Tensor,
        targets: &Tensor,
        block: usize,
    ) -> anyhow::Result<Tensor> {
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
        let grads = HeadGrads {
            rows: row_grad,
            params: head_grads,
        };
        Ok(reachable(rows)?.apply_op1(HeadOp::new(value, grads, &self.grads))?)
    }
}

/// The gradients a head op hands over in its backward, once.
struct HeadGrads {
    /// The rows' gradient, when they carry a graph.
    rows: Option<Tensor>,
    /// The head parameters' gradients, by id.
    params: HashMap<TensorId, Tensor>,
}

/// The custom op of the fused and blocked heads (see the module doc).
struct HeadOp {
    value: Precomputed,
    grads: Mutex<Option<HeadGrads>>,
    sink: Arc<GradSink>,
}

impl HeadOp {
    fn new(value: Tensor, grads: HeadGrads, sink: &Arc<GradSink>) -> Self {
        Self {
            value: Precomputed::new(value, "loss head"),
            grads: Mutex::new(Some(grads)),
            sink: sink.clone(),
        }
    }
}

impl CustomOp1 for HeadOp {
    fn name(&self) -> &'static str {
        "loss-head"
    }

    precomputed_forwards!(value);

    /// Scales the gradients by the incoming one in place (they are the op's alone) and hands
    /// them over; a second backward through the same op is an error.
    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let grads = self
            .grads
            .lock()
            .map_err(|_| candle_core::Error::Msg("loss head: lock poisoned".into()))?
            .take()
            .ok_or_else(|| candle_core::Error::Msg("loss head: backward ran twice".into()))?;
        let scale = grad_res.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        for (id, g) in grads.params {
            self.sink.add(id, ops::scale_in_place(g, scale)?)?;
        }
        grads
            .rows
            .map(|g| ops::scale_in_place(g, scale)?.to_dtype(arg.dtype()))
            .transpose()
    }
}
