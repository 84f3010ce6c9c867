//! Numeric tokens: the vocabulary entries that read as a number (digits, ordinals, decimals,
//! comma-thousands, number words), as the study's counting-bias probe defines them.

use std::sync::OnceLock;

use regex::Regex;
use tokenizers::Tokenizer;

/// Number words, lower case (`Seven` and `SEVEN`-style capitalisation is handled separately).
pub const NUMBER_WORDS: [&str; 32] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
    "thirty",
    "forty",
    "fifty",
    "sixty",
    "seventy",
    "eighty",
    "ninety",
    "hundred",
    "thousand",
    "million",
    "billion",
];

fn numeric_pattern() -> &'static Regex {
    static PATTERN: OnceLock<Regex> = OnceLock::new();
    PATTERN.get_or_init(|| {
        Regex::new(r"^(?:\d+|\d+(?:st|nd|rd|th)|\d+\.\d+|\d{1,3}(?:,\d{3})+(?:\.\d+)?)$")
            .expect("valid regex")
    })
}

/// Whether a token's text is numeric once space markers (`Ġ`, `▁`) and whitespace are removed.
pub fn is_numeric_text(token: &str) -> bool {
    let text = token.replace(['Ġ', '▁', 'Ċ'], "");
    let text = text.trim();
    if text.is_empty() {
        return false;
    }
    if numeric_pattern().is_match(text) {
        return true;
    }
    let lower = text.to_lowercase();
    if !NUMBER_WORDS.contains(&lower.as_str()) {
        return false;
    }
    // Lower case or capitalised ("Seven"), not arbitrary mixed case.
    let mut chars = text.chars();
    let first = chars.next().expect("non-empty");
    let rest: String = chars.collect();
    rest.chars().all(|c| c.is_ascii_lowercase())
        && (first.is_ascii_lowercase() || first.is_ascii_uppercase())
}

/// The numeric subset of a vocabulary, computed once per tokenizer.
#[derive(Debug, Clone)]
pub struct NumericVocab {
    /// `mask[id]` is true for numeric tokens.
    pub mask: Vec<bool>,
    /// Numeric token ids, ascending.
    pub ids: Vec<u32>,
}

impl NumericVocab {
    /// Scans `vocab_size` ids of `tokenizer` (ids the tokenizer does not know are not numeric).
    pub fn new(tokenizer: &Tokenizer, vocab_size: usize) -> Self {
        let mask: Vec<bool> = (0..vocab_size as u32)
            .map(|id| {
                tokenizer
                    .id_to_token(id)
                    .is_some_and(|t| is_numeric_text(&t))
            })
            .collect();
        let ids = mask
            .iter()
            .enumerate()
            .filter(|(_, m)| **m)
            .map(|(i, _)| i as u32)
            .collect();
        Self { mask, ids }
    }

    /// Whether `id` is numeric.
    pub fn contains(&self, id: u32) -> bool {
        self.mask.get(id as usize).copied().unwrap_or(false)
    }

    /// Number of numeric tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the vocabulary has no numeric token.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The mask as f32 weights (1 for numeric), for summing probabilities on a device.
    pub fn weights(&self) -> Vec<f32> {
        self.mask
            .iter()
            .map(|&m| if m { 1.0 } else { 0.0 })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_made_vocabulary() {
        for yes in [
            "7",
            "Ġ12",
            "▁seven",
            "3rd",
            "21st",
            "1,000",
            "12,345,678",
            "3.14",
            "Seven",
            "Ġtwenty",
            " 42 ",
            "hundred",
            "Billion",
        ] {
            assert!(is_numeric_text(yes), "{yes} should be numeric");
        }
        for no in [
            "v2",
            "Seven-Up",
            "sevens",
            "SEVen",
            "1,00",
            "3.",
            ".5",
            "a1",
            "",
            "Ġ",
            "x",
            "1st2",
            "twentyone",
            "1-2",
        ] {
            assert!(!is_numeric_text(no), "{no} should not be numeric");
        }
    }
}
