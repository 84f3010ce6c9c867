//! A forward value computed outside candle's graph, handed back by a custom op's forward: the
//! op then owns the backward (an input gradient only, or a recomputation) while the value
//! itself costs no graph.

use std::sync::Mutex;

use candle_core::{CpuStorage, Result, Shape, Storage, Tensor};

/// A value that a custom op's forward hands back, once.
pub(crate) struct Precomputed {
    value: Mutex<Option<Tensor>>,
    /// The op's name, for errors.
    op: &'static str,
}

impl Precomputed {
    /// Holds `value` for the forward of the op named `op`.
    pub(crate) fn new(value: Tensor, op: &'static str) -> Self {
        Self {
            value: Mutex::new(Some(value)),
            op,
        }
    }

    fn take(&self) -> Result<Tensor> {
        self.value
            .lock()
            .map_err(|_| candle_core::Error::Msg(format!("{}: lock poisoned", self.op)))?
            .take()
            .ok_or_else(|| candle_core::Error::Msg(format!("{}: forward ran twice", self.op)))
    }

    /// The value as a CPU storage (the forward of `CustomOp1::cpu_fwd`).
    pub(crate) fn cpu(&self) -> Result<(CpuStorage, Shape)> {
        let value = self.take()?;
        let (storage, layout) = value.storage_and_layout();
        match &*storage {
            Storage::Cpu(s) => Ok((s.clone(), layout.shape().clone())),
            _ => candle_core::bail!("{}: value is not on the CPU", self.op),
        }
    }

    /// The value as a CUDA storage.
    #[cfg(feature = "cuda")]
    pub(crate) fn cuda(&self) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        let value = self.take()?;
        let (storage, layout) = value.storage_and_layout();
        match &*storage {
            Storage::Cuda(s) => Ok((s.try_clone(layout)?, layout.shape().clone())),
            _ => candle_core::bail!("{}: value is not on the GPU", self.op),
        }
    }

    /// The value as a Metal storage.
    #[cfg(feature = "metal")]
    pub(crate) fn metal(&self) -> Result<(candle_core::MetalStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        let value = self.take()?;
        let (storage, layout) = value.storage_and_layout();
        match &*storage {
            Storage::Metal(s) => Ok((s.try_clone(layout)?, layout.shape().clone())),
            _ => candle_core::bail!("{}: value is not on the Metal device", self.op),
        }
    }
}

/// Implements a `CustomOp1`'s forwards (CPU, CUDA, Metal) as handing back the field `$field`
/// of type [`Precomputed`].
macro_rules! precomputed_forwards {
    ($field:ident) => {
        fn cpu_fwd(
            &self,
            _: &candle_core::CpuStorage,
            _: &candle_core::Layout,
        ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
            self.$field.cpu()
        }

        #[cfg(feature = "cuda")]
        fn cuda_fwd(
            &self,
            _: &candle_core::CudaStorage,
            _: &candle_core::Layout,
        ) -> candle_core::Result<(candle_core::CudaStorage, candle_core::Shape)> {
            self.$field.cuda()
        }

        #[cfg(feature = "metal")]
        fn metal_fwd(
            &self,
            _: &candle_core::MetalStorage,
            _: &candle_core::Layout,
        ) -> candle_core::Result<(candle_core::MetalStorage, candle_core::Shape)> {
            self.$field.metal()
        }
    };
}
pub(crate) use precomputed_forwards;
