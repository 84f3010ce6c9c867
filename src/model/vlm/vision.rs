//! The vision path of a LLaVA-family model: the vision tower (CLIP or SigLIP), the projector
//! (`multi_modal_projector.linear_1`, GELU, `linear_2`) and, for anyres models, the packing of
//! tile features with `image_newline`.

use std::collections::BTreeSet;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};

use super::config::{FeatureSelect, VisionLanguageConfig};
use super::pack::pack_image;
use super::tower::{map_linear, VisionTower};
use super::Pixels;
use crate::model::decoder::WeightSource;
use crate::model::linear::{Linear, Param};
use crate::model::names::TensorLayout;

/// The images of one forward pass, in the order their image-token runs appear (row by row).
#[derive(Debug, Clone)]
pub struct ImageBatch {
    /// Every image's tiles stacked `(tiles, C, H, W)`.
    pub tiles: Tensor,
    /// Per image: its tile count and original `(height, width)`.
    pub images: Vec<(usize, (u32, u32))>,
}

impl ImageBatch {
    /// Stacks preprocessed images; `None` when there are none.
    pub fn from_pixels(pixels: &[&Pixels], device: &Device) -> Result<Option<Self>> {
        let Some(first) = pixels.first() else {
            return Ok(None);
        };
        let (c, h, w) = first.dims;
        let mut data = Vec::with_capacity(pixels.iter().map(|p| p.values.len()).sum());
        let mut images = Vec::with_capacity(pixels.len());
        for p in pixels {
            anyhow::ensure!(
                p.dims == first.dims,
                "images of one batch differ in tile size"
            );
            data.extend_from_slice(&p.values);
            images.push((p.tiles, p.original));
        }
        let total: usize = images.iter().map(|i| i.0).sum();
        Ok(Some(Self {
            tiles: Tensor::from_vec(data, (total, c, h, w), device)?,
            images,
        }))
    }

    /// Images of one tile each (LLaVA-1.5), stacked `(I, C, H, W)`.
    pub fn single_tiles(tiles: Tensor) -> Result<Self> {
        let (count, _, h, w) = tiles.dims4()?;
        Ok(Self {
            tiles,
            images: vec![(1, (h as u32, w as u32)); count],
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// Whether the batch holds no image.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }
}

/// The vision tower up to the feature layer, the projector and `image_newline`.
#[derive(Debug, Clone)]
pub struct VisionPath {
    config: VisionLanguageConfig,
    tower: VisionTower,
    linear_1: Linear,
    linear_2: Linear,
    /// LLaVA-NeXT's and OneVision's row separator, `(H,)`.
    newline: Option<Param>,
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
                tower,
                linear_1,
                linear_2,
                newline,
            },
            unused,
        ))
    }

    /// The same path with every parameter passed through `f`.
    pub fn map(&self, f: &mut dyn FnMut(&Param) -> Result<Param>) -> Result<Self> {
        Ok(Self {
            config: self.config.clone(),
            tower: self.tower.map(f)?,
            linear_1: map_linear(&self.linear_1, f)?,
            linear_2: map_linear(&self.linear_2, f)?,
            newline: self.newline.as_ref().map(&mut *f).transpose()?,
        })
    }

    /// The configuration this path was built from.
    pub fn config(&self) -> &VisionLanguageConfig {
        &self.config
    }

    /// Vision-tower hidden states at the feature layer for tiles `(B, C, H, W)`.
    pub fn features(&self, pixel_values: &Tensor) -> Result<Tensor> {
        self.tower.features(pixel_values)
    }

    /// Projected features of every tile, `(B, N, H)` with `N` image tokens per tile (CLIP's
    /// class token dropped with the `default` strategy).
    pub fn tile_embeddings(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let features = self.tower.features(pixel_values)?;
        let features = match (self.config.select, &self.config.vision.tower) {
            (FeatureSelect::Default, super::config::TowerKind::Clip) => {
                features.narrow(1, 1, features.dim(1)? - 1)?
            }
            _ => features,
        };
        let h = self.linear_1.forward(&features)?.gelu_erf()?;
        self.linear_2.forward(&h)
    }

    /// Image tokens an image of `tiles` tiles and `original` size becomes.
    pub fn tokens_for(&self, tiles: usize, original: (u32, u32)) -> usize {
        image_tokens(&self.config, tiles, original)
    }

    /// Every image's embeddings in the language model's space, concatenated in order:
    /// `(Σ tokens, H)`.
    pub fn image_embeddings(&self, images: &ImageBatch) -> Result<Tensor> {
        let tiles = self.tile_embeddings(&images.tiles)?;
        let (_, per_tile, hidden) = tiles.dims3()?;
        let Some(anyres) = self.config.anyres() else {
            return Ok(tiles.reshape((images.tiles.dim(0)? * per_tile, hidden))?);
        };
        let newline = self
            .newline
            .as_ref()
            .context("an anyres model needs image_newline")?
            .tensor();
        let mut start = 0;
        let mut out = Vec::with_capacity(images.len());
        for &(count, original) in &images.images {
            let own = tiles.narrow(0, start, count)?;
            out.push(pack_image(&own, original, &anyres, newline)?);
            start += count;
        }
        Ok(Tensor::cat(&out, 0)?)
    }
}

/// Image tokens an image of `tiles` tiles and `original` size becomes under `config` (what the
/// processors' `_get_number_of_features` count).
pub fn image_tokens(config: &VisionLanguageConfig, tiles: usize, original: (u32, u32)) -> usize {
    match config.anyres() {
        None => tiles * config.image_seq_len(),
        Some(_) if tiles == 1 => config.image_seq_len() + 1,
        Some(anyres) => anyres.num_tokens(original),
    }
}
