//! The antonyms skill (held out): "what is the opposite of hot ?" → "cold", both directions of
//! every pair in the fixed table. As for attributes, each directed fact has five phrasings, two
//! of them (by hash) test-only and three train-only.

use crate::util::rng::SeededRng;

use super::lexicon::ANTONYMS;
use super::sampling::pick;
use super::split::{phrasings_for, PHRASINGS};
use super::{Example, Skill, Split};

/// The phrasings; `{word}` is the word whose opposite is asked for.
pub const TEMPLATES: [&str; PHRASINGS] = [
    "what is the opposite of {word} ?",
    "the opposite of {word} is what ?",
    "give the opposite of {word} .",
    "which word is the opposite of {word} ?",
    "{word} is the opposite of what ?",
];

/// One antonym question of `split` about a random word of the table.
pub fn draw(rng: &mut SeededRng, split: Split) -> Example {
    let &(a, b) = pick(rng, ANTONYMS);
    let (word, answer) = if rng.below(2) == 0 { (a, b) } else { (b, a) };
    let phrasings = phrasings_for(&format!("antonyms|{word}"), split);
    let prompt = TEMPLATES[*pick(rng, &phrasings)].replace("{word}", word);
    Example::answer(Skill::Antonyms, prompt, answer.to_string())
}
