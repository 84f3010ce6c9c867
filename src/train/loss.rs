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
    let inputs = Inputs::text(input_ids, Some(attention_mask)).with_images(images);
    match labelled_rows(decoder, &inputs, labels)? {
        // The head runs fused or in blocks of rows where it can (see `HeadPath`).
        Some((rows, _, targets)) => decoder.rows_nll(&rows, &targets),
        None => Ok(Tensor::zeros((), DType::F32, decoder.device())?),
    }
}

/// A batch's logits at its labelled positions.
pub struct Labelled {
    /// f32 logits `(N, V)`, one row per labelled position.
    pub logits: Tensor,
    /// The positions in the flattened `(B·T)` sequence, `(N,)` u32 (see [`label_positions`]).
    pub index: Tensor,
    /// The token each row must predict, `(N,)` u32.
    pub targets: Tensor,
}

/// The logits of `decoder` at the labelled positions of `inputs` (`None` when nothing is
/// labelled); the full forward runs once, the unembedding only at those positions.
pub fn labelled_logits(
    decoder: &Decoder,
    inputs: &Inputs,
    labels: &[Vec<i64>],
) -> Result<Option<Labelled>> {
    Ok(match labelled_rows(decoder, inputs, labels)? {
        Some((rows, index, targets)) => Some(Labelled {
            logits: decoder.logits(&rows)?,
            index,
            targets,
        }),
        None => None,
    })
}

/// The final hidden states of `decoder` at the labelled positions of `inputs` `(N, H)`, those
/// positions `(N,)` and their targets `(N,)` (`None` when nothing is labelled).
fn labelled_rows(
    decoder: &Decoder,
    inputs: &Inputs,
    labels: &[Vec<i64>],
) -> Result<Option<(Tensor, Tensor, Tensor)>> {
    let (positions, targets) = label_positions(labels);
    let device = decoder.device();
    let hidden = decoder.hidden_states(inputs)?;
    if positions.is_empty() {
        return Ok(None);
    }
    let index = Tensor::new(positions.as_slice(), device)?;
    let rows = flat_rows(&hidden, &index)?;
    Ok(Some((
        rows,
        index,
        Tensor::new(targets.as_slice(), device)?,
    )))
}

/// f32 logits of `decoder` at the flat `index` of final hidden states `(B, T, H)`.
pub fn logits_at(decoder: &Decoder, hidden: &Tensor, index: &Tensor) -> Result<Tensor> {
    decoder.logits(&flat_rows(hidden, index)?)
}

/// Rows `index` of hidden states `(B, T, H)` flattened to `(B·T, H)`.
fn flat_rows(hidden: &Tensor, index: &Tensor) -> Result<Tensor> {
    let (b, t, h) = hidden.dims3()?;
    Ok(hidden.reshape((b * t, h))?.index_select(index, 0)?)
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
