//! Image preprocessing as transformers' image processors do it (their PIL backend), from
//! `preprocessor_config.json` or the `image_processor` section of a transformers-5
//! `processor_config.json`:
//! - `CLIPImageProcessor` (LLaVA-1.5): resize the shortest edge (bicubic), centre crop, rescale,
//!   normalise, giving channel-first pixel values `(3, H, W)`;
//! - `LlavaNextImageProcessor` and `LlavaOnevisionImageProcessor`: anyres tiles (see
//!   [`super::anyres`]), the base image first, each tile then processed as above; OneVision's
//!   images in a record with several images are padded to a square with the mean colour instead.

use std::path::Path;

use anyhow::{bail, Context, Result};
use image::RgbImage;

use super::resample::resize_bicubic;
use super::Pixels;
use serde_json::Value;

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

/// Qwen2-VL's processor settings: pixel budget and patching.
#[derive(Debug, Clone, PartialEq)]
pub struct QwenPatching {
    /// `size.shortest_edge`: the fewest pixels an image is resized to.
    pub min_pixels: u64,
    /// `size.longest_edge`: the most pixels.
    pub max_pixels: u64,
    pub patch_size: u32,
    pub merge_size: u32,
    pub temporal_patch_size: u32,
}

impl QwenPatching {
    /// transformers' defaults.
    pub fn defaults() -> Self {
        Self {
            min_pixels: 56 * 56,
            max_pixels: 28 * 28 * 1280,
            patch_size: 14,
            merge_size: 2,
            temporal_patch_size: 2,
        }
    }

    /// `(height, width)` after `smart_resize`: multiples of `patch × merge`, the aspect kept,
    /// the pixel count within `[min_pixels, max_pixels]`.
    pub fn smart_resize(&self, height: u32, width: u32) -> Result<(u32, u32)> {
        let factor = (self.patch_size * self.merge_size) as f64;
        let (h, w) = (height as f64, width as f64);
        if h.max(w) / h.min(w) > 200.0 {
            bail!("the image's aspect ratio {}×{} is over 200", height, width);
        }
        // Python's round() rounds halves to even.
        let round = |x: f64| {
            let r = x.round();
            if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
                r - x.signum()
            } else {
                r
            }
        };
        let mut hb = round(h / factor) * factor;
        let mut wb = round(w / factor) * factor;
        if hb * wb > self.max_pixels as f64 {
            let beta = (h * w / self.max_pixels as f64).sqrt();
            hb = factor.max((h / beta / factor).floor() * factor);
            wb = factor.max((w / beta / factor).floor() * factor);
        } else if hb * wb < self.min_pixels as f64 {
            let beta = (self.min_pixels as f64 / (h * w)).sqrt();
            hb = (h * beta / factor).ceil() * factor;
            wb = (w * beta / factor).ceil() * factor;
        }
        Ok((hb as u32, wb as u32))
    }
}

/// Largest `patch_size`, `merge_size` or `temporal_patch_size` accepted (far above any model's).
const MAX_PATCH: u32 = 1024;

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

    /// The `preprocessor_config.json` text for these settings.
    pub fn to_json(&self) -> Value {
        let (class, processor) = match self.kind {
            ProcessorKind::Clip => ("CLIPImageProcessor", "LlavaProcessor"),
            ProcessorKind::LlavaNext => ("LlavaNextImageProcessor", "LlavaNextProcessor"),
            ProcessorKind::LlavaOnevision => {
                ("LlavaOnevisionImageProcessor", "LlavaOnevisionProcessor")
            }
            ProcessorKind::Qwen2Vl => ("Qwen2VLImageProcessor", "Qwen2_5_VLProcessor"),
        };
        let size = match self.exact_size {
            Some((h, w)) => serde_json::json!({"height": h, "width": w}),
            None => serde_json::json!({"shortest_edge": self.shortest_edge}),
        };
        let mut v = serde_json::json!({
            "image_processor_type": class,
            "processor_class": processor,
            "do_convert_rgb": true,
            "do_resize": self.do_resize,
            "size": size,
            "resample": 3,
            "do_center_crop": self.do_center_crop,
            "crop_size": {"height": self.crop_size.0, "width": self.crop_size.1},
            "do_rescale": self.do_rescale,
            "rescale_factor": self.rescale_factor,
            "do_normalize": self.do_normalize,
            "image_mean": self.image_mean,
            "image_std": self.image_std,
        });
        if let Some(q) = &self.qwen {
            v["size"] =
                serde_json::json!({"shortest_edge": q.min_pixels, "longest_edge": q.max_pixels});
            v["patch_size"] = q.patch_size.into();
            v["merge_size"] = q.merge_size.into();
            v["temporal_patch_size"] = q.temporal_patch_size.into();
            if let Some(o) = v.as_object_mut() {
                o.remove("crop_size");
                o.remove("do_center_crop");
            }
        } else if self.kind != ProcessorKind::Clip {
            v["image_grid_pinpoints"] = serde_json::json!(self
                .pinpoints
                .iter()
                .map(|&(h, w)| [h, w])
                .collect::<Vec<_>>());
            v["do_pad"] = Value::Bool(true);
        }
        v
    }

    /// Reads `preprocessor_config.json`, or the `image_processor` object of a transformers-5
    /// `processor_config.json`; missing keys take CLIP's defaults for `default_size`.
    pub fn from_file(path: &Path, default_size: u32) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let value: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        let settings = value.get("image_processor").unwrap_or(&value);
        Self::from_json(settings, default_size).with_context(|| format!("in {}", path.display()))
    }

    /// Parses the processor settings from JSON.
    pub fn from_json(v: &Value, default_size: u32) -> Result<Self> {
        let mut p = Self::clip(default_size);
        let class = v
            .get("image_processor_type")
            .and_then(Value::as_str)
            .unwrap_or("CLIPImageProcessor");
        let class = class
            .trim_end_matches("Fast")
            .trim_end_matches("Pil")
            .to_string();
        p.kind = match class.as_str() {
            "CLIPImageProcessor" => ProcessorKind::Clip,
            "LlavaNextImageProcessor" => ProcessorKind::LlavaNext,
            "LlavaOnevisionImageProcessor" => ProcessorKind::LlavaOnevision,
            "Qwen2VLImageProcessor" => return Self::qwen_from_json(v),
            other => bail!(
                "image_processor_type `{other}` is not supported; supported: CLIPImageProcessor, \
                 LlavaNextImageProcessor, LlavaOnevisionImageProcessor, Qwen2VLImageProcessor"
            ),
        };
        if let Some(pins) = v.get("image_grid_pinpoints") {
            p.pinpoints = super::anyres::AnyRes::pinpoints_from_json(pins, 1)?;
        }
        let flag = |key: &str, default: bool| -> Result<bool> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(x) => x
                    .as_bool()
                    .with_context(|| format!("key `{key}` must be true or false, got {x}")),
            }
        };
        p.do_resize = flag("do_resize", true)?;
        // OneVision's processor resizes straight to the tile size and crops nothing.
        p.do_center_crop = flag("do_center_crop", p.kind != ProcessorKind::LlavaOnevision)?;
        p.do_rescale = flag("do_rescale", true)?;
        p.do_normalize = flag("do_normalize", true)?;
        match v.get("size") {
            None | Some(Value::Null) => {}
            Some(Value::Number(n)) => p.shortest_edge = n.as_u64().context("key `size`")? as u32,
            Some(size) => match size.get("shortest_edge").and_then(Value::as_u64) {
                Some(edge) => p.shortest_edge = edge as u32,
                None => {
                    let side = |k: &str| size.get(k).and_then(Value::as_u64).map(|n| n as u32);
                    match (side("height"), side("width")) {
                        (Some(h), Some(w)) => {
                            p.exact_size = Some((h, w));
                            p.shortest_edge = h.min(w);
                        }
                        _ => bail!("key `size` must hold `shortest_edge` or `height` and `width`, got {size}"),
                    }
                }
            },
        }
        match v.get("crop_size") {
            None | Some(Value::Null) => {
                p.crop_size = p.exact_size.unwrap_or((p.shortest_edge, p.shortest_edge))
            }
            Some(Value::Number(n)) => {
                let s = n.as_u64().context("key `crop_size`")? as u32;
                p.crop_size = (s, s)
            }
            Some(crop) => {
                let side = |k: &str| -> Result<u32> {
                    Ok(crop.get(k).and_then(Value::as_u64).with_context(|| {
                        format!("key `crop_size.{k}` is missing or not an integer")
                    })? as u32)
                };
                p.crop_size = (side("height")?, side("width")?);
            }
        }
        if let Some(f) = v.get("rescale_factor") {
            p.rescale_factor =
                f.as_f64()
                    .context("key `rescale_factor` must be a number")? as f32;
        }
        let triple = |key: &str, default: [f32; 3]| -> Result<[f32; 3]> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::Array(a)) if a.len() == 3 => {
                    let mut out = [0f32; 3];
                    for (o, x) in out.iter_mut().zip(a) {
                        *o = x
                            .as_f64()
                            .with_context(|| format!("key `{key}` must hold numbers"))?
                            as f32;
                    }
                    Ok(out)
                }
                Some(x) => bail!("key `{key}` must be a list of 3 numbers, got {x}"),
            }
        };
        p.image_mean = triple("image_mean", CLIP_MEAN)?;
        p.image_std = triple("image_std", CLIP_STD)?;
        if p.image_std.contains(&0.0) {
            bail!("key `image_std` must not contain 0");
        }
        Ok(p)
    }

    /// Qwen2-VL's settings: size as a pixel budget, patching keys.
    fn qwen_from_json(v: &Value) -> Result<Self> {
        let mut p = Self::clip(0);
        p.kind = ProcessorKind::Qwen2Vl;
        p.do_center_crop = false;
        let mut q = QwenPatching::defaults();
        let int = |key: &str| v.get(key).and_then(Value::as_u64);
        if let Some(size) = v.get("size").filter(|s| !s.is_null()) {
            q.min_pixels = size
                .get("shortest_edge")
                .and_then(Value::as_u64)
                .context("key `size.shortest_edge` (min_pixels) is missing or not an integer")?;
            q.max_pixels = size
                .get("longest_edge")
                .and_then(Value::as_u64)
                .context("key `size.longest_edge` (max_pixels) is missing or not an integer")?;
        }
        if let Some(n) = int("min_pixels") {
            q.min_pixels = n;
        }
        if let Some(n) = int("max_pixels") {
            q.max_pixels = n;
        }
        for (key, field) in [
            ("patch_size", &mut q.patch_size),
            ("merge_size", &mut q.merge_size),
            ("temporal_patch_size", &mut q.temporal_patch_size),
        ] {
            if let Some(n) = int(key) {
                *field = u32::try_from(n)
                    .ok()
                    .filter(|n| (1..=MAX_PATCH).contains(n))
                    .with_context(|| {
                        format!("key `{key}` is {n}; expected a whole number from 1 to {MAX_PATCH}")
                    })?;
            }
        }
        let flag = |key: &str| v.get(key).and_then(Value::as_bool).unwrap_or(true);
        p.do_resize = flag("do_resize");
        p.do_rescale = flag("do_rescale");
        p.do_normalize = flag("do_normalize");
        if let Some(f) = v.get("rescale_factor").and_then(Value::as_f64) {
            p.rescale_factor = f as f32;
        }
        for (key, field) in [
            ("image_mean", &mut p.image_mean),
            ("image_std", &mut p.image_std),
        ] {
            if let Some(a) = v.get(key).and_then(Value::as_array) {
                anyhow::ensure!(a.len() == 3, "key `{key}` must be a list of 3 numbers");
                for (o, x) in field.iter_mut().zip(a) {
                    *o = x
                        .as_f64()
                        .with_context(|| format!("key `{key}` must hold numbers"))?
                        as f32;
                }
            }
        }
        // Both at most MAX_PATCH (checked above): the product fits.
        p.shortest_edge = q.patch_size * q.merge_size;
        p.crop_size = (p.shortest_edge, p.shortest_edge);
        p.qwen = Some(q);
        Ok(p)
    }

    /// Qwen2-VL: the image smart-resized, rescaled and normalised, cut into patches of
    /// `C · T · P · P` values in the processor's order (merge blocks together).
    fn qwen_patches(&self, img: &RgbImage, q: &QwenPatching) -> Result<Pixels> {
        let original = (img.height(), img.width());
        let (h, w) = if self.do_resize {
            q.smart_resize(original.0, original.1)?
        } else {
            original
        };
        let resized = if (h, w) != original {
            resize_bicubic(img, w, h)
        } else {
            img.clone()
        };
        let mut plain = self.clone();
        plain.do_resize = false;
        plain.do_center_crop = false;
        let (_, values) = plain.preprocess(&resized);
        let (p, m, t) = (
            q.patch_size as usize,
            q.merge_size as usize,
            q.temporal_patch_size as usize,
        );
        let (h, w) = (h as usize, w as usize);
        anyhow::ensure!(
            h % (p * m) == 0 && w % (p * m) == 0,
            "Qwen2-VL images must be multiples of {} pixels; {h}×{w} is not (do_resize is off)",
            p * m
        );
        let (gh, gw) = (h / p, w / p);
        let per_patch = 3 * t * p * p;
        let mut out = Vec::with_capacity(gh * gw * per_patch);
        // Patches in merge-block order: block row, block column, row in block, column in block;
        // within a patch: channel, frame (the image repeated), pixel row, pixel column.
        for bh in 0..gh / m {
            for bw in 0..gw / m {
                for ih in 0..m {
                    for iw in 0..m {
                        let (y0, x0) = ((bh * m + ih) * p, (bw * m + iw) * p);
                        for c in 0..3 {
                            for _ in 0..t {
                                for y in 0..p {
                                    let row = c * h * w + (y0 + y) * w + x0;
                                    out.extend_from_slice(&values[row..row + p]);
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(Pixels {
            dims: (3 * t, p, p),
            tiles: gh * gw,
            original,
            grid: (gh, gw),
            values: std::sync::Arc::new(out),
        })
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
