//! Image preprocessing as transformers' image processors do it (their PIL backend), from
//! `preprocessor_config.json` or the `image_processor` section of a transformers-5
//! `processor_config.json`:
//! - `CLIPImageProcessor` (LLaVA-1.5): resize the shortest edge (bicubic), centre crop, rescale,
//!   normalise, giving channel-first pixel values `(3, H, W)`;
//! - `LlavaNextImageProcessor` and `LlavaOnevisionImageProcessor`: anyres tiles (see
//!   [`super::anyres`]), the base image first, each tile then processed as above; OneVision's
//!   images in a record with several images are padded to a square with the mean colour instead.

use std::path::Path;

use anyhow::{Context, Result};
use image::RgbImage;

use super::qwen_patching::QwenPatching;
use super::resample::resize_bicubic;
use super::Pixels;

/// Which transformers image processor the settings describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessorKind {
    /// `CLIPImageProcessor`: one crop per image.
    Clip,
    /// `LlavaNextImageProcessor`: anyres tiles.
    LlavaNext,
    /// `LlavaOnevisionImageProcessor`: anyres tiles; several images per record padded to squares.
    LlavaOnevision,
    /// `Qwen2VLImageProcessor` (Qwen2.5-VL): smart resize, then 14×14 patches.
    Qwen2Vl,
}

/// The preprocessing settings of `preprocessor_config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessor {
    pub kind: ProcessorKind,
    pub do_resize: bool,
    /// Target length of the shorter side (when `exact_size` is `None`).
    pub shortest_edge: u32,
    /// `size: {height, width}`: resize to exactly this `(height, width)`.
    pub exact_size: Option<(u32, u32)>,
    /// Anyres grid pinpoints `(height, width)` (LLaVA-NeXT, OneVision).
    pub pinpoints: Vec<(u32, u32)>,
    /// Qwen2-VL's pixel budget and patching.
    pub qwen: Option<QwenPatching>,
    pub do_center_crop: bool,
    /// `(height, width)` of the crop.
    pub crop_size: (u32, u32),
    pub do_rescale: bool,
    pub rescale_factor: f32,
    pub do_normalize: bool,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
}

/// CLIP's normalisation constants (the processor's defaults).
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// CLIP's normalisation constants (the processor's defaults).
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

impl ImageProcessor {
    /// CLIP defaults for a square `size`: resize and crop to it, rescale by 1/255, CLIP mean/std.
    pub fn clip(size: u32) -> Self {
        Self {
            kind: ProcessorKind::Clip,
            do_resize: true,
            shortest_edge: size,
            exact_size: None,
            pinpoints: Vec::new(),
            qwen: None,
            do_center_crop: true,
            crop_size: (size, size),
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: CLIP_MEAN,
            image_std: CLIP_STD,
        }
    }

    /// `(height, width)` of one tile.
    pub fn tile_size(&self) -> (u32, u32) {
        if self.do_center_crop {
            self.crop_size
        } else {
            self.exact_size
                .unwrap_or((self.shortest_edge, self.shortest_edge))
        }
    }

    /// `(height, width)` of the output for a plain (CLIP) image of `image` size.
    pub fn output_size(&self, image: (u32, u32)) -> (u32, u32) {
        let (h, w) = match (self.do_resize, self.exact_size) {
            (false, _) => image,
            (true, Some(size)) => size,
            (true, None) => resized_size(image.0, image.1, self.shortest_edge),
        };
        if self.do_center_crop {
            self.crop_size
        } else {
            (h, w)
        }
    }

    /// Decodes the image file at `path`; errors name the file.
    pub fn open(path: &Path) -> Result<RgbImage> {
        let img = image::ImageReader::open(path)
            .with_context(|| format!("cannot open image {}", path.display()))?
            .with_guessed_format()
            .with_context(|| format!("cannot read image {}", path.display()))?
            .decode()
            .with_context(|| format!("cannot decode image {}", path.display()))?;
        Ok(img.to_rgb8())
    }

    /// `(height, width)` of the image file at `path`, from its header.
    pub fn image_size(path: &Path) -> Result<(u32, u32)> {
        let (w, h) = image::ImageReader::open(path)
            .with_context(|| format!("cannot open image {}", path.display()))?
            .with_guessed_format()
            .with_context(|| format!("cannot read image {}", path.display()))?
            .into_dimensions()
            .with_context(|| format!("cannot read the size of image {}", path.display()))?;
        Ok((h, w))
    }

    /// Decodes and preprocesses the image file at `path` as the only image of its record;
    /// errors name the file.
    pub fn load_file(&self, path: &Path) -> Result<Vec<f32>> {
        Ok(self.process(&Self::open(path)?, false)?.values.to_vec())
    }

    /// Preprocesses one image into its tiles; `among_several` when its record holds more than
    /// one image (OneVision then pads it to a square instead of tiling it).
    pub fn process(&self, img: &RgbImage, among_several: bool) -> Result<Pixels> {
        if let Some(q) = &self.qwen {
            return self.qwen_patches(img, q);
        }
        let original = (img.height(), img.width());
        let tiles: Vec<RgbImage> = match self.kind {
            ProcessorKind::Clip | ProcessorKind::Qwen2Vl => vec![img.clone()],
            ProcessorKind::LlavaOnevision if among_several => {
                let background = self.image_mean.map(|m| (m * 255.0) as u8);
                vec![pad_to_square(img, background)]
            }
            ProcessorKind::LlavaNext | ProcessorKind::LlavaOnevision => self.anyres_tiles(img),
        };
        let (h, w) = self.tile_size();
        let mut values = Vec::with_capacity(tiles.len() * 3 * (h * w) as usize);
        for tile in &tiles {
            let (dims, v) = self.preprocess(tile);
            debug_assert_eq!(dims, (3, h as usize, w as usize));
            values.extend(v);
        }
        Ok(Pixels {
            dims: (3, h as usize, w as usize),
            tiles: tiles.len(),
            original,
            grid: (0, 0),
            values: std::sync::Arc::new(values),
        })
    }

    /// The base image (the whole image squashed to a tile) and the grid's tiles, row by row
    /// (`get_image_patches`).
    fn anyres_tiles(&self, img: &RgbImage) -> Vec<RgbImage> {
        let original = (img.height(), img.width());
        let best = super::anyres::select_best_resolution(original, &self.pinpoints);
        let (nh, nw) = super::anyres::fit_inside(original, best);
        let resized = resize_bicubic(img, nw, nh);
        let (th, tw) = best;
        let mut padded = RgbImage::new(tw, th);
        image::imageops::replace(
            &mut padded,
            &resized,
            ((tw - nw) / 2) as i64,
            ((th - nh) / 2) as i64,
        );
        let patch = if self.do_center_crop {
            self.crop_size.0
        } else {
            self.exact_size.map_or(self.shortest_edge, |s| s.0)
        };
        let base_size = self
            .exact_size
            .unwrap_or((self.shortest_edge, self.shortest_edge));
        let mut tiles = vec![resize_bicubic(img, base_size.1, base_size.0)];
        for y in (0..th).step_by(patch as usize) {
            for x in (0..tw).step_by(patch as usize) {
                tiles.push(image::imageops::crop_imm(&padded, x, y, patch, patch).to_image());
            }
        }
        tiles
    }

    /// Resizes, crops, rescales and normalises one image (or tile) into `((C, H, W), values)`
    /// in channel-first order.
    pub fn preprocess(&self, img: &RgbImage) -> ((usize, usize, usize), Vec<f32>) {
        let mut img = img.clone();
        if self.do_resize {
            let (h, w) = match self.exact_size {
                Some(size) => size,
                None => resized_size(img.height(), img.width(), self.shortest_edge),
            };
            if (h, w) != (img.height(), img.width()) {
                img = resize_bicubic(&img, w, h);
            }
        }
        if self.do_center_crop {
            img = center_crop(&img, self.crop_size);
        }
        let (w, h) = img.dimensions();
        let (w, h) = (w as usize, h as usize);
        let mut out = vec![0f32; 3 * h * w];
        for (x, y, px) in img.enumerate_pixels() {
            for c in 0..3 {
                let mut v = px.0[c] as f32;
                if self.do_rescale {
                    v *= self.rescale_factor;
                }
                if self.do_normalize {
                    v = (v - self.image_mean[c]) / self.image_std[c];
                }
                out[c * h * w + y as usize * w + x as usize] = v;
            }
        }
        ((3, h, w), out)
    }
}

/// `img` centred on a square of `background` (`pad_to_square`; the extra row or column goes
/// after the image).
pub fn pad_to_square(img: &RgbImage, background: [u8; 3]) -> RgbImage {
    let (w, h) = img.dimensions();
    if w == h {
        return img.clone();
    }
    let side = w.max(h);
    let mut out = RgbImage::from_pixel(side, side, image::Rgb(background));
    let (x, y) = if w > h {
        (0, (side - h) / 2)
    } else {
        ((side - w) / 2, 0)
    };
    image::imageops::replace(&mut out, img, x as i64, y as i64);
    out
}

/// `(height, width)` after resizing the shorter side to `edge`, keeping the aspect ratio
/// (the longer side rounds down, as the Hugging Face processor does).
pub fn resized_size(height: u32, width: u32, edge: u32) -> (u32, u32) {
    let (short, long) = if height <= width {
        (height, width)
    } else {
        (width, height)
    };
    let new_long = ((edge as u64 * long as u64) / short.max(1) as u64) as u32;
    if height <= width {
        (edge, new_long)
    } else {
        (new_long, edge)
    }
}

/// The central `(height, width)` window (offsets rounded down); an image smaller than the crop
/// is padded with black around it first.
pub fn center_crop(img: &RgbImage, (ch, cw): (u32, u32)) -> RgbImage {
    let (w, h) = img.dimensions();
    if w >= cw && h >= ch {
        let top = (h - ch) / 2;
        let left = (w - cw) / 2;
        return image::imageops::crop_imm(img, left, top, cw, ch).to_image();
    }
    let mut padded = RgbImage::new(w.max(cw), h.max(ch));
    let (pw, ph) = padded.dimensions();
    image::imageops::replace(
        &mut padded,
        img,
        ((pw - w) / 2) as i64,
        ((ph - h) / 2) as i64,
    );
    center_crop(&padded, (ch, cw))
}
