//! Next-token cross entropy computed only at positions that carry a label, so no
//! full-vocabulary logits are built for prompt or padding tokens.

use crate::model::decoder::Inputs;
use crate::model::vlm::ImageBatch;
use anyhow::Result;
use candle_core::{DType, Tensor};

use crate::model::Decoder;

/// Index of each labelled position (`labels[b][t+1] != -100`) in the flattened `(B·T)` hidden
/// states, and the token it must predict.
pub fn label_positions(labels: &[Vec<i64>]) -> (Vec<u32>, Vec<u32>) {
    let mut positions = Vec::new();
    let mut targets = Vec::new();
    let width = labels.first().map_or(0, Vec::len);
    for (b, row) in labels.iter().enumerate() {
        for t in 0..row.len().saturating_sub(1) {
            let label = row[t + 1];
            if label >= 0 {
                positions.push((b * width + t) as u32);
                targets.push(label as u32);
            }
        }
    }
    (positions, targets)
}

/// Sum of the negative log-likelihood over labelled positions (an f32 scalar tensor).
pub fn summed_nll(
    decoder: &Decoder,
    input_ids: &Tensor,
    attention_mask: &Tensor,
    labels: &[Vec<i64>],
) -> Result<Tensor> {
    summed_nll_with_images(decoder, input_ids, attention_mask, labels, None)
}

/// [`summed_nll`] with the batch's images `(I, C, H, W)` for a vision-language model.
pub fn summed_nll_with_images(
    decoder: &Decoder,
    input_ids: &Tensor,
    attention_mask: &Tensor,
    labels: &[Vec<i64>],
    images: Option<&ImageBatch>,
) -> Result<Tensor> {
    let (positions, targets) = label_positions(labels);
    let device = decoder.device();
    let hidden = match images {
        Some(_) => decoder
            .hidden_states(&Inputs::text(input_ids, Some(attention_mask)).with_images(images))?,
        None => decoder.hidden_states(&Inputs::text(input_ids, Some(attention_mask)))?,
    };
    let (b, t, h) = hidden.dims3()?;
    if positions.is_empty() {
        return Ok(Tensor::zeros((), DType::F32, device)?);
    }
    let index = Tensor::new(positions.as_slice(), device)?;
    let picked = hidden.reshape((b * t, h))?.index_select(&index, 0)?;
    let logits = decoder.logits(&picked)?;
    let targets = Tensor::new(targets.as_slice(), device)?;
    Ok(crate::model::ops::cross_entropy_sum(&logits, &targets)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_shifted_and_skip_masked_labels() {
        let labels = vec![vec![-100, -100, 7, 8], vec![-100, 5, -100, -100]];
        let (pos, tgt) = label_positions(&labels);
        assert_eq!(pos, vec![1, 2, 4]);
        assert_eq!(tgt, vec![7, 8, 5]);
    }
}
