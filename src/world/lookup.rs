//! The lookup skill (narrow target, like the study's TextVQA: read a word off a text): "what
//! word is after sun : cat sun tree moon ?" → "tree", the word before one, or the first or last
//! word of 4–6 distinct nouns. A question (its kind, asked word and sequence) belongs to one
//! split, by hash.

use crate::util::rng::SeededRng;

use super::lexicon::SEQUENCE_NOUNS;
use super::sampling::distinct_indices;
use super::split::split_of;
use super::{Example, Skill, Split};

/// The questions; `{word}` is the asked word, `{words}` the sequence.
pub const TEMPLATES: [&str; 4] = [
    "what word is after {word} : {words} ?",
    "what word is before {word} : {words} ?",
    "what is the first word : {words} ?",
    "what is the last word : {words} ?",
];

/// One lookup question of `split`.
pub fn draw(rng: &mut SeededRng, split: Split) -> Example {
    loop {
        let len = 4 + rng.below(3);
        let words: Vec<&str> = distinct_indices(rng, SEQUENCE_NOUNS.len(), len)
            .into_iter()
            .map(|i| SEQUENCE_NOUNS[i])
            .collect();
        let kind = rng.below(TEMPLATES.len());
        let (asked, answer) = match kind {
            0 => {
                let i = rng.below(len - 1);
                (words[i], words[i + 1])
            }
            1 => {
                let i = 1 + rng.below(len - 1);
                (words[i], words[i - 1])
            }
            2 => ("", words[0]),
            _ => ("", words[len - 1]),
        };
        let prompt = TEMPLATES[kind]
            .replace("{word}", asked)
            .replace("{words}", &words.join(" "));
        if split_of(&format!("lookup|{prompt}")) == split {
            return Example::answer(Skill::Lookup, prompt, answer.to_string());
        }
    }
}
