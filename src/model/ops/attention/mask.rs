//! Which keys each query sees: causal order, padded keys hidden, an optional sliding window.
//! The fused kernel asks [`AttentionMask::visible`] per score; the composed path gets the same
//! mask as an additive bias tensor.

use std::sync::Arc;

use candle_core::{DType, Device, Result, Tensor};

/// Additive bias of hidden keys; finite so fully hidden rows stay NaN-free.
pub const MASK_VALUE: f32 = -1e9;

/// The attention mask of one call: `batch` rows of `keys` keys, of which the first `past`
/// were cached before the queries (query `t` sits at position `past + t`).
#[derive(Debug, Clone)]
pub struct AttentionMask {
    /// `batch × keys` flags, row-major: whether each key is a real token.
    key_valid: Arc<[bool]>,
    batch: usize,
    keys: usize,
    past: usize,
    window: Option<usize>,
}

impl AttentionMask {
    /// The mask for keys whose validity per row is `key_valid` (all rows as long); `window`:
    /// a query sees itself and the `w − 1` keys before it (transformers' sliding window).
    pub fn new(key_valid: &[Vec<bool>], past: usize, window: Option<usize>) -> Result<Self> {
        let batch = key_valid.len();
        let keys = key_valid.first().map_or(0, Vec::len);
        if key_valid.iter().any(|row| row.len() != keys) {
            candle_core::bail!("attention mask: key rows differ in length");
        }
        Ok(Self {
            key_valid: key_valid.iter().flatten().copied().collect(),
            batch,
            keys,
            past,
            window,
        })
    }

    /// Rows of the batch.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Keys per row.
    pub fn keys(&self) -> usize {
        self.keys
    }

    /// Whether query `t` of row `b` sees key `s`.
    #[inline(always)]
    pub fn visible(&self, b: usize, t: usize, s: usize) -> bool {
        let query = self.past + t;
        s <= query && self.key_valid[b * self.keys + s] && self.window.is_none_or(|w| s + w > query)
    }

    /// The keys any of the queries `rows` may see (a superset: padding is not looked at).
    #[inline(always)]
    pub fn key_range(&self, rows: std::ops::Range<usize>) -> std::ops::Range<usize> {
        let first = self.past + rows.start;
        let lo = self.window.map_or(0, |w| (first + 1).saturating_sub(w));
        let hi = self.keys.min(self.past + rows.end);
        lo.min(hi)..hi
    }

    /// The additive bias `(B, 1, T, S)` of `queries` queries: 0 where visible, [`MASK_VALUE`]
    /// elsewhere.
    pub fn bias(&self, queries: usize, dtype: DType, device: &Device) -> Result<Tensor> {
        let mut data = Vec::with_capacity(self.batch * queries * self.keys);
        for b in 0..self.batch {
            for t in 0..queries {
                data.extend((0..self.keys).map(|s| {
                    if self.visible(b, t, s) {
                        0f32
                    } else {
                        MASK_VALUE
                    }
                }));
            }
        }
        Tensor::from_vec(data, (self.batch, 1, queries, self.keys), device)?.to_dtype(dtype)
    }
}
