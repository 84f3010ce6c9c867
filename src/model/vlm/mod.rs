//! Vision-language models of the LLaVA family (LLaVA-1.5, LLaVA-NeXT, LLaVA-OneVision): the
//! vision side of the config, our differentiable CLIP and SigLIP towers with the projector,
//! anyres tiling, image preprocessing and tiny random models.

pub mod anyres;
pub mod config;
pub mod pack;
pub mod preprocess;
pub mod resample;
pub mod tiny;
pub mod tower;
pub mod vision;

pub use config::{FeatureSelect, ImageLayout, TowerKind, VisionConfig, VisionLanguageConfig};
pub use preprocess::{ImageProcessor, ProcessorKind};
pub use vision::{ImageBatch, VisionPath};

/// The image placeholder token's text.
pub const IMAGE_TOKEN: &str = "<image>";

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Result};

use super::config::ModelConfig;
use super::source::ModelFiles;

/// Preprocessed pixel values of one image: its tiles, each channel first `(C, H, W)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pixels {
    /// `(C, H, W)` of one tile.
    pub dims: (usize, usize, usize),
    /// Number of tiles (1 for LLaVA-1.5; the base image plus the grid's for anyres).
    pub tiles: usize,
    /// The image's `(height, width)` before preprocessing.
    pub original: (u32, u32),
    /// `tiles · C · H · W` values, tile after tile.
    pub values: Arc<Vec<f32>>,
}

/// What turns a prompt's `<image>` placeholders and their pictures into model inputs (like a
/// Hugging Face `LlavaProcessor`): the placeholder's token id, how many image tokens each image
/// expands to, and the image preprocessing.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageInputs {
    pub image_token: u32,
    pub config: VisionLanguageConfig,
    pub processor: ImageProcessor,
}

impl ImageInputs {
    /// The image inputs of a vision-language model (`preprocessor_config.json`, else the
    /// `image_processor` of `processor_config.json`, else the family's defaults at the vision
    /// tower's image size); `None` for a text-only model.
    pub fn for_model(config: &ModelConfig, files: &ModelFiles) -> Result<Option<Self>> {
        let Some(vision) = &config.vision else {
            return Ok(None);
        };
        let size = vision.vision.image_size as u32;
        let mut processor = match &files.preprocessor_config {
            Some(path) => ImageProcessor::from_file(path, size)?,
            None => {
                let mut p = ImageProcessor::clip(size);
                p.kind = match vision.family.as_str() {
                    "llava_next" => ProcessorKind::LlavaNext,
                    "llava_onevision" => {
                        p.do_center_crop = false;
                        p.exact_size = Some((size, size));
                        ProcessorKind::LlavaOnevision
                    }
                    _ => ProcessorKind::Clip,
                };
                tracing::warn!(
                    "{} has no preprocessor_config.json or processor_config.json; images are \
                     preprocessed with the {:?} processor's defaults at {size}×{size}",
                    files.dir.display(),
                    p.kind
                );
                p
            }
        };
        let expected = match vision.family.as_str() {
            "llava_next" => ProcessorKind::LlavaNext,
            "llava_onevision" => ProcessorKind::LlavaOnevision,
            _ => ProcessorKind::Clip,
        };
        if processor.kind != expected {
            bail!(
                "the image processor is {:?} but model_type {} needs {expected:?}",
                processor.kind,
                vision.family
            );
        }
        if let Some(anyres) = vision.anyres() {
            if processor.pinpoints.is_empty() {
                processor.pinpoints = anyres.pinpoints.clone();
            } else if processor.pinpoints != anyres.pinpoints {
                bail!(
                    "the image processor's image_grid_pinpoints {:?} differ from config.json's {:?}; \
                     image-token counts would not match the model",
                    processor.pinpoints,
                    anyres.pinpoints
                );
            }
        }
        if processor.tile_size() != (size, size) {
            bail!(
                "the image processor makes {:?} (height, width) tiles but the vision tower takes {size}×{size}",
                processor.tile_size()
            );
        }
        Ok(Some(Self {
            image_token: vision.image_token_index,
            config: vision.clone(),
            processor,
        }))
    }

    /// Image tokens an image of these pixels expands to.
    pub fn tokens_for(&self, pixels: &Pixels) -> usize {
        vision::image_tokens(&self.config, pixels.tiles, pixels.original)
    }

    /// Image tokens of one image of the vision tower's own size (LLaVA-1.5: every image).
    pub fn tokens_per_tile(&self) -> usize {
        self.config.image_seq_len()
    }

    /// `ids` with the i-th image placeholder repeated to `counts[i]` tokens, and how many
    /// placeholders there were (placeholders past `counts` stay single).
    pub fn expand_with(&self, ids: &[u32], counts: &[usize]) -> (Vec<u32>, usize) {
        let mut out = Vec::with_capacity(ids.len() + counts.iter().sum::<usize>());
        let mut placeholders = 0;
        for &id in ids {
            if id == self.image_token {
                let n = counts.get(placeholders).copied().unwrap_or(1);
                placeholders += 1;
                out.extend(std::iter::repeat_n(id, n));
            } else {
                out.push(id);
            }
        }
        (out, placeholders)
    }

    /// `ids` with each placeholder expanded for the image whose pixels follow it in `images`.
    pub fn expand(&self, ids: &[u32], images: &[&Pixels]) -> (Vec<u32>, usize) {
        let counts: Vec<usize> = images.iter().map(|p| self.tokens_for(p)).collect();
        self.expand_with(ids, &counts)
    }

    /// Loads and preprocesses an image file as the only image of its record.
    pub fn load_pixels(&self, path: &Path) -> Result<Pixels> {
        Ok(self.processor.process(&ImageProcessor::open(path)?, false))
    }

    /// Loads and preprocesses the images of one record (OneVision tiles only a record's single
    /// image).
    pub fn load_record_images(&self, paths: &[&Path]) -> Result<Vec<Pixels>> {
        let several = paths.len() > 1;
        paths
            .iter()
            .map(|p| Ok(self.processor.process(&ImageProcessor::open(p)?, several)))
            .collect()
    }
}
