//! Vision-language models of the LLaVA family (LLaVA-1.5, LLaVA-NeXT, LLaVA-OneVision): the
//! vision side of the config, our differentiable CLIP and SigLIP towers with the projector,
//! anyres tiling, image preprocessing and tiny random models.

pub mod anyres;
pub mod config;
mod image_batch;
pub mod pack;
pub mod preprocess;
mod processor_config;
pub mod qwen_patching;
pub mod qwen_vit;
pub mod resample;
pub mod tiny;
pub mod tiny_qwen;
pub mod tower;
pub mod vision;

pub use config::{FeatureSelect, ImageLayout, TowerKind, VisionConfig, VisionLanguageConfig};
pub use image_batch::ImageBatch;
pub use preprocess::{ImageProcessor, ProcessorKind};
pub use qwen_patching::QwenPatching;
pub use vision::VisionPath;

/// The image placeholder token's text.
pub const IMAGE_TOKEN: &str = "<image>";

/// Qwen2.5-VL's image placeholder: the image tokens (`<|image_pad|>`) between its markers.
pub const QWEN_IMAGE_TEXT: &str = "<|vision_start|><|image_pad|><|vision_end|>";

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
    /// Qwen2.5-VL: the `(rows, columns)` of patches (each tile is then one patch); `(0, 0)`
    /// for the LLaVA family.
    pub grid: (usize, usize),
    /// `tiles · C · H · W` values, tile after tile.
    pub values: Arc<Vec<f32>>,
}

impl Pixels {
    /// What the model needs to know of the image besides its values.
    pub fn shape(&self) -> ImageShape {
        ImageShape {
            tiles: self.tiles,
            original: self.original,
            grid: self.grid,
        }
    }
}

/// One image's tile count, original size and (Qwen2.5-VL) patch grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageShape {
    pub tiles: usize,
    pub original: (u32, u32),
    pub grid: (usize, usize),
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
                    "qwen2_5_vl" => {
                        p.do_center_crop = false;
                        p.qwen = Some(QwenPatching::defaults());
                        ProcessorKind::Qwen2Vl
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
            "qwen2_5_vl" => ProcessorKind::Qwen2Vl,
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
        if let (Some(q), Some(qv)) = (&processor.qwen, &vision.qwen) {
            if q.patch_size as usize != vision.vision.patch_size
                || q.merge_size as usize != qv.spatial_merge_size
                || q.temporal_patch_size as usize != qv.temporal_patch_size
            {
                bail!(
                    "the image processor's patching (patch {}, merge {}, frames {}) differs from the vision tower's (patch {}, merge {}, frames {})",
                    q.patch_size, q.merge_size, q.temporal_patch_size,
                    vision.vision.patch_size, qv.spatial_merge_size, qv.temporal_patch_size
                );
            }
        } else if processor.tile_size() != (size, size) {
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
        vision::image_tokens(&self.config, &pixels.shape())
    }

    /// Image tokens of an image of `original` `(height, width)`, known before it is decoded;
    /// `among_several` when its record holds more than one image (OneVision does not tile those).
    pub fn tokens_for_size(&self, original: (u32, u32), among_several: bool) -> Result<usize> {
        let onevision_single =
            among_several && self.processor.kind == ProcessorKind::LlavaOnevision;
        let (tiles, grid) = match (&self.processor.qwen, self.config.anyres()) {
            (None, Some(_)) if onevision_single => (1, (0, 0)),
            (Some(q), _) => {
                let (h, w) = q.smart_resize(original.0, original.1)?;
                let grid = ((h / q.patch_size) as usize, (w / q.patch_size) as usize);
                (grid.0 * grid.1, grid)
            }
            (None, Some(anyres)) => (anyres.num_tiles(original), (0, 0)),
            (None, None) => (1, (0, 0)),
        };
        Ok(vision::image_tokens(
            &self.config,
            &ImageShape {
                tiles,
                original,
                grid,
            },
        ))
    }

    /// The text that stands for one image in this model's prompts: `<image>` for the LLaVA
    /// family; Qwen2.5-VL's `<|vision_start|><|image_pad|><|vision_end|>`. Records and probe
    /// prompts write `<image>` for every model; [`crate::model::ModelTokenizer::encode`] puts
    /// this in its place.
    pub fn placeholder_text(&self) -> &'static str {
        if self.config.qwen.is_some() {
            QWEN_IMAGE_TEXT
        } else {
            IMAGE_TOKEN
        }
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
        self.processor.process(&ImageProcessor::open(path)?, false)
    }

    /// Loads and preprocesses the images of one record (OneVision tiles only a record's single
    /// image).
    pub fn load_record_images(&self, paths: &[&Path]) -> Result<Vec<Pixels>> {
        let several = paths.len() > 1;
        paths
            .iter()
            .map(|p| self.processor.process(&ImageProcessor::open(p)?, several))
            .collect()
    }
}
