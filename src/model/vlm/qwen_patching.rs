//! Qwen2-VL's image processor (`Qwen2VLImageProcessor`, used by Qwen2.5-VL): smart resize
//! within a pixel budget, then 14×14 patches of two identical frames, in merge-block order.

use anyhow::{bail, Context, Result};
use image::RgbImage;
use serde_json::Value;

use super::preprocess::{ImageProcessor, ProcessorKind};
use super::resample::resize_bicubic;
use super::Pixels;

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

impl ImageProcessor {
    /// Qwen2-VL's settings: size as a pixel budget, patching keys.
    pub(super) fn qwen_from_json(v: &Value) -> Result<Self> {
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
        p.shortest_edge = q.patch_size * q.merge_size;
        p.crop_size = (p.shortest_edge, p.shortest_edge);
        p.qwen = Some(q);
        Ok(p)
    }

    /// Qwen2-VL: the image smart-resized, rescaled and normalised, cut into patches of
    /// `C · T · P · P` values in the processor's order (merge blocks together).
    pub(super) fn qwen_patches(&self, img: &RgbImage, q: &QwenPatching) -> Result<Pixels> {
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
}
