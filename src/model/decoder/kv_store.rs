//! One layer's cached keys and values: written in place into buffers `(B, H_kv, capacity, D)`
//! that hold room for the tokens still to come, instead of concatenating every step.

use anyhow::Result;
use candle_core::Tensor;

/// Keys and values of one layer; the first `len` positions of the buffers are filled.
#[derive(Debug, Default)]
pub(super) struct LayerKv {
    buffers: Option<(Tensor, Tensor)>,
    len: usize,
    /// Positions the first allocation makes room for (more are added by doubling).
    capacity: usize,
}

impl Clone for LayerKv {
    /// A deep copy: the buffers are written in place, so copies must not share them.
    fn clone(&self) -> Self {
        let copy = |(k, v): &(Tensor, Tensor)| -> Option<(Tensor, Tensor)> {
            Some((k.copy().ok()?, v.copy().ok()?))
        };
        let buffers = self.buffers.as_ref().and_then(copy);
        Self {
            len: if buffers.is_some() { self.len } else { 0 },
            buffers,
            capacity: self.capacity,
        }
    }
}

impl LayerKv {
    /// An empty store whose first allocation holds `capacity` positions (or what is needed).
    pub(super) fn with_capacity(capacity: usize) -> Self {
        Self {
            buffers: None,
            len: 0,
            capacity,
        }
    }

    /// Appends keys and values `(B, H_kv, T, D)` and returns every cached position so far, as
    /// views of the buffers `(B, H_kv, len, D)`.
    pub(super) fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let (batch, heads, new, dim) = k.dims4()?;
        let len = self.len;
        let needed = len + new;
        let room = self.buffers.as_ref().map_or(0, |(kb, _)| kb.dims()[2]);
        if needed > room {
            let size = needed.max(self.capacity).max(2 * room);
            let grow = |old: Option<&Tensor>, like: &Tensor| -> Result<Tensor> {
                let buffer = Tensor::zeros((batch, heads, size, dim), like.dtype(), like.device())?;
                if let Some(old) = old.filter(|_| len > 0) {
                    buffer.slice_set(&old.narrow(2, 0, len)?.contiguous()?, 2, 0)?;
                }
                Ok(buffer)
            };
            let old = self.buffers.take();
            self.buffers = Some((
                grow(old.as_ref().map(|(k, _)| k), k)?,
                grow(old.as_ref().map(|(_, v)| v), v)?,
            ));
        }
        let Some((kb, vb)) = &self.buffers else {
            anyhow::bail!("KV cache buffers missing after allocation")
        };
        kb.slice_set(&k.detach().contiguous()?, 2, len)?;
        vb.slice_set(&v.detach().contiguous()?, 2, len)?;
        self.len = needed;
        Ok((kb.narrow(2, 0, needed)?, vb.narrow(2, 0, needed)?))
    }
}
