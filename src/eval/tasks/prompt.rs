//! Turning an item's prompt into the context the model conditions on.

use anyhow::{Context, Result};

use crate::model::tokenizer::ChatMessage;
use crate::model::{Decoder, ModelTokenizer};

/// The prompt as text: with `chat`, a user message rendered with the chat template plus the
/// generation prompt (raw text when the model has no template); otherwise the prompt itself.
pub fn render(tok: &ModelTokenizer, prompt: &str, chat: bool) -> Result<String> {
    if chat {
        let messages = [ChatMessage {
            role: "user".into(),
            content: prompt.to_string(),
        }];
        if let Some(text) = tok.render_chat(&messages, true)? {
            return Ok(text);
        }
    }
    Ok(prompt.to_string())
}

/// The tokenizer's BOS id, when it declares a BOS token.
fn bos_id(tok: &ModelTokenizer) -> Option<u32> {
    tok.bos_token
        .as_deref()
        .and_then(|t| tok.tokenizer.token_to_id(t))
}

/// The token that starts a sequence with no context (as lm-evaluation-harness's prefix token):
/// the tokenizer's BOS, else the config's `bos_token_id`, else the first stop id, else the pad id.
pub fn prefix_id(decoder: &Decoder, tok: &ModelTokenizer) -> u32 {
    bos_id(tok)
        .or(decoder.config().bos_token_id)
        .or_else(|| tok.stop_ids.first().copied())
        .unwrap_or_else(|| tok.pad_id())
}

/// Token ids of already rendered `text`. Raw (non-chat) text gets the tokenizer's BOS in front
/// when it declares one (chat templates write their own); empty text becomes the prefix token,
/// so there is always something to condition on.
pub fn context_ids(
    decoder: &Decoder,
    tok: &ModelTokenizer,
    text: &str,
    raw: bool,
) -> Result<Vec<u32>> {
    let mut ids = tok.encode(text)?;
    if raw {
        if let Some(bos) = bos_id(tok) {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
    }
    if ids.is_empty() {
        ids.push(prefix_id(decoder, tok));
    }
    Ok(ids)
}

/// A task item's image as model inputs: its prompt ids get the placeholder expanded and the
/// image's pixels are loaded. `Ok(None)` when the item has no image or the model takes none.
pub fn item_image(
    tok: &ModelTokenizer,
    task: &super::Task,
    index: usize,
    ids: &mut Vec<u32>,
) -> Result<Option<crate::data::Pixels>> {
    let (Some(images), Some(Some(path))) = (&tok.images, task.images.get(index)) else {
        return Ok(None);
    };
    let pixels = images.load_pixels(path).with_context(|| {
        format!(
            "task `{}` item {} ({})",
            task.name,
            index + 1,
            task.data.display()
        )
    })?;
    let (expanded, placeholders) = images.expand(ids, &[&pixels]);
    anyhow::ensure!(
        placeholders == 1,
        "task `{}` item {}: an item with an image needs exactly one <image> placeholder in its prompt, found {placeholders}",
        task.name,
        index + 1
    );
    *ids = expanded;
    Ok(Some(pixels))
}

/// `copies` copies of one image, for as many rows that show it.
pub fn repeat_pixels(
    pixels: &crate::data::Pixels,
    copies: usize,
    device: &candle_core::Device,
) -> Result<crate::model::vlm::ImageBatch> {
    let refs = vec![pixels; copies];
    crate::model::vlm::ImageBatch::from_pixels(&refs, device)?
        .context("no copies of the image were asked for")
}

/// Whether prompts of a task are rendered raw: `chat: false`, or the model has no template.
pub fn is_raw(tok: &ModelTokenizer, chat: bool) -> bool {
    !chat || tok.chat_template.is_none()
}
