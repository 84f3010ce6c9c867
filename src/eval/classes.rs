//! Token classes the probe measures besides numbers: the target task's own answer vocabulary,
//! derived from the training data (the tokens far more frequent in its responses than in its
//! prompts and the held-out text), and classes a recipe names by hand (token lists or a regex).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

/// A set of vocabulary ids whose probability mass the probe follows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenClass {
    /// Name shown on the dashboard and in records (`answer` for the derived one).
    pub name: String,
    /// Member ids, sorted.
    pub ids: Vec<u32>,
    /// How the class was made, for `inspect`-style reporting.
    pub origin: String,
}

impl TokenClass {
    /// A `(V,)` weight vector: 1 on members, 0 elsewhere.
    pub fn weights(&self, vocab: usize) -> Vec<f32> {
        let mut w = vec![0f32; vocab];
        for &id in &self.ids {
            if let Some(x) = w.get_mut(id as usize) {
                *x = 1.0;
            }
        }
        w
    }

    /// Whether `id` belongs to the class.
    pub fn contains(&self, id: u32) -> bool {
        self.ids.binary_search(&id).is_ok()
    }
}

/// Thresholds of the derived answer class.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeriveOptions {
    /// A token joins when its share of response tokens is at least this many times its
    /// (add-one smoothed) share of reference tokens.
    pub min_ratio: f64,
    /// ... and it occurs at least this often in the responses.
    pub min_count: usize,
}

impl Default for DeriveOptions {
    fn default() -> Self {
        Self {
            min_ratio: 3.0,
            min_count: 3,
        }
    }
}

/// The tokens the target task answers with: frequent in `responses` (the training data's
/// labelled tokens), rare in `reference` (its prompts and the held-out probe prompts).
/// `exclude` (end-of-turn and other special tokens) never joins.
pub fn derive_answer_class(
    responses: &[Vec<u32>],
    reference: &[Vec<u32>],
    exclude: &[u32],
    options: &DeriveOptions,
) -> TokenClass {
    // Stop and special tokens count on neither side.
    let count = |seqs: &[Vec<u32>]| -> (BTreeMap<u32, usize>, usize) {
        let mut counts = BTreeMap::new();
        let mut total = 0;
        for &id in seqs.iter().flatten().filter(|id| !exclude.contains(id)) {
            *counts.entry(id).or_insert(0) += 1;
            total += 1;
        }
        (counts, total)
    };
    let (resp, resp_total) = count(responses);
    let (refc, ref_total) = count(reference);
    let ids: Vec<u32> = resp
        .iter()
        .filter(|(id, &n)| {
            if n < options.min_count {
                return false;
            }
            let share = n as f64 / resp_total.max(1) as f64;
            let reference_share =
                (refc.get(id).copied().unwrap_or(0) + 1) as f64 / (ref_total + 1) as f64;
            share >= options.min_ratio * reference_share
        })
        .map(|(&id, _)| id)
        .collect();
    TokenClass {
        name: "answer".into(),
        origin: format!(
            "derived: {} token(s) at least {}× more frequent in the training responses than in \
             the prompts and held-out text, seen at least {} times",
            ids.len(),
            options.min_ratio,
            options.min_count
        ),
        ids,
    }
}

/// The answer class of training `data`: its labelled tokens against its prompts' tokens and the
/// `heldout` prompts' (stop and special tokens never join).
pub fn answer_class_of_data(
    data: &crate::data::TokenizedData,
    heldout: &[&[u32]],
    tok: &crate::model::ModelTokenizer,
    options: &DeriveOptions,
) -> TokenClass {
    let mut responses = Vec::with_capacity(data.examples.len());
    let mut reference = Vec::with_capacity(data.examples.len() + heldout.len());
    for ex in &data.examples {
        let (answer, prompt): (Vec<_>, Vec<_>) = ex
            .input_ids
            .iter()
            .zip(&ex.labels)
            .partition(|(_, &l)| l != crate::data::IGNORE_INDEX);
        responses.push(answer.into_iter().map(|(&t, _)| t).collect());
        reference.push(prompt.into_iter().map(|(&t, _)| t).collect());
    }
    reference.extend(heldout.iter().map(|ids| ids.to_vec()));
    let mut exclude: Vec<u32> = tok.stop_ids.clone();
    exclude.extend(tok.tokenizer.get_added_tokens_decoder().keys().copied());
    derive_answer_class(&responses, &reference, &exclude, options)
}

/// A class named in a recipe: `tokens` (texts of vocabulary entries, space markers ignored)
/// or a `regex` matched against each entry's text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// The text of a vocabulary entry without byte-level or sentencepiece space markers.
fn bare(token: &str) -> &str {
    token.trim_start_matches(['Ġ', '▁', ' ']).trim_end()
}

impl ClassSpec {
    /// The class's ids in `tokenizer`'s vocabulary; a class that matches nothing is an error.
    pub fn resolve(&self, tokenizer: &Tokenizer) -> Result<TokenClass> {
        let regex = match &self.regex {
            Some(r) => Some(
                regex::Regex::new(r)
                    .with_context(|| format!("probe class `{}`: invalid regex {r:?}", self.name))?,
            ),
            None => None,
        };
        if regex.is_none() && self.tokens.is_empty() {
            bail!(
                "probe class `{}` names no `tokens` and no `regex`; give one of them",
                self.name
            );
        }
        let wanted: BTreeSet<&str> = self.tokens.iter().map(|t| t.trim()).collect();
        let mut ids: Vec<u32> = tokenizer
            .get_vocab(true)
            .into_iter()
            .filter(|(text, _)| {
                let b = bare(text);
                !b.is_empty()
                    && (wanted.contains(b) || regex.as_ref().is_some_and(|r| r.is_match(b)))
            })
            .map(|(_, id)| id)
            .collect();
        ids.sort_unstable();
        if ids.is_empty() {
            bail!(
                "probe class `{}` matches no token of the vocabulary; check its tokens or regex",
                self.name
            );
        }
        Ok(TokenClass {
            name: self.name.clone(),
            origin: match &self.regex {
                Some(r) => format!("recipe: regex {r:?} ({} tokens)", ids.len()),
                None => format!("recipe: tokens {:?} ({} ids)", self.tokens, ids.len()),
            },
            ids,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_class_is_what_responses_use_and_prompts_do_not() {
        // Responses say 7 (3 times) or 8 (twice) and end with 99 (excluded); prompts use 1..6,
        // and 8 once.
        let responses = vec![
            vec![7, 99],
            vec![8, 99],
            vec![7, 99],
            vec![8, 99],
            vec![7, 99],
        ];
        let mut reference = vec![vec![1, 2, 3, 4, 5, 6]; 10];
        reference.push(vec![8]);
        let strict = DeriveOptions {
            min_ratio: 3.0,
            min_count: 3,
        };
        let class = derive_answer_class(&responses, &reference, &[99], &strict);
        assert_eq!(class.ids, vec![7]);
        let loose = DeriveOptions {
            min_ratio: 2.0,
            min_count: 2,
        };
        let class = derive_answer_class(&responses, &reference, &[99], &loose);
        assert_eq!(class.ids, vec![7, 8]);
    }
}
