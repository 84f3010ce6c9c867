//! The vision path of a LLaVA-family model: the vision tower (CLIP or SigLIP), the projector
//! (`multi_modal_projector.linear_1`, GELU, `linear_2`) and, for anyres models, the packing of
//! tile features with `image_newline`.

use std::collections::BTreeSet;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;

use super::config::{FeatureSelect, VisionLanguageConfig};
use super::image_batch::ImageBatch;
use super::pack::pack_image;
use super::qwen_vit::QwenVisionTower;
use super::tower::{map_linear, VisionTower};
use super::ImageShape;
use crate::model::decoder::WeightSource;
use crate::model::linear::{Linear, Param};
use crate::model::names::TensorLayout;

/// The vision tower up to the feature layer, the projector and `image_newline` (LLaVA
/// family), or Qwen2.5-VL's vision transformer with its merger.
#[derive(Debug, Clone)]
pub struct VisionPath {
    config: VisionLanguageConfig,
    parts: Parts,
}

/// The modules of either family.
#[derive(Debug, Clone)]
enum Parts {
    Llava {
        tower: VisionTower,
        linear_1: Linear,
        linear_2: Linear,
        /// LLaVA-NeXT's and OneVision's row separator, `(H,)`.
        newline: Option<Param>,
    },
    Qwen(QwenVisionTower),
}

impl VisionPath {
    /// Loads the tensors the forward uses, under the prefixes `layout` found. Tensors that never
    /// reach the language model (layers past the feature layer, `post_layernorm`, SigLIP's
    /// head) are returned so the caller can keep them frozen.
    pub fn load(
        config: &VisionLanguageConfig,
        layout: &TensorLayout,
        text_hidden: usize,
        src: &mut WeightSource,
    ) -> Result<(Self, BTreeSet<String>)> {
        let (Some(v), Some(pr)) = (&layout.vision, &layout.projector) else {
            bail!("the checkpoint layout names no vision tower or projector");
        };
        if let Some(qwen) = &config.qwen {
            let tower = QwenVisionTower::load(
                &config.vision,
                qwen,
                text_hidden,
                v.trim_end_matches('.'),
                src,
            )?;
            return Ok((
                Self {
                    config: config.clone(),
                    parts: Parts::Qwen(tower),
                },
                BTreeSet::new(),
            ));
        }
        let (tower, unused) = VisionTower::load(
            &config.vision,
            v.trim_end_matches('.'),
            config.feature_index(),
            src,
        )?;
        let pr = pr.trim_end_matches('.');
        let d = config.vision.hidden_size;
        let linear_1 = src.linear(&format!("{pr}.linear_1"), d, text_hidden, true)?;
        let linear_2 = src.linear(&format!("{pr}.linear_2"), text_hidden, text_hidden, true)?;
        let newline = match config.anyres() {
            Some(_) => {
                let name = layout
                    .newline
                    .as_deref()
                    .context("the checkpoint has no image_newline tensor")?;
                Some(src.param(name, &[text_hidden])?)
            }
            None => None,
        };
        Ok((
            Self {
                config: config.clone(),
                parts: Parts::Llava {
                    tower,
                    linear_1,
                    linear_2,
                    newline,
                },
            },
            unused,
        ))
    }

    /// The same path with every parameter passed through `f`.
    pub fn map(&self, f: &mut dyn FnMut(&Param) -> Result<Param>) -> Result<Self> {
        let parts = match &self.parts {
            Parts::Llava {
                tower,
                linear_1,
                linear_2,
                newline,
            } => Parts::Llava {
                tower: tower.map(f)?,
                linear_1: map_linear(linear_1, f)?,
                linear_2: map_linear(linear_2, f)?,
                newline: newline.as_ref().map(&mut *f).transpose()?,
            },
            Parts::Qwen(tower) => Parts::Qwen(tower.map(f)?),
        };
        Ok(Self {
            config: self.config.clone(),
            parts,
        })
    }

    /// The configuration this path was built from.
    pub fn config(&self) -> &VisionLanguageConfig {
        &self.config
    }

    /// The LLaVA family's tower and projector; an error for Qwen2.5-VL.
    fn llava_parts(&self) -> Result<(&VisionTower, &Linear, &Linear, Option<&Param>)> {
        match &self.parts {
            Parts::Llava {
                tower,
                linear_1,
                linear_2,
                newline,
            } => Ok((tower, linear_1, linear_2, newline.as_ref())),
            Parts::Qwen(_) => bail!("Qwen2.5-VL's vision transformer has no fixed-size tiles"),
        }
    }

    /// Vision-tower hidden states at the feature layer for tiles `(B, C, H, W)`.
    pub fn features(&self, pixel_values: &Tensor) -> Result<Tensor> {
        self.llava_parts()?.0.features(pixel_values)
    }

    /// Projected features of every tile, `(B, N, H)` with `N` image tokens per tile (CLIP's
    /// class token dropped with the `default` strategy).
    pub fn tile_embeddings(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let (tower, linear_1, linear_2, _) = self.llava_parts()?;
        let features = tower.features(pixel_values)?;
        let features = match (self.config.select, &self.config.vision.tower) {
            (FeatureSelect::Default, super::config::TowerKind::Clip) => {
                features.narrow(1, 1, features.dim(1)? - 1)?
            }
            _ => features,
        };
        let h = linear_1.forward(&features)?.gelu_erf()?;
        linear_2.forward(&h)
    }

    /// Image tokens an image of `tiles` tiles and `original` size becomes.
    pub fn tokens_for(&self, shape: &ImageShape) -> usize {
        image_tokens(&self.config, shape)
    }

    /// Every image's embeddings in the language model's space, concatenated in order:
    /// `(Σ tokens, H)`.
    pub fn image_embeddings(&self, images: &ImageBatch) -> Result<Tensor> {
        if let Parts::Qwen(tower) = &self.parts {
            return tower.image_embeddings(images);
        }
        let tiles = self.tile_embeddings(&images.tiles)?;
        let (_, per_tile, hidden) = tiles.dims3()?;
        let Some(anyres) = self.config.anyres() else {
            return Ok(tiles.reshape((images.tiles.dim(0)? * per_tile, hidden))?);
        };
        let newline = self
            .llava_parts()?
            .3
            .context("an anyres model needs image_newline")?
            .tensor();
        let mut start = 0;
        let mut out = Vec::with_capacity(images.len());
        for shape in &images.images {
            let own = tiles.narrow(0, start, shape.tiles)?;
            out.push(pack_image(&own, shape.original, &anyres, newline)?);
            start += shape.tiles;
        }
        Ok(Tensor::cat(&out, 0)?)
    }
}

/// Image tokens an image of `tiles` tiles and `original` size becomes under `config` (what the
/// processors' `_get_number_of_features` count).
pub fn image_tokens(config: &VisionLanguageConfig, shape: &ImageShape) -> usize {
    if let Some(q) = &config.qwen {
        return shape.grid.0 * shape.grid.1 / (q.spatial_merge_size * q.spatial_merge_size);
    }
    match config.anyres() {
        None => shape.tiles * config.image_seq_len(),
        Some(_) if shape.tiles == 1 => config.image_seq_len() + 1,
        Some(anyres) => anyres.num_tokens(shape.original),
    }
}
