//! Images of vision-language training records: decoded and preprocessed once, shared by the
//! batches that use them.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Result};

use super::tokenize::TokenizedData;
use crate::model::vlm::ImageProcessor;

/// Preprocessed pixel values of one image, channel first `(C, H, W)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pixels {
    pub dims: (usize, usize, usize),
    pub values: Arc<Vec<f32>>,
}

/// Loads every example's image through `processor`. Errors name the JSONL file (`source`),
/// the record's line and the image file.
pub fn load_images(
    data: &mut TokenizedData,
    processor: &ImageProcessor,
    source: &Path,
) -> Result<()> {
    let (h, w) = processor.crop_size;
    for ex in &mut data.examples {
        let Some(path) = &ex.image else {
            continue;
        };
        let values = processor
            .load_file(path)
            .map_err(|e| anyhow!("{} line {}: {e:#}", source.display(), ex.line))?;
        ex.pixel_values = Some(Pixels {
            dims: (3, h as usize, w as usize),
            values: Arc::new(values),
        });
    }
    Ok(())
}
