//! Reading and writing image processor settings: `preprocessor_config.json`, or the
//! `image_processor` section of a transformers-5 `processor_config.json`.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::preprocess::{ImageProcessor, ProcessorKind, CLIP_MEAN, CLIP_STD};

impl ImageProcessor {
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
}
