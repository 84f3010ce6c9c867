//! Parameter gradients handed over beside candle's `GradStore`.
//!
//! Candle's backward adds each gradient it receives into a fresh zero tensor of the
//! parameter's size (`GradStore::or_insert`, then `add`): for a trainable weight matrix that is
//! a memset and an extra pass over the gradient per step. Ops that compute a weight gradient
//! themselves (the GEMM linear, checkpointed layers, the fused and blocked loss heads) leave it here
//! instead, keyed by the parameter's tensor id, and return nothing for it to candle. The
//! decoder merges both in [`crate::model::Decoder::trainable_grads`].

use std::collections::HashMap;
use std::sync::Mutex;

use candle_core::{Tensor, TensorId};

/// Gradients by parameter id, added up when a parameter receives several.
#[derive(Debug, Default)]
pub struct GradSink {
    grads: Mutex<HashMap<TensorId, Tensor>>,
}

impl GradSink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `grad` to the gradient kept for parameter `id`. The sink owns `grad` from here: a
    /// later gradient of `id` is added into it in place, so it must not be shared.
    pub fn add(&self, id: TensorId, grad: Tensor) -> candle_core::Result<()> {
        let mut grads = self
            .grads
            .lock()
            .map_err(|_| candle_core::Error::Msg("gradient sink: lock poisoned".into()))?;
        accumulate(&mut grads, id, grad)
    }

    /// Every gradient kept, by parameter id; the sink is left empty.
    pub fn take(&self) -> HashMap<TensorId, Tensor> {
        self.grads
            .lock()
            .map(|mut grads| std::mem::take(&mut *grads))
            .unwrap_or_default()
    }

    /// Drops every gradient kept (a new forward starts a new record).
    pub fn clear(&self) {
        if let Ok(mut grads) = self.grads.lock() {
            grads.clear();
        }
    }
}

/// Adds `grad` to the entry of `id` in `grads` (or makes it the entry); the entry is written in
/// place (see [`crate::model::ops::add_in_place`]), so it must not be shared.
pub(crate) fn accumulate(
    grads: &mut HashMap<TensorId, Tensor>,
    id: TensorId,
    grad: Tensor,
) -> candle_core::Result<()> {
    let sum = match grads.remove(&id) {
        Some(previous) => crate::model::ops::add_in_place(previous, &grad)?,
        None => grad,
    };
    grads.insert(id, sum);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn gradients_of_one_parameter_add_up_and_take_empties() {
        let sink = GradSink::new();
        let a = Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap();
        let b = Tensor::new(&[10f32, 20.0], &Device::Cpu).unwrap();
        sink.add(a.id(), a.clone()).unwrap();
        sink.add(a.id(), b.clone()).unwrap();
        sink.add(b.id(), b.clone()).unwrap();
        let taken = sink.take();
        assert_eq!(taken.len(), 2);
        assert_eq!(taken[&a.id()].to_vec1::<f32>().unwrap(), vec![11.0, 22.0]);
        assert!(sink.take().is_empty());
        sink.add(a.id(), a.clone()).unwrap();
        sink.clear();
        assert!(sink.take().is_empty());
    }
}
