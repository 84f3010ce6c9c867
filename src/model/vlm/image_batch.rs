//! The images of one forward pass, stacked.

use anyhow::Result;
use candle_core::{Device, Tensor};

use super::{ImageShape, Pixels};

/// The images of one forward pass, in the order their image-token runs appear (row by row).
#[derive(Debug, Clone)]
pub struct ImageBatch {
    /// Every image's tiles stacked `(tiles, C, H, W)`.
    pub tiles: Tensor,
    /// Per image: its tile count, original `(height, width)` and patch grid.
    pub images: Vec<ImageShape>,
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
            images.push(p.shape());
        }
        let total: usize = images.iter().map(|i| i.tiles).sum();
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
            images: vec![
                ImageShape {
                    tiles: 1,
                    original: (h as u32, w as u32),
                    grid: (0, 0),
                };
                count
            ],
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
