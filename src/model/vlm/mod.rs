//! Vision-language (LLaVA) models: the vision side of the config, our differentiable CLIP
//! vision tower with the projector, image preprocessing and tiny random LLaVA models.

pub mod config;
pub mod preprocess;
pub mod tiny;
pub mod vision;

pub use config::{FeatureSelect, VisionConfig, VisionLanguageConfig};
pub use preprocess::ImageProcessor;
pub use vision::VisionPath;

/// The image placeholder token's text.
pub const IMAGE_TOKEN: &str = "<image>";

use std::path::Path;

use anyhow::{bail, Result};

use super::config::ModelConfig;
use super::source::ModelFiles;

/// What turns a prompt's `<image>` placeholder and its picture into model inputs (like a
/// Hugging Face `LlavaProcessor`): the placeholder's token id, how many image tokens it expands
/// to, and the image preprocessing.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageInputs {
    pub image_token: u32,
    pub tokens_per_image: usize,
    pub processor: ImageProcessor,
}

impl ImageInputs {
    /// The image inputs of a vision-language model (`preprocessor_config.json`, else CLIP
    /// defaults at the vision tower's image size); `None` for a text-only model.
    pub fn for_model(config: &ModelConfig, files: &ModelFiles) -> Result<Option<Self>> {
        let Some(vision) = &config.vision else {
            return Ok(None);
        };
        let size = vision.vision.image_size as u32;
        let processor = match &files.preprocessor_config {
            Some(path) => ImageProcessor::from_file(path, size)?,
            None => ImageProcessor::clip(size),
        };
        if processor.output_size((size, size)) != (size, size) {
            bail!(
                "preprocessor_config.json crops images to {:?} (height, width) but the vision tower takes {size}×{size}",
                processor.crop_size
            );
        }
        Ok(Some(Self {
            image_token: vision.image_token_index,
            tokens_per_image: vision.image_seq_len(),
            processor,
        }))
    }

    /// `ids` with each image placeholder repeated to the image's token count, and how many
    /// placeholders there were.
    pub fn expand(&self, ids: &[u32]) -> (Vec<u32>, usize) {
        let mut out = Vec::with_capacity(ids.len() + self.tokens_per_image);
        let mut placeholders = 0;
        for &id in ids {
            if id == self.image_token {
                placeholders += 1;
                out.extend(std::iter::repeat_n(id, self.tokens_per_image));
            } else {
                out.push(id);
            }
        }
        (out, placeholders)
    }

    /// Loads an image as pixel values for [`crate::data::Pixels`].
    pub fn load_pixels(&self, path: &Path) -> Result<crate::data::Pixels> {
        let (h, w) = self.processor.crop_size;
        Ok(crate::data::Pixels {
            dims: (3, h as usize, w as usize),
            values: std::sync::Arc::new(self.processor.load_file(path)?),
        })
    }
}
