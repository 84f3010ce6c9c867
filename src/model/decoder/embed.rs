//! Input embeddings: token embeddings (Gemma's scaled), with image features written over the
//! image tokens.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};

use super::Decoder;
use crate::model::vlm::ImageBatch;

impl Decoder {
    pub(super) fn embed_inputs(
        &self,
        input_ids: &Tensor,
        images: Option<&ImageBatch>,
    ) -> Result<Tensor> {
        let x = self.embed_ids(input_ids)?;
        let Some(images) = images.filter(|i| !i.is_empty()) else {
            return Ok(x);
        };
        let vision = self.vision.as_ref().context(
            "images were given but the model has no vision tower (config.json is not a LLaVA-family config)",
        )?;
        let image_token = vision.config().image_token_index;
        let expected: usize = images
            .images
            .iter()
            .map(|shape| vision.tokens_for(shape))
            .sum();
        let ids = input_ids.to_dtype(DType::U32)?.to_vec2::<u32>()?;
        let mut gather = Vec::with_capacity(ids.len() * ids.first().map_or(0, Vec::len));
        let mut is_image = Vec::with_capacity(gather.capacity());
        let mut next = 0u32;
        for row in &ids {
            for &id in row {
                let hit = id == image_token;
                gather.push(if hit { next } else { 0 });
                is_image.push(if hit { 1f32 } else { 0f32 });
                next += u32::from(hit);
            }
        }
        if next as usize != expected {
            bail!(
                "the input holds {next} image tokens but its {} image(s) make {expected}; \
                 every <image> placeholder must expand to its image's token count, one placeholder per image",
                images.len()
            );
        }
        let (batch, seq, hidden) = x.dims3()?;
        let features = vision.image_embeddings(images)?.to_dtype(x.dtype())?;
        let gather = Tensor::from_vec(gather, batch * seq, &self.device)?;
        let picked = features
            .index_select(&gather, 0)?
            .reshape((batch, seq, hidden))?;
        let mask =
            Tensor::from_vec(is_image, (batch, seq, 1), &self.device)?.to_dtype(x.dtype())?;
        let keep = (1.0 - &mask)?;
        Ok((x.broadcast_mul(&keep)? + picked.broadcast_mul(&mask)?)?)
    }

    pub(super) fn embed_ids(&self, input_ids: &Tensor) -> Result<Tensor> {
        let (batch, seq) = input_ids.dims2()?;
        let flat = input_ids.flatten_all()?.to_dtype(DType::U32)?;
        let x = self.embed.tensor().index_select(&flat, 0)?;
        let x = x.reshape((batch, seq, self.config.hidden_size))?;
        if self.config.gemma.scaled_embeddings {
            // Gemma: √hidden_size, rounded to the weights' dtype as transformers does.
            let scale = Tensor::new(&[(self.config.hidden_size as f32).sqrt()], &self.device)?
                .to_dtype(x.dtype())?;
            return Ok(x.broadcast_mul(&scale)?);
        }
        Ok(x)
    }
}
