//! Images of vision-language training records: decoded and preprocessed once, shared by the
//! batches that use them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};

use super::tokenize::TokenizedData;
pub use crate::model::vlm::Pixels;
use crate::model::vlm::{ImageInputs, ImageProcessor};

/// Loads every example's image through the model's image inputs. Errors name the JSONL file
/// (`source`), the record's line and the image file.
pub fn load_images(data: &mut TokenizedData, images: &ImageInputs, source: &Path) -> Result<()> {
    for ex in &mut data.examples {
        let Some(path) = &ex.image else {
            continue;
        };
        let pixels = images
            .load_pixels(path)
            .map_err(|e| anyhow!("{} line {}: {e:#}", source.display(), ex.line))?;
        ex.pixel_values = Some(pixels);
    }
    Ok(())
}

/// Image tokens of each distinct image file among `paths`, from the files' headers (anyres
/// models give each image size its own count).
pub fn image_token_counts<'a>(
    images: &ImageInputs,
    paths: impl Iterator<Item = (usize, &'a Path)>,
    source: &Path,
) -> Result<BTreeMap<PathBuf, usize>> {
    let mut counts = BTreeMap::new();
    for (line, path) in paths {
        if counts.contains_key(path) {
            continue;
        }
        let original = ImageProcessor::image_size(path)
            .map_err(|e| anyhow!("{} line {line}: {e:#}", source.display()))?;
        let count = images
            .tokens_for_size(original)
            .map_err(|e| anyhow!("{} line {line}: {e:#}", source.display()))?;
        counts.insert(path.to_path_buf(), count);
    }
    Ok(counts)
}
