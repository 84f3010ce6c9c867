//! The classify skill (narrow target, like the study's CUB-200: a lettered multiple choice):
//! "what is cherry ? a ) a tool b ) a fruit c ) a vehicle d ) a colour" → "b". One member word
//! of a category and four category phrases, one of them its own. A question (word plus its set
//! of offered categories) belongs to one split, by hash.

use crate::util::rng::SeededRng;

use super::lexicon::{CATEGORIES, LETTERS};
use super::sampling::{distinct_indices, pick};
use super::split::split_of;
use super::{Example, Skill, Split};

/// The question; `{word}` is the member, `{options}` "a ) a tool b ) a fruit …".
pub const TEMPLATE: &str = "what is {word} ? {options}";

/// One classify question of `split`.
pub fn draw(rng: &mut SeededRng, split: Split) -> Example {
    loop {
        let own = rng.below(CATEGORIES.len());
        let word = *pick(rng, CATEGORIES[own].words);
        let others: Vec<usize> = (0..CATEGORIES.len()).filter(|&i| i != own).collect();
        let mut offered: Vec<usize> = distinct_indices(rng, others.len(), LETTERS.len() - 1)
            .into_iter()
            .map(|i| others[i])
            .collect();
        let answer = rng.below(LETTERS.len());
        offered.insert(answer, own);
        let mut sorted = offered.clone();
        sorted.sort_unstable();
        let key = format!("classify|{word}|{sorted:?}");
        if split_of(&key) != split {
            continue;
        }
        let options: Vec<String> = LETTERS
            .iter()
            .zip(&offered)
            .map(|(letter, &c)| format!("{letter} ) {}", CATEGORIES[c].phrase))
            .collect();
        let prompt = TEMPLATE
            .replace("{word}", word)
            .replace("{options}", &options.join(" "));
        return Example::answer(Skill::Classify, prompt, LETTERS[answer].to_string());
    }
}
