//! The model's tokenizer with its special tokens and chat template (rendered with minijinja).

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;
use tokenizers::Tokenizer;

use super::source::ModelFiles;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// Tokenizer plus what `tokenizer_config.json` says about special tokens and chat formatting.
#[derive(Clone)]
pub struct ModelTokenizer {
    pub tokenizer: Tokenizer,
    pub chat_template: Option<String>,
    /// Where the chat template was read from (`chat_template.jinja`, `tokenizer_config.json ...`).
    pub chat_template_source: Option<String>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub pad_token: Option<String>,
    /// Token ids that end generation (eos from the tokenizer config, config.json and generation_config.json).
    pub stop_ids: Vec<u32>,
    /// Image placeholder expansion and preprocessing, for a vision-language model (set by
    /// [`crate::model::Model::open`]).
    pub images: Option<super::vlm::ImageInputs>,
}

fn token_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(String::from),
        _ => None,
    }
}

fn read_json(path: &std::path::Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

impl ModelTokenizer {
    /// Loads `tokenizer.json` and, when present, `tokenizer_config.json` and `generation_config.json`.
    pub fn load(files: &ModelFiles) -> Result<Self> {
        let tokenizer = Tokenizer::from_file(&files.tokenizer).map_err(|e| {
            anyhow::anyhow!(
                "{} is not a valid tokenizer file: {e}",
                files.tokenizer.display()
            )
        })?;
        let config = match &files.tokenizer_config {
            Some(path) => read_json(path)?,
            None => Value::Null,
        };
        let template = super::chat_template::find(&files.dir, &config)
            .with_context(|| format!("reading the chat template of {}", files.dir.display()))?;
        let eos_token = token_text(config.get("eos_token"));
        let mut stop_ids: Vec<u32> = Vec::new();
        if let Some(id) = eos_token.as_deref().and_then(|t| tokenizer.token_to_id(t)) {
            stop_ids.push(id);
        }
        for path in [Some(&files.config), files.generation_config.as_ref()]
            .into_iter()
            .flatten()
        {
            let v = read_json(path)?;
            match v.get("eos_token_id") {
                Some(Value::Number(n)) => stop_ids.extend(n.as_u64().map(|n| n as u32)),
                Some(Value::Array(ids)) => {
                    stop_ids.extend(ids.iter().filter_map(|i| i.as_u64()).map(|n| n as u32))
                }
                _ => {}
            }
        }
        stop_ids.sort_unstable();
        stop_ids.dedup();
        Ok(Self {
            tokenizer,
            chat_template_source: template.as_ref().map(|t| t.source.clone()),
            chat_template: template.map(|t| t.text),
            bos_token: token_text(config.get("bos_token")),
            eos_token,
            pad_token: token_text(config.get("pad_token")),
            stop_ids,
            images: None,
        })
    }

    /// Token ids of `text` (special tokens in the text are recognised; none are added).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        // `<image>` stands for the model's own image placeholder (Qwen2.5-VL's differs).
        let text = match &self.images {
            Some(images) if images.placeholder_text() != super::vlm::IMAGE_TOKEN => {
                std::borrow::Cow::Owned(
                    text.replace(super::vlm::IMAGE_TOKEN, images.placeholder_text()),
                )
            }
            _ => std::borrow::Cow::Borrowed(text),
        };
        let encoding = self
            .tokenizer
            .encode(text.as_ref(), false)
            .map_err(anyhow::Error::msg)?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Text of `ids`, special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer.decode(ids, true).map_err(anyhow::Error::msg)
    }

    /// Id used to pad batches: the pad token, else the first stop id, else 0.
    pub fn pad_id(&self) -> u32 {
        self.pad_token
            .as_deref()
            .and_then(|t| self.tokenizer.token_to_id(t))
            .or_else(|| self.stop_ids.first().copied())
            .unwrap_or(0)
    }

    /// Renders `messages` with the chat template; `None` when the model has no template.
    pub fn render_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<Option<String>> {
        let Some(text) = &self.chat_template else {
            return Ok(None);
        };
        let template = super::chat_template::ChatTemplate {
            text: text.clone(),
            source: self
                .chat_template_source
                .clone()
                .unwrap_or_else(|| "the tokenizer".into()),
        };
        let rendered = super::chat_template::render(
            &template,
            &messages,
            &super::chat_template::RenderContext {
                add_generation_prompt,
                bos_token: self.bos_token.as_deref(),
                eos_token: self.eos_token.as_deref(),
                pad_token: self.pad_token.as_deref(),
            },
        )?;
        Ok(Some(rendered))
    }
}
