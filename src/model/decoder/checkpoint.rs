//! Activation checkpointing: a layer's forward keeps only its input; backward runs the layer
//! again with a graph and takes the gradients from that.
//!
//! Each checkpointed layer is one custom op on the residual stream. Its forward hands back the
//! layer's output computed without a graph (the layer's activations are freed at once). Its
//! backward recomputes the layer from the saved input, backpropagates the incoming gradient
//! through the recomputation, returns the input's gradient to candle's backward and leaves the
//! layer's parameter gradients in the decoder's [`GradSink`], which the optimizer step reads
//! after the backward. Stored per layer: one `(B, T, H)` input, and the fused attention's output
//! and log-sum-exp, which the recomputation replays instead of running the attention kernel
//! ([`AttentionMemo`]); at most one layer's activations live at a time, in the forward and in the
//! backward. Costs one more forward per layer, less its attention and its last product (whose
//! value the recomputation never reads).

use std::sync::Arc;

use candle_core::{CustomOp1, DType, Tensor, TensorId, Var};

use super::context::AttentionInputs;
use super::layer::{layer_parts, Layer};
use crate::model::config::ModelConfig;
use crate::model::grad_sink::GradSink;
use crate::model::lora::DropoutSwitch;
use crate::model::ops::AttentionMemo;
use crate::model::precomputed::{precomputed_forwards, Precomputed};

/// What every checkpointed layer of one decoder shares: the configuration, LoRA's dropout
/// switch, and the decoder's sink for the parameter gradients the recomputations leave.
pub struct Checkpointing {
    config: Arc<ModelConfig>,
    dropout: Option<Arc<DropoutSwitch>>,
    grads: Arc<GradSink>,
}

impl Checkpointing {
    /// Checkpointing for a decoder of configuration `config` whose gradient sink is `grads`.
    pub(super) fn new(
        config: &ModelConfig,
        dropout: Option<Arc<DropoutSwitch>>,
        grads: Arc<GradSink>,
    ) -> Self {
        Self {
            config: Arc::new(config.clone()),
            dropout,
            grads,
        }
    }

    /// Adds `grad` to the gradient kept for parameter `id`.
    pub(super) fn add_grad(&self, id: TensorId, grad: Tensor) -> candle_core::Result<()> {
        self.grads.add(id, grad)
    }
}

/// The output of `layer` for residual stream `x`. Layers that backward never reaches (no
/// trainable parameter and an input without a graph) run plainly: they keep nothing anyway.
pub(super) fn run_layer(
    shared: &Arc<Checkpointing>,
    layer: &Layer,
    x: &Tensor,
    inputs: &AttentionInputs,
) -> anyhow::Result<Tensor> {
    let vars = layer.trainable_vars();
    if vars.is_empty() && !x.track_op() {
        return Ok(layer_parts(&shared.config, layer, x, inputs, None)?.0);
    }
    let dropout_at_start = shared.dropout.as_ref().and_then(|d| d.position());
    // The forward keeps the attention's result for the recomputation, which then runs no
    // attention kernel (its backward still does).
    let memo = Arc::new(AttentionMemo::default());
    let value = layer_parts(
        &shared.config,
        layer,
        &x.detach(),
        &inputs.recording(&memo),
        None,
    )?
    .0
    .detach();
    let arg = reachable(x)?;
    let op = LayerOp {
        value: Precomputed::new(value, "checkpointed layer"),
        shared: shared.clone(),
        layer: layer.clone(),
        vars,
        // The recomputation only backpropagates: the layer's output value goes unread.
        inputs: inputs.recomputing(&memo),
        dropout_at_start,
    };
    Ok(arg.apply_op1(op)?)
}

/// `x` as the argument of an op that backward must reach: `x` itself when it carries a graph,
/// else a tracking leaf with its value (the first trained layer above frozen embeddings).
pub(super) fn reachable(x: &Tensor) -> candle_core::Result<Tensor> {
    if x.track_op() {
        Ok(x.clone())
    } else {
        Ok(Var::from_tensor(x)?.into_inner())
    }
}

/// The custom op of one checkpointed layer (see the module doc).
struct LayerOp {
    value: Precomputed,
    shared: Arc<Checkpointing>,
    layer: Layer,
    vars: Vec<Var>,
    inputs: AttentionInputs,
    dropout_at_start: Option<(u64, u64)>,
}

impl LayerOp {
    /// Runs the layer again from `input` with a graph, as in the forward.
    fn recompute(&self, input: &Tensor) -> anyhow::Result<Tensor> {
        let switch = self.shared.dropout.as_ref();
        let current = switch.and_then(|d| d.position());
        if let Some(d) = switch {
            d.set_position(self.dropout_at_start);
        }
        let out = layer_parts(&self.shared.config, &self.layer, input, &self.inputs, None);
        if let Some(d) = switch {
            d.set_position(current);
        }
        Ok(out?.0)
    }

    fn backward(&self, arg: &Tensor, grad: &Tensor) -> anyhow::Result<Option<Tensor>> {
        let input = Var::from_tensor(&arg.detach())?;
        let out = self.recompute(input.as_tensor())?;
        // d/d(out) of Σ out·grad is `grad`: backpropagating this sum is backpropagating `grad`.
        let pulled = (out.to_dtype(DType::F32)? * grad.to_dtype(DType::F32)?)?.sum_all()?;
        let grads = pulled.backward()?;
        for var in &self.vars {
            if let Some(g) = grads.get(var.as_tensor()) {
                self.shared.add_grad(var.id(), g.clone())?;
            }
        }
        Ok(grads.get(input.as_tensor()).cloned())
    }
}

impl CustomOp1 for LayerOp {
    fn name(&self) -> &'static str {
        "checkpointed-layer"
    }

    precomputed_forwards!(value);

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        self.backward(arg, grad_res)
            .map_err(|e| candle_core::Error::Msg(format!("checkpointed layer backward: {e:#}")))
    }
}
