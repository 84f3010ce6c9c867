//! Seeded epoch order and right-padded batches.

use anyhow::Result;
use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::images::Pixels;
use super::tokenize::{count_labels, TokenizedData, IGNORE_INDEX};
use crate::model::vlm::ImageBatch;

/// Rows of examples right-padded to the longest row: ids with the pad id, labels with `-100`,
/// attention mask 1 for real tokens and 0 for padding, and the rows' images in row order.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub input_ids: Vec<Vec<u32>>,
    pub labels: Vec<Vec<i64>>,
    pub attention_mask: Vec<Vec<u32>>,
    /// Images of the rows that have one, in row order (what the decoder takes).
    pub pixel_values: Vec<Pixels>,
}

impl Batch {
    /// Rows in the batch.
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    /// Whether the batch has no rows.
    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }

    /// Padded length of every row.
    pub fn seq_len(&self) -> usize {
        self.input_ids.first().map_or(0, Vec::len)
    }

    /// `(input_ids (B,T) u32, labels (B,T) i64, attention_mask (B,T) u32)` on `device`.
    pub fn to_tensors(&self, device: &Device) -> Result<(Tensor, Tensor, Tensor)> {
        let shape = (self.len(), self.seq_len());
        let ids = Tensor::from_vec(self.input_ids.concat(), shape, device)?;
        let labels = Tensor::from_vec(self.labels.concat(), shape, device)?;
        let mask = Tensor::from_vec(self.attention_mask.concat(), shape, device)?;
        Ok((ids, labels, mask))
    }

    /// The batch's images for the decoder, or `None` when no row has one.
    pub fn images(&self, device: &Device) -> Result<Option<ImageBatch>> {
        let pixels: Vec<&Pixels> = self.pixel_values.iter().collect();
        ImageBatch::from_pixels(&pixels, device)
    }

    /// Labelled positions that have a previous token (`labels[t] != -100` for `t >= 1`): the
    /// number of targets the shifted loss averages over.
    pub fn label_count(&self) -> usize {
        self.labels.iter().map(|row| count_labels(row)).sum()
    }

    /// Real (unpadded) tokens.
    pub fn token_count(&self) -> usize {
        self.attention_mask
            .iter()
            .map(|row| row.iter().filter(|&&m| m != 0).count())
            .sum()
    }
}

/// Indices `0..n_examples` shuffled by a generator seeded from `(seed, epoch)` alone.
pub fn epoch_order(n_examples: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n_examples).collect();
    let mut rng = StdRng::seed_from_u64(mix(seed, epoch as u64));
    order.shuffle(&mut rng);
    order
}

/// SplitMix64 finaliser over the seed and the epoch, so nearby pairs give unrelated streams.
fn mix(seed: u64, epoch: u64) -> u64 {
    let mut z = seed ^ epoch.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Batches in one epoch; the last partial batch is kept.
pub fn batches_per_epoch(n_examples: usize, batch_size: usize) -> usize {
    assert!(batch_size > 0, "batch_size must be at least 1");
    n_examples.div_ceil(batch_size)
}

/// Batch `batch_index` of an epoch: the examples `order[batch_index * batch_size ..]` (at most
/// `batch_size`, fewer in the last batch), right-padded with `pad_id`.
///
/// # Panics
/// When `batch_size` is 0, `batch_index` is past the last batch of `order`, or `order` names an
/// example that `data` does not have.
pub fn make_batch(
    data: &TokenizedData,
    order: &[usize],
    batch_index: usize,
    batch_size: usize,
    pad_id: u32,
) -> Batch {
    let n_batches = batches_per_epoch(order.len(), batch_size);
    assert!(
        batch_index < n_batches,
        "batch {batch_index} is out of range: {} examples make {n_batches} batches of {batch_size}",
        order.len()
    );
    let start = batch_index * batch_size;
    let rows = &order[start..(start + batch_size).min(order.len())];
    let width = rows
        .iter()
        .map(|&i| data.examples[i].input_ids.len())
        .max()
        .unwrap_or(0);
    let mut batch = Batch {
        input_ids: Vec::with_capacity(rows.len()),
        labels: Vec::with_capacity(rows.len()),
        attention_mask: Vec::with_capacity(rows.len()),
        pixel_values: Vec::new(),
    };
    for &i in rows {
        let ex = &data.examples[i];
        let pad = width - ex.input_ids.len();
        let mut ids = ex.input_ids.clone();
        ids.resize(width, pad_id);
        let mut labels = ex.labels.clone();
        labels.resize(width, IGNORE_INDEX);
        let mut mask = vec![1u32; ex.input_ids.len()];
        mask.resize(ex.input_ids.len() + pad, 0);
        batch.input_ids.push(ids);
        batch.labels.push(labels);
        batch.attention_mask.push(mask);
        batch.pixel_values.extend(ex.pixel_values.iter().cloned());
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Example;

    fn data(lengths: &[usize]) -> TokenizedData {
        let examples: Vec<Example> = lengths
            .iter()
            .enumerate()
            .map(|(n, &len)| Example {
                line: n + 1,
                input_ids: (0..len as u32).map(|t| 10 + t).collect(),
                labels: (0..len as i64)
                    .map(|t| if t % 2 == 1 { 10 + t } else { IGNORE_INDEX })
                    .collect(),
                images: Vec::new(),
                pixel_values: Vec::new(),
            })
            .collect();
        TokenizedData {
            total_tokens: lengths.iter().sum(),
            label_tokens: examples.iter().map(Example::label_count).sum(),
            examples,
            truncated: 0,
            dropped: Vec::new(),
            used_chat_template: true,
        }
    }

    #[test]
    fn order_is_a_seeded_permutation() {
        let a = epoch_order(50, 3, 0);
        assert_eq!(a, epoch_order(50, 3, 0));
        assert_ne!(a, epoch_order(50, 3, 1));
        assert_ne!(a, epoch_order(50, 4, 0));
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert!(epoch_order(0, 1, 1).is_empty());
    }

    #[test]
    fn batches_pad_right_and_keep_the_last_partial_one() {
        let d = data(&[3, 5, 2]);
        assert_eq!(batches_per_epoch(3, 2), 2);
        assert_eq!(batches_per_epoch(4, 2), 2);
        let order = [2, 1, 0];
        let b = make_batch(&d, &order, 0, 2, 0);
        assert_eq!(
            b.input_ids,
            vec![vec![10, 11, 0, 0, 0], vec![10, 11, 12, 13, 14]]
        );
        assert_eq!(b.labels[0], vec![-100, 11, -100, -100, -100]);
        assert_eq!(b.attention_mask[0], vec![1, 1, 0, 0, 0]);
        assert_eq!(b.token_count(), 7);
        assert_eq!(b.label_count(), 1 + 2);
        let last = make_batch(&d, &order, 1, 2, 0);
        assert_eq!(last.len(), 1);
        assert_eq!(last.input_ids, vec![vec![10, 11, 12]]);
        assert_eq!(last.attention_mask, vec![vec![1, 1, 1]]);

        let (ids, labels, mask) = b.to_tensors(&Device::Cpu).unwrap();
        assert_eq!(ids.dims(), &[2, 5]);
        assert_eq!(ids.dtype(), candle_core::DType::U32);
        assert_eq!(labels.dtype(), candle_core::DType::I64);
        assert_eq!(mask.dtype(), candle_core::DType::U32);
        assert_eq!(labels.to_vec2::<i64>().unwrap(), b.labels);
        assert_eq!(mask.to_vec2::<u32>().unwrap(), b.attention_mask);
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn batch_past_the_end_panics() {
        make_batch(&data(&[2, 2]), &[0, 1], 1, 2, 0);
    }
}
