//! Qwen2.5-VL's vision transformer, differentiable: patch embedding (a linear over each patch's
//! `C · T · P · P` values), blocks of RMSNorm, attention with a 2-D rotary embedding (within
//! windows, or over the whole image in `fullatt_block_indexes`) and a SwiGLU MLP, then the 2×2
//! patch merger (`ln_q`, Linear, GELU, Linear) into the language model's width.

use anyhow::{ensure, Result};
use candle_core::{Device, Tensor};

use super::config::{QwenVision, VisionConfig};
use super::image_batch::ImageBatch;
use super::tower::map_linear;
use crate::model::decoder::WeightSource;
use crate::model::linear::{frozen_matmul, Linear, Param};
use crate::model::ops;

/// RMSNorm epsilon of the vision blocks and the merger (fixed in transformers).
const EPS: f64 = 1e-6;

/// One vision block.
#[derive(Debug, Clone)]
struct Block {
    norm1: Param,
    qkv: Linear,
    proj: Linear,
    norm2: Param,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// The vision transformer and the merger.
#[derive(Debug, Clone)]
pub struct QwenVisionTower {
    config: VisionConfig,
    qwen: QwenVision,
    patch_embed: Param,
    blocks: Vec<Block>,
    ln_q: Param,
    merger_1: Linear,
    merger_2: Linear,
}

/// The order of one image's merged units for windowed attention, and each window's length in
/// merged units (`get_vision_window_index`).
pub fn window_order(rows: usize, cols: usize, window: usize) -> (Vec<usize>, Vec<usize>) {
    let windows_h = rows.div_ceil(window);
    let windows_w = cols.div_ceil(window);
    let mut order = Vec::with_capacity(rows * cols);
    let mut lengths = Vec::new();
    for wh in 0..windows_h {
        for ww in 0..windows_w {
            let before = order.len();
            for r in wh * window..((wh + 1) * window).min(rows) {
                for c in ww * window..((ww + 1) * window).min(cols) {
                    order.push(r * cols + c);
                }
            }
            lengths.push(order.len() - before);
        }
    }
    (order, lengths)
}

impl QwenVisionTower {
    /// Loads the tower under `prefix` (`visual`) and the merger under `prefix.merger`.
    pub fn load(
        config: &VisionConfig,
        qwen: &QwenVision,
        out_hidden: usize,
        prefix: &str,
        src: &mut WeightSource,
    ) -> Result<Self> {
        let d = config.hidden_size;
        let i = config.intermediate_size;
        let (c, t, p) = (
            config.num_channels,
            qwen.temporal_patch_size,
            config.patch_size,
        );
        let patch_embed = src.param(
            &format!("{prefix}.patch_embed.proj.weight"),
            &[d, c, t, p, p],
        )?;
        let mut blocks = Vec::with_capacity(config.num_hidden_layers);
        for b in 0..config.num_hidden_layers {
            let pre = format!("{prefix}.blocks.{b}");
            blocks.push(Block {
                norm1: src.param(&format!("{pre}.norm1.weight"), &[d])?,
                qkv: src.linear(&format!("{pre}.attn.qkv"), d, 3 * d, true)?,
                proj: src.linear(&format!("{pre}.attn.proj"), d, d, true)?,
                norm2: src.param(&format!("{pre}.norm2.weight"), &[d])?,
                gate: src.linear(&format!("{pre}.mlp.gate_proj"), d, i, true)?,
                up: src.linear(&format!("{pre}.mlp.up_proj"), d, i, true)?,
                down: src.linear(&format!("{pre}.mlp.down_proj"), i, d, true)?,
            });
        }
        let m2 = qwen.spatial_merge_size * qwen.spatial_merge_size;
        Ok(Self {
            config: config.clone(),
            qwen: qwen.clone(),
            patch_embed,
            blocks,
            ln_q: src.param(&format!("{prefix}.merger.ln_q.weight"), &[d])?,
            merger_1: src.linear(&format!("{prefix}.merger.mlp.0"), d * m2, d * m2, true)?,
            merger_2: src.linear(&format!("{prefix}.merger.mlp.2"), d * m2, out_hidden, true)?,
        })
    }

    /// The same tower with every parameter passed through `f`.
    pub fn map(&self, f: &mut dyn FnMut(&Param) -> Result<Param>) -> Result<Self> {
        let blocks = self
            .blocks
            .iter()
            .map(|b| {
                Ok(Block {
                    norm1: f(&b.norm1)?,
                    qkv: map_linear(&b.qkv, f)?,
                    proj: map_linear(&b.proj, f)?,
                    norm2: f(&b.norm2)?,
                    gate: map_linear(&b.gate, f)?,
                    up: map_linear(&b.up, f)?,
                    down: map_linear(&b.down, f)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            config: self.config.clone(),
            qwen: self.qwen.clone(),
            patch_embed: f(&self.patch_embed)?,
            blocks,
            ln_q: f(&self.ln_q)?,
            merger_1: map_linear(&self.merger_1, f)?,
            merger_2: map_linear(&self.merger_2, f)?,
        })
    }

    /// Every image's merged tokens in the language model's space, concatenated: `(Σ tokens, H)`.
    pub fn image_embeddings(&self, images: &ImageBatch) -> Result<Tensor> {
        let total = images.tiles.dim(0)?;
        let per_patch = images.tiles.elem_count() / total.max(1);
        let patches = images.tiles.reshape((total, per_patch))?;
        let kernel = self
            .patch_embed
            .tensor()
            .reshape((self.config.hidden_size, per_patch))?;
        let patches = patches.to_dtype(kernel.dtype())?;
        let embeds = match &self.patch_embed {
            Param::Trainable(_) => patches.matmul(&kernel.t()?)?,
            Param::Frozen(_) => frozen_matmul(&patches, &kernel)?,
        };
        let mut start = 0;
        let mut out = Vec::with_capacity(images.len());
        for shape in &images.images {
            let (gh, gw) = shape.grid;
            ensure!(
                gh * gw == shape.tiles && gh > 0,
                "an image of {} patches has no {gh}×{gw} patch grid",
                shape.tiles
            );
            out.push(self.one_image(&embeds.narrow(0, start, shape.tiles)?, gh, gw)?);
            start += shape.tiles;
        }
        Ok(Tensor::cat(&out, 0)?)
    }

    /// One image's patch embeddings `(gh·gw, D)` (merge-block order) through the blocks and the
    /// merger, in token order (row-major over merged units).
    fn one_image(&self, x: &Tensor, gh: usize, gw: usize) -> Result<Tensor> {
        let m = self.qwen.spatial_merge_size;
        let unit = m * m;
        let d = self.config.hidden_size;
        let (rows, cols) = (gh / m, gw / m);
        let window = self.qwen.window_size / m / self.config.patch_size;
        let (order, lengths) = window_order(rows, cols, window.max(1));
        let device = x.device().clone();
        // Patches regrouped window by window (each merged unit keeps its m×m patches).
        let unit_index: Vec<u32> = order.iter().map(|&u| u as u32).collect();
        let unit_index = Tensor::new(unit_index.as_slice(), &device)?;
        let x = x
            .reshape((rows * cols, unit, d))?
            .index_select(&unit_index, 0)?
            .reshape((rows * cols * unit, d))?;
        let (cos, sin) = self.rope_tables(&order, cols, &device)?;
        let window_lengths: Vec<usize> = lengths.iter().map(|l| l * unit).collect();
        let whole = [rows * cols * unit];
        let mut x = x;
        for (b, block) in self.blocks.iter().enumerate() {
            let segments: &[usize] = if self.qwen.fullatt_block_indexes.contains(&b) {
                &whole
            } else {
                &window_lengths
            };
            x = self.block(block, &x, &cos, &sin, segments)?;
        }
        let x = ops::rms_norm(&x, self.ln_q.tensor(), EPS)?.reshape((rows * cols, unit * d))?;
        let x = self.merger_1.forward(&x)?.gelu_erf()?;
        let x = self.merger_2.forward(&x)?;
        // Back to row-major order of the merged units.
        let mut inverse = vec![0u32; order.len()];
        for (position, &u) in order.iter().enumerate() {
            inverse[u] = position as u32;
        }
        let inverse = Tensor::new(inverse.as_slice(), &device)?;
        Ok(x.index_select(&inverse, 0)?)
    }

    /// Rotary tables `(1, 1, N, head_dim)` for the patches in window order: the first quarter
    /// of frequencies turns with the patch row, the second with the column, repeated for the
    /// second half.
    fn rope_tables(
        &self,
        order: &[usize],
        cols: usize,
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let m = self.qwen.spatial_merge_size;
        let head_dim = self.config.hidden_size / self.config.num_attention_heads;
        let spatial = head_dim / 2;
        let inv_freq: Vec<f64> = (0..spatial / 2)
            .map(|k| 1.0 / self.qwen.rope_theta.powf((2 * k) as f64 / spatial as f64))
            .collect();
        let n = order.len() * m * m;
        let mut angles = Vec::with_capacity(n * head_dim);
        for &u in order {
            let (ur, uc) = (u / cols, u % cols);
            for ih in 0..m {
                for iw in 0..m {
                    let (r, c) = ((ur * m + ih) as f64, (uc * m + iw) as f64);
                    let half: Vec<f32> = inv_freq
                        .iter()
                        .map(|f| (r * f) as f32)
                        .chain(inv_freq.iter().map(|f| (c * f) as f32))
                        .collect();
                    angles.extend_from_slice(&half);
                    angles.extend_from_slice(&half);
                }
            }
        }
        let angles = Tensor::from_vec(angles, (1, 1, n, head_dim), device)?;
        let dtype = self.patch_embed.tensor().dtype();
        Ok((
            angles.cos()?.to_dtype(dtype)?,
            angles.sin()?.to_dtype(dtype)?,
        ))
    }

    fn block(
        &self,
        block: &Block,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        segments: &[usize],
    ) -> Result<Tensor> {
        let (n, d) = x.dims2()?;
        let heads = self.config.num_attention_heads;
        let hd = d / heads;
        let h = ops::rms_norm(x, block.norm1.tensor(), EPS)?;
        // (n, 3, heads, hd) → q, k, v as (1, heads, n, hd).
        let qkv = block.qkv.forward(&h)?.reshape((n, 3, heads, hd))?;
        let part = |i: usize| -> Result<Tensor> {
            Ok(qkv
                .narrow(1, i, 1)?
                .squeeze(1)?
                .transpose(0, 1)?
                .contiguous()?
                .unsqueeze(0)?)
        };
        let q = ops::rope(&part(0)?, cos, sin)?;
        let k = ops::rope(&part(1)?, cos, sin)?;
        let v = part(2)?;
        let mut outputs = Vec::with_capacity(segments.len());
        let mut start = 0;
        for &len in segments.iter().filter(|&&l| l > 0) {
            let (qs, ks, vs) = (
                q.narrow(2, start, len)?,
                k.narrow(2, start, len)?,
                v.narrow(2, start, len)?,
            );
            let scores = (qs.matmul(&ks.t()?)? * (hd as f64).powf(-0.5))?;
            let probs = ops::softmax_last_dim(&scores)?;
            outputs.push(probs.matmul(&vs)?);
            start += len;
        }
        let attn = Tensor::cat(&outputs, 2)?
            .squeeze(0)?
            .transpose(0, 1)?
            .reshape((n, d))?;
        let x = (x + block.proj.forward(&attn)?)?;
        let h = ops::rms_norm(&x, block.norm2.tensor(), EPS)?;
        let h = ops::swiglu(&block.gate.forward(&h)?, &block.up.forward(&h)?)?;
        Ok((x + block.down.forward(&h)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_the_grid_row_by_row() {
        // 3×4 merged units in windows of 2: [0,1,4,5], [2,3,6,7], [8,9], [10,11].
        let (order, lengths) = window_order(3, 4, 2);
        assert_eq!(order, vec![0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 10, 11]);
        assert_eq!(lengths, vec![4, 4, 2, 2]);
    }
}
