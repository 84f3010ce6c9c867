//! Rotary tables: one position per token, with the model's rope scaling (and Gemma's local
//! rope), or Qwen2.5-VL's M-RoPE with its three position streams.

use anyhow::{Context, Result};
use candle_core::{DType, Tensor, D};

use super::context::MropeStreams;
use super::Decoder;
use crate::model::config::RopeScaling;
use crate::model::vlm::ImageBatch;

impl Decoder {
    /// M-RoPE positions (temporal, row, column) of every token (`get_rope_index`): text tokens
    /// count up on all three; an image's tokens share the temporal position and take their row
    /// and column on top of it, and the text after the image resumes at the image's start plus
    /// its longer side. Padding gets 0. Also each row's next position.
    pub(super) fn mrope_positions(
        &self,
        input_ids: &Tensor,
        valid: &[Vec<bool>],
        images: Option<&ImageBatch>,
        starts: &[u32],
    ) -> Result<(MropeStreams, Vec<u32>)> {
        let ids = input_ids.to_dtype(DType::U32)?.to_vec2::<u32>()?;
        let vision = self.config.vision.as_ref();
        let image_token = vision.map(|v| v.image_token_index);
        let merge = vision
            .and_then(|v| v.qwen.as_ref())
            .map_or(1, |q| q.spatial_merge_size);
        let mut grids = images
            .map(|i| {
                i.images
                    .iter()
                    .map(|s| (s.grid.0 / merge, s.grid.1 / merge))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
            .into_iter();
        let mut streams: MropeStreams = Default::default();
        let mut next = Vec::with_capacity(ids.len());
        for ((row, valid), &start) in ids.iter().zip(valid).zip(starts) {
            let mut out = [
                vec![0u32; row.len()],
                vec![0u32; row.len()],
                vec![0u32; row.len()],
            ];
            let mut cur = start;
            let mut t = 0;
            while t < row.len() {
                if !valid[t] {
                    t += 1;
                    continue;
                }
                if Some(row[t]) == image_token {
                    let (lh, lw) = grids
                        .next()
                        .context("the input holds more images' tokens than images were given")?;
                    anyhow::ensure!(
                        t + lh * lw <= row.len()
                            && row[t..t + lh * lw].iter().all(|&x| Some(x) == image_token),
                        "an image of {lh}×{lw} merged patches needs {} image tokens in a row",
                        lh * lw
                    );
                    for i in 0..lh {
                        for j in 0..lw {
                            let k = t + i * lw + j;
                            out[0][k] = cur;
                            out[1][k] = cur + i as u32;
                            out[2][k] = cur + j as u32;
                        }
                    }
                    t += lh * lw;
                    cur += lh.max(lw) as u32;
                } else {
                    for s in &mut out {
                        s[t] = cur;
                    }
                    cur += 1;
                    t += 1;
                }
            }
            for (stream, o) in streams.iter_mut().zip(out) {
                stream.push(o);
            }
            next.push(cur);
        }
        Ok((streams, next))
    }

    /// cos/sin tables `(B, 1, T, head_dim)` for the given positions.
    /// `sliding` picks the rope of sliding-window layers (Gemma 3's local base).
    pub(super) fn rope_tables(
        &self,
        positions: &[Vec<u32>],
        sliding: bool,
    ) -> Result<(Tensor, Tensor)> {
        let batch = positions.len();
        let seq = positions.first().map_or(0, Vec::len);
        let flat: Vec<f32> = positions.iter().flatten().map(|&p| p as f32).collect();
        let c = &self.config;
        let local = if sliding {
            c.sliding_rope.as_ref()
        } else {
            None
        };
        let (theta, scaling) = match local {
            Some(l) => (l.theta, l.scaling.as_ref()),
            None => (c.rope_theta, c.rope_scaling.as_ref()),
        };
        // Dynamic NTK scaling recomputes the frequencies from the longest position of the call,
        // as transformers does when a forward goes past `max_position_embeddings`.
        let length_dependent = matches!(scaling, Some(RopeScaling::Dynamic { .. }));
        let inv_freq = if local.is_some() || length_dependent {
            let longest = positions
                .iter()
                .flatten()
                .max()
                .map_or(0, |&p| p as usize + 1);
            let freqs =
                crate::model::config::rope_freq::inv_freq(theta, scaling, c.rotary_dim(), longest);
            Tensor::new(freqs, &self.device)?
        } else {
            self.inv_freq.clone()
        };
        let pos = Tensor::from_vec(flat, (batch * seq, 1), &self.device)?;
        let half = inv_freq.dim(0)?;
        let freqs = pos.matmul(&inv_freq.reshape((1, half))?)?;
        let freqs = Tensor::cat(&[&freqs, &freqs], D::Minus1)?;
        let shape = (batch, 1, seq, 2 * half);
        let scaling = crate::model::config::rope_freq::attention_scaling(scaling);
        let (mut cos, mut sin) = (freqs.cos()?, freqs.sin()?);
        if scaling != 1.0 {
            cos = (cos * scaling)?;
            sin = (sin * scaling)?;
        }
        let cos = cos.reshape(shape)?.to_dtype(self.dtype)?;
        let sin = sin.reshape(shape)?.to_dtype(self.dtype)?;
        Ok((cos, sin))
    }

    /// M-RoPE tables: frequency `j` turns with the stream whose `mrope_section` holds it.
    pub(super) fn mrope_tables(&self, streams: &MropeStreams) -> Result<(Tensor, Tensor)> {
        let section = self
            .config
            .mrope_section
            .as_ref()
            .context("M-RoPE positions for a model without mrope_section")?;
        let inv_freq: Vec<f32> = self.inv_freq.to_dtype(DType::F32)?.to_vec1()?;
        let half = inv_freq.len();
        let stream_of: Vec<usize> = section
            .iter()
            .enumerate()
            .flat_map(|(s, &n)| std::iter::repeat_n(s, n))
            .collect();
        anyhow::ensure!(
            stream_of.len() == half,
            "mrope_section covers {} of {half} frequencies",
            stream_of.len()
        );
        let batch = streams[0].len();
        let seq = streams[0].first().map_or(0, Vec::len);
        let mut angles = Vec::with_capacity(batch * seq * 2 * half);
        let [temporal, rows, cols] = streams;
        for ((tr, rr), cr) in temporal.iter().zip(rows).zip(cols) {
            for ((&tp, &rp), &cp) in tr.iter().zip(rr).zip(cr) {
                let position = [tp, rp, cp];
                let row: Vec<f32> = stream_of
                    .iter()
                    .zip(&inv_freq)
                    .map(|(&s, f)| position[s] as f32 * f)
                    .collect();
                angles.extend_from_slice(&row);
                angles.extend_from_slice(&row);
            }
        }
        let angles = Tensor::from_vec(angles, (batch, 1, seq, 2 * half), &self.device)?;
        let scaling =
            crate::model::config::rope_freq::attention_scaling(self.config.rope_scaling.as_ref());
        let (mut cos, mut sin) = (angles.cos()?, angles.sin()?);
        if scaling != 1.0 {
            cos = (cos * scaling)?;
            sin = (sin * scaling)?;
        }
        Ok((cos.to_dtype(self.dtype)?, sin.to_dtype(self.dtype)?))
    }
}
