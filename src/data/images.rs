//! Images of vision-language training records: decoded and preprocessed once, shared by the
//! batches that use them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};

use super::tokenize::TokenizedData;
pub use crate::model::vlm::Pixels;
use crate::model::vlm::{ImageInputs, ImageProcessor};

/// Loads every example's images through the model's image inputs. Errors name the JSONL file
/// (`source`), the record's line and the image file.
pub fn load_images(data: &mut TokenizedData, images: &ImageInputs, source: &Path) -> Result<()> {
    for ex in &mut data.examples {
        if ex.images.is_empty() {
            continue;
        }
        let paths: Vec<&Path> = ex.images.iter().map(PathBuf::as_path).collect();
        ex.pixel_values = images
            .load_record_images(&paths)
            .map_err(|e| anyhow!("{} line {}: {e:#}", source.display(), ex.line))?;
    }
    Ok(())
}

/// Image tokens of each record's images (by line), from the files' headers: anyres and
/// Qwen2.5-VL give each image size its own count, and OneVision does not tile the images of a
/// record with several.
pub fn image_token_counts(
    images: &ImageInputs,
    records: &[super::Record],
    source: &Path,
) -> Result<BTreeMap<usize, Vec<usize>>> {
    let mut sizes: BTreeMap<&Path, (u32, u32)> = BTreeMap::new();
    let mut counts = BTreeMap::new();
    for record in records.iter().filter(|r| !r.images.is_empty()) {
        let several = record.images.len() > 1;
        let mut own = Vec::with_capacity(record.images.len());
        for path in &record.images {
            let at = |e: anyhow::Error| anyhow!("{} line {}: {e:#}", source.display(), record.line);
            let original = match sizes.get(path.as_path()) {
                Some(&s) => s,
                None => {
                    let s = ImageProcessor::image_size(path).map_err(at)?;
                    sizes.insert(path, s);
                    s
                }
            };
            own.push(images.tokens_for_size(original, several).map_err(at)?);
        }
        counts.insert(record.line, own);
    }
    Ok(counts)
}
