//! Per-layer drift, the study's second analysis: for each decoder layer, the logit-space size of
//! the change of the attention block's and the MLP block's residual contributions,
//! ‖W_U·h_now − W_U·h_base‖₂, averaged over answer tokens (teacher-forced on the base model's
//! continuations of the held-out probe prompts).

use crate::model::decoder::Inputs;
use anyhow::Result;
use candle_core::{Tensor, D};
use serde::{Deserialize, Serialize};

use super::probe::{forced_batch, ProbeOptions, ProbePrompt};
use crate::model::Decoder;

/// Drift of one layer's two blocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerDrift {
    pub layer: usize,
    pub attn: f64,
    pub mlp: f64,
}

/// Per-layer drift between `base` and `current` on the answer tokens of `prompts`.
pub fn layer_drift(
    base: &Decoder,
    current: &Decoder,
    prompts: &[ProbePrompt],
    continuations: &[Vec<u32>],
    options: &ProbeOptions,
) -> Result<Vec<LayerDrift>> {
    let layers = base.config().num_hidden_layers;
    let mut sums = vec![(0f64, 0f64); layers];
    let mut count = 0usize;
    let unembed = base.unembedding().t()?;
    let pairs: Vec<(&ProbePrompt, &Vec<u32>)> = prompts
        .iter()
        .zip(continuations)
        .filter(|(_, c)| !c.is_empty())
        .collect();
    for chunk in pairs.chunks(options.batch_size.max(1)) {
        let (ps, cs): (Vec<&ProbePrompt>, Vec<&Vec<u32>>) = chunk.iter().copied().unzip();
        let batch = forced_batch(&ps, &cs, base.device())?;
        // Answer tokens sit one position after the positions that predict them.
        let flat: Vec<u32> = batch.positions.iter().flatten().map(|p| p + 1).collect();
        let index = Tensor::new(flat.as_slice(), base.device())?;
        let pixels = batch.pixels.as_ref();
        let outputs_base =
            base.block_outputs(&Inputs::text(&batch.ids, Some(&batch.mask)).with_images(pixels))?;
        let outputs_now = current
            .block_outputs(&Inputs::text(&batch.ids, Some(&batch.mask)).with_images(pixels))?;
        for (layer, ((attn_b, mlp_b), (attn_n, mlp_n))) in
            outputs_base.iter().zip(&outputs_now).enumerate()
        {
            let size = |b: &Tensor, n: &Tensor| -> Result<f64> {
                let (bs, t, h) = b.dims3()?;
                let diff = (n - b)?.reshape((bs * t, h))?.index_select(&index, 0)?;
                let logits = diff.matmul(&unembed)?.to_dtype(candle_core::DType::F32)?;
                Ok(logits
                    .sqr()?
                    .sum(D::Minus1)?
                    .sqrt()?
                    .sum_all()?
                    .to_scalar::<f32>()? as f64)
            };
            sums[layer].0 += size(attn_b, attn_n)?;
            sums[layer].1 += size(mlp_b, mlp_n)?;
        }
        count += flat.len();
    }
    let n = count.max(1) as f64;
    Ok(sums
        .into_iter()
        .enumerate()
        .map(|(layer, (a, m))| LayerDrift {
            layer,
            attn: a / n,
            mlp: m / n,
        })
        .collect())
}
