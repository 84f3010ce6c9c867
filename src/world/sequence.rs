//! The copy and reverse skills (held out): "repeat : cat sun tree" → "cat sun tree" and
//! "reverse : cat sun tree" → "tree sun cat", 3–5 distinct nouns. A word sequence belongs to
//! one split (by hash), for both skills and every phrasing.

use crate::util::rng::SeededRng;

use super::lexicon::SEQUENCE_NOUNS;
use super::sampling::{distinct_indices, pick};
use super::split::split_of;
use super::{Example, Skill, Split};

/// Copy phrasings; `{words}` is the sequence.
pub const COPY_TEMPLATES: &[&str] = &[
    "repeat : {words}",
    "repeat these words : {words}",
    "copy : {words}",
];

/// Reverse phrasings.
pub const REVERSE_TEMPLATES: &[&str] = &[
    "reverse : {words}",
    "reverse these words : {words}",
    "say these words backwards : {words}",
];

/// One copy (`reverse == false`) or reverse example of `split`.
pub fn draw(rng: &mut SeededRng, split: Split, reverse: bool) -> Example {
    let words = loop {
        let len = 3 + rng.below(3);
        let words: Vec<&str> = distinct_indices(rng, SEQUENCE_NOUNS.len(), len)
            .into_iter()
            .map(|i| SEQUENCE_NOUNS[i])
            .collect();
        if split_of(&format!("sequence|{}", words.join(" "))) == split {
            break words;
        }
    };
    let (skill, templates) = if reverse {
        (Skill::Reverse, REVERSE_TEMPLATES)
    } else {
        (Skill::Copy, COPY_TEMPLATES)
    };
    let prompt = pick(rng, templates).replace("{words}", &words.join(" "));
    let mut answer = words;
    if reverse {
        answer.reverse();
    }
    Example::answer(skill, prompt, answer.join(" "))
}
