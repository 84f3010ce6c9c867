//! Image preprocessing as a `CLIPImageProcessor` describes it in `preprocessor_config.json`:
//! convert to RGB, resize the shortest edge (bicubic), center crop, rescale, normalise, giving
//! channel-first pixel values `(3, H, W)`.

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use image::imageops::FilterType;
use image::RgbImage;
use serde_json::Value;

/// The preprocessing settings of `preprocessor_config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessor {
    pub do_resize: bool,
    /// Target length of the shorter side.
    pub shortest_edge: u32,
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
            do_resize: true,
            shortest_edge: size,
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
        serde_json::json!({
            "image_processor_type": "CLIPImageProcessor",
            "processor_class": "LlavaProcessor",
            "do_convert_rgb": true,
            "do_resize": self.do_resize,
            "size": {"shortest_edge": self.shortest_edge},
            "resample": 3,
            "do_center_crop": self.do_center_crop,
            "crop_size": {"height": self.crop_size.0, "width": self.crop_size.1},
            "do_rescale": self.do_rescale,
            "rescale_factor": self.rescale_factor,
            "do_normalize": self.do_normalize,
            "image_mean": self.image_mean,
            "image_std": self.image_std,
        })
    }

    /// Reads `preprocessor_config.json`; missing keys take CLIP's defaults for `default_size`.
    pub fn from_file(path: &Path, default_size: u32) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let value: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        Self::from_json(&value, default_size).with_context(|| format!("in {}", path.display()))
    }

    /// Parses the processor settings from JSON.
    pub fn from_json(v: &Value, default_size: u32) -> Result<Self> {
        let mut p = Self::clip(default_size);
        let flag = |key: &str, default: bool| -> Result<bool> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(x) => x
                    .as_bool()
                    .with_context(|| format!("key `{key}` must be true or false, got {x}")),
            }
        };
        p.do_resize = flag("do_resize", true)?;
        p.do_center_crop = flag("do_center_crop", true)?;
        p.do_rescale = flag("do_rescale", true)?;
        p.do_normalize = flag("do_normalize", true)?;
        match v.get("size") {
            None | Some(Value::Null) => {}
            Some(Value::Number(n)) => p.shortest_edge = n.as_u64().context("key `size`")? as u32,
            Some(size) => {
                p.shortest_edge = size
                    .get("shortest_edge")
                    .and_then(Value::as_u64)
                    .context("key `size.shortest_edge` is missing or not an integer (only shortest-edge resizing is supported)")?
                    as u32
            }
        }
        match v.get("crop_size") {
            None | Some(Value::Null) => p.crop_size = (p.shortest_edge, p.shortest_edge),
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

    /// `(height, width)` of the output.
    pub fn output_size(&self, image: (u32, u32)) -> (u32, u32) {
        let (h, w) = if self.do_resize {
            resized_size(image.0, image.1, self.shortest_edge)
        } else {
            image
        };
        if self.do_center_crop {
            self.crop_size
        } else {
            (h, w)
        }
    }

    /// Decodes and preprocesses the image file at `path`; errors name the file.
    pub fn load_file(&self, path: &Path) -> Result<Vec<f32>> {
        let img = image::ImageReader::open(path)
            .with_context(|| format!("cannot open image {}", path.display()))?
            .with_guessed_format()
            .with_context(|| format!("cannot read image {}", path.display()))?
            .decode()
            .with_context(|| format!("cannot decode image {}", path.display()))?;
        Ok(self.preprocess(&img.to_rgb8()).1)
    }

    /// Preprocesses an RGB image into `((C, H, W), values)` in channel-first order.
    pub fn preprocess(&self, img: &RgbImage) -> ((usize, usize, usize), Vec<f32>) {
        let mut img = img.clone();
        if self.do_resize {
            let (h, w) = resized_size(img.height(), img.width(), self.shortest_edge);
            if (h, w) != (img.height(), img.width()) {
                img = image::imageops::resize(&img, w, h, FilterType::CatmullRom);
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

    /// Stacks preprocessed images (each `3·H·W` values of the crop size) into `(I, 3, H, W)`.
    pub fn stack(&self, images: &[&[f32]], device: &Device) -> Result<Tensor> {
        let (h, w) = (self.crop_size.0 as usize, self.crop_size.1 as usize);
        let data: Vec<f32> = images.iter().flat_map(|i| i.iter().copied()).collect();
        Ok(Tensor::from_vec(data, (images.len(), 3, h, w), device)?)
    }
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
