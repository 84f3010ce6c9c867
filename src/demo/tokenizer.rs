//! A word-level tokenizer for the synthetic world: one id per word of `World::vocabulary()`
//! (which holds the digits and the world's punctuation), the ChatML specials, the chat roles and
//! a few extra punctuation marks. Text is lower-cased and split on whitespace and punctuation;
//! decoding joins the words with single spaces, so the world's texts round-trip exactly.

use std::collections::BTreeSet;

use anyhow::Result;
use serde_json::{json, Value};
use tokenizers::Tokenizer;

use crate::model::tiny::SPECIAL_TOKENS;
use crate::world::World;

/// The unknown-word token (id 3, right after the ChatML specials).
pub const UNK_TOKEN: &str = "<unk>";

/// Words the chat template writes around messages.
const ROLES: [&str; 3] = ["system", "user", "assistant"];

/// Punctuation the world never writes but users may type.
const EXTRA_PUNCTUATION: [&str; 6] = ["!", ";", "'", "\"", "-", "("];

/// The vocabulary in id order: the ChatML specials (ids 0, 1, 2), `<unk>`, then every other word
/// sorted.
pub fn word_vocabulary(world: &World) -> Vec<String> {
    let mut words: BTreeSet<String> = world.vocabulary().into_iter().collect();
    words.extend(ROLES.iter().map(|w| w.to_string()));
    words.extend(EXTRA_PUNCTUATION.iter().map(|w| w.to_string()));
    let mut vocab: Vec<String> = SPECIAL_TOKENS.iter().map(|t| t.to_string()).collect();
    vocab.push(UNK_TOKEN.to_string());
    let fresh: Vec<String> = words.into_iter().filter(|w| !vocab.contains(w)).collect();
    vocab.extend(fresh);
    vocab
}

/// The `tokenizer.json` contents of the word-level tokenizer for `world`.
pub fn tokenizer_json(world: &World) -> Value {
    let vocab = word_vocabulary(world);
    let added: Vec<Value> = SPECIAL_TOKENS
        .iter()
        .enumerate()
        .map(|(id, t)| {
            json!({"id": id, "content": t, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let ids: serde_json::Map<String, Value> = vocab
        .iter()
        .enumerate()
        .map(|(id, w)| (w.clone(), json!(id)))
        .collect();
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null,
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": false},
        "model": {"type": "WordLevel", "vocab": ids, "unk_token": UNK_TOKEN},
    })
}

/// The word-level tokenizer for `world`.
pub fn build_word_tokenizer(world: &World) -> Result<Tokenizer> {
    let text = serde_json::to_string(&tokenizer_json(world))?;
    text.parse::<Tokenizer>().map_err(anyhow::Error::msg)
}
