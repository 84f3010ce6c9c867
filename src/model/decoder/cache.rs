//! The KV cache of generation and the cached forward: new tokens attend over the cached
//! keys and values (kept in preallocated buffers, see [`LayerKv`]); M-RoPE models keep each
//! row's next position. The cached forward builds no graph and takes the few-row product path.

use anyhow::{bail, Result};
use candle_core::Tensor;

use super::context::Positions;
use super::kv_store::LayerKv;
use super::{positions_from_valid, Decoder};
use crate::model::vlm::ImageBatch;

/// Per-layer keys and values of the tokens seen so far, for generation.
#[derive(Debug, Clone)]
pub struct KvCache {
    pub(super) layers: Vec<LayerKv>,
    /// For each row, whether each cached key is a real token (false for left padding).
    pub(super) key_valid: Vec<Vec<bool>>,
    /// M-RoPE: each row's next text position (images advance it by less than their tokens).
    pub(super) next_position: Vec<u32>,
}

impl KvCache {
    /// Number of cached positions (padding included).
    pub fn len(&self) -> usize {
        self.key_valid.first().map_or(0, Vec::len)
    }

    /// Whether nothing has been cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Decoder {
    /// An empty KV cache for `batch` rows (its buffers grow as needed).
    pub fn new_cache(&self, batch: usize) -> KvCache {
        self.new_cache_with_capacity(batch, 0)
    }

    /// An empty KV cache for `batch` rows whose buffers are allocated once for `capacity`
    /// positions (prompt plus new tokens); more positions still fit, by reallocation.
    pub fn new_cache_with_capacity(&self, batch: usize, capacity: usize) -> KvCache {
        KvCache {
            layers: vec![LayerKv::with_capacity(capacity); self.layers.len()],
            key_valid: vec![Vec::new(); batch],
            next_position: vec![0; batch],
        }
    }

    /// Runs new tokens `(B, T)` through the model with a KV cache and returns f32 logits of the
    /// last position `(B, V)`. `valid` marks real tokens per row (false for left padding);
    /// `images` are those of the image tokens among the new tokens (a prompt's prefill).
    /// The logits carry no graph (this is for decoding, not training).
    pub fn forward_cached(
        &self,
        input_ids: &Tensor,
        valid: Option<&[Vec<bool>]>,
        cache: &mut KvCache,
        images: Option<&ImageBatch>,
    ) -> Result<Tensor> {
        let (batch, seq) = input_ids.dims2()?;
        if cache.key_valid.len() != batch {
            bail!(
                "KV cache holds {} rows but the input has {batch}",
                cache.key_valid.len()
            );
        }
        let new_valid: Vec<Vec<bool>> = match valid {
            Some(v) => v.to_vec(),
            None => vec![vec![true; seq]; batch],
        };
        let past = cache.len();
        let offsets: Vec<u32> = cache
            .key_valid
            .iter()
            .map(|row| row.iter().filter(|v| **v).count() as u32)
            .collect();
        let positions = match self.config.mrope_section {
            Some(_) => {
                let (streams, next) =
                    self.mrope_positions(input_ids, &new_valid, images, &cache.next_position)?;
                cache.next_position = next;
                Positions::Sections(streams)
            }
            None => Positions::Flat(positions_from_valid(&new_valid, &offsets)),
        };
        for (row, new) in cache.key_valid.iter_mut().zip(&new_valid) {
            row.extend_from_slice(new);
        }
        let ctx = self.layer_context(&positions, &cache.key_valid, past, true)?;
        let x = self.embed_inputs(input_ids, images)?.detach();
        let x = self.run_layers(x, &ctx, Some(cache))?;
        let last = x.narrow(1, seq - 1, 1)?.squeeze(1)?;
        let last = self.norm(&last, &self.norm)?;
        self.logits_with(&last, true)
    }
}
