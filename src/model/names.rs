//! Where a checkpoint keeps each part's tensors. The same LLaVA model is found under different
//! names depending on who wrote it:
//!
//! | part | transformers 4 / 5 `save_pretrained` | in memory (transformers ≥ 4.52), some hub files |
//! |---|---|---|
//! | language model body | `language_model.model.` | `model.language_model.` |
//! | output head | `language_model.lm_head` | `lm_head` |
//! | vision tower | `vision_tower.vision_model.` (or `vision_tower.` when built from a config) | `model.vision_tower.vision_model.` / `model.vision_tower.` |
//! | projector | `multi_modal_projector.` | `model.multi_modal_projector.` |
//! | row separator (anyres) | `image_newline` | `model.image_newline` |
//!
//! Qwen2.5-VL saves `model.` (language model), `visual.` (vision transformer, its merger the
//! projector) and `lm_head`; in memory they are `model.language_model.` and `model.visual.`.
//!
//! Each part is looked up on its own, so mixed files load too; tensors keep the names they came
//! with everywhere (module map, selection, checkpoints, `final/`).

use anyhow::{bail, Result};
use serde::Serialize;

use super::config::ModelConfig;
use super::weights::WeightStore;

/// The name prefixes of one checkpoint's parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TensorLayout {
    /// Prefix of the language model's body (`embed_tokens`, `layers.N`, `norm`), e.g. `model.`.
    pub text: String,
    /// The output head's module name (`lm_head`), without `.weight`.
    pub lm_head: String,
    /// Prefix of the vision transformer (`embeddings`, `encoder`, …) of a vision-language model.
    pub vision: Option<String>,
    /// Prefix of the projector of a vision-language model.
    pub projector: Option<String>,
    /// Name of LLaVA-NeXT's and OneVision's `image_newline` tensor.
    pub newline: Option<String>,
}

/// Candidate (body prefix, head name) pairs of a LLaVA language model, in lookup order.
const LLAVA_TEXT: [(&str, &str); 3] = [
    ("language_model.model.", "language_model.lm_head"),
    ("model.language_model.", "lm_head"),
    ("language_model.", "lm_head"),
];
/// Candidate vision-tower prefixes, in lookup order.
const LLAVA_VISION: [&str; 4] = [
    "vision_tower.vision_model.",
    "vision_tower.",
    "model.vision_tower.vision_model.",
    "model.vision_tower.",
];
/// Candidate projector prefixes, in lookup order.
const LLAVA_PROJECTOR: [&str; 2] = ["multi_modal_projector.", "model.multi_modal_projector."];
/// Candidate (body prefix, head name) pairs of Qwen2.5-VL's language model.
const QWEN_TEXT: [(&str, &str); 2] = [("model.", "lm_head"), ("model.language_model.", "lm_head")];
/// Candidate prefixes of Qwen2.5-VL's vision transformer.
const QWEN_VISION: [&str; 2] = ["visual.", "model.visual."];
/// Candidate names of `image_newline`, in lookup order.
const LLAVA_NEWLINE: [&str; 2] = ["image_newline", "model.image_newline"];

impl TensorLayout {
    /// The layout of a text-only decoder: `model.` and `lm_head`.
    pub fn text_only() -> Self {
        Self {
            text: "model.".into(),
            lm_head: "lm_head".into(),
            vision: None,
            projector: None,
            newline: None,
        }
    }

    /// Finds where `store` keeps each part of the model `config` describes; a part found under
    /// none of the known names is an error listing the names tried.
    pub fn detect(config: &ModelConfig, store: &WeightStore) -> Result<Self> {
        let Some(vision) = &config.vision else {
            return Ok(Self::text_only());
        };
        let has = |name: String| store.info(&name).is_some();
        if vision.qwen.is_some() {
            return Self::detect_qwen(store, &has);
        }
        let (text, lm_head) = pick(
            "the language model",
            LLAVA_TEXT.iter().copied(),
            |(body, _)| format!("{body}embed_tokens.weight"),
            &has,
            store,
        )?;
        let vision = pick(
            "the vision tower",
            LLAVA_VISION.iter().copied(),
            |prefix| format!("{prefix}embeddings.patch_embedding.weight"),
            &has,
            store,
        )?;
        let projector = pick(
            "the projector",
            LLAVA_PROJECTOR.iter().copied(),
            |prefix| format!("{prefix}linear_1.weight"),
            &has,
            store,
        )?;
        let anyres = config.vision.as_ref().is_some_and(|v| v.anyres().is_some());
        let newline = anyres
            .then(|| {
                pick(
                    "image_newline",
                    LLAVA_NEWLINE.iter().copied(),
                    String::from,
                    &has,
                    store,
                )
            })
            .transpose()?;
        Ok(Self {
            text: text.into(),
            lm_head: lm_head.into(),
            vision: Some(vision.into()),
            projector: Some(projector.into()),
            newline: newline.map(String::from),
        })
    }

    /// Qwen2.5-VL: `model.` / `visual.` as saved, `model.language_model.` / `model.visual.` in
    /// memory; the merger is the projector.
    fn detect_qwen(store: &WeightStore, has: &impl Fn(String) -> bool) -> Result<Self> {
        let (text, lm_head) = pick(
            "the language model",
            QWEN_TEXT.iter().copied(),
            |(body, _)| format!("{body}embed_tokens.weight"),
            has,
            store,
        )?;
        let vision = pick(
            "the vision transformer",
            QWEN_VISION.iter().copied(),
            |prefix| format!("{prefix}patch_embed.proj.weight"),
            has,
            store,
        )?;
        Ok(Self {
            text: text.into(),
            lm_head: lm_head.into(),
            vision: Some(vision.into()),
            projector: Some(format!("{vision}merger.")),
            newline: None,
        })
    }

    /// One line for `inspect`: where each part was found.
    pub fn describe(&self) -> String {
        let mut parts = vec![
            format!("language model `{}*`", self.text),
            format!("head `{}`", self.lm_head),
        ];
        if let Some(v) = &self.vision {
            parts.push(format!("vision tower `{v}*`"));
        }
        if let Some(p) = &self.projector {
            parts.push(format!("projector `{p}*`"));
        }
        parts.join(", ")
    }
}

/// The first candidate whose probe tensor exists in the store.
fn pick<T: Copy>(
    part: &str,
    candidates: impl Iterator<Item = T> + Clone,
    probe: impl Fn(T) -> String,
    has: &impl Fn(String) -> bool,
    store: &WeightStore,
) -> Result<T> {
    if let Some(found) = candidates.clone().find(|c| has(probe(*c))) {
        return Ok(found);
    }
    let tried: Vec<String> = candidates.map(probe).collect();
    bail!(
        "cannot find {part} in {}: none of {} is there; the checkpoint's layout is not one tunescope reads \
         (known layouts: transformers' save_pretrained and its in-memory names)",
        store.location(),
        tried.join(", ")
    )
}
