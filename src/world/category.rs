//! The category skill (held out, multiple choice): one member of a category among three words
//! from other categories. Two forms: lettered, "which of these is a fruit ? a ) hammer b ) apple
//! c ) cloud d ) shoe" → "b", and plain, "which of these is a fruit : hammer , apple , cloud ,
//! shoe ?" → "apple" (the form the multiple-choice task scores, one choice word at a time). A
//! question (category plus its set of choices, in any order) belongs to one split, by hash.

use crate::util::rng::SeededRng;

use super::lexicon::{Category, CATEGORIES, LETTERS};
use super::sampling::{distinct_indices, pick};
use super::split::split_of;
use super::{Example, Skill, Split};

/// Number of choices per question.
pub const CHOICES: usize = 4;

/// The lettered form; `{options}` is "a ) w1 b ) w2 c ) w3 d ) w4", the answer a letter.
pub const LETTERED_TEMPLATE: &str = "which of these is {phrase} ? {options}";

/// The plain form; `{options}` is "w1 , w2 , w3 , w4", the answer the word.
pub const PLAIN_TEMPLATE: &str = "which of these is {phrase} : {options} ?";

/// How the question is put and answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// Choices listed with letters; the response is the letter.
    Lettered,
    /// Choices listed as bare words; the response is the word.
    Plain,
}

/// One category question of `split`, in `form` (or either form, at random, when `None`).
pub fn draw(rng: &mut SeededRng, split: Split, form: Option<Form>) -> Example {
    let form = form.unwrap_or(if rng.below(2) == 0 {
        Form::Lettered
    } else {
        Form::Plain
    });
    loop {
        let category = pick(rng, CATEGORIES);
        let (choices, answer) = choices_for(rng, category);
        let mut sorted = choices.clone();
        sorted.sort_unstable();
        let key = format!("category|{}|{}", category.name, sorted.join(" "));
        if split_of(&key) != split {
            continue;
        }
        let (options, response) = match form {
            Form::Lettered => {
                let options: Vec<String> = LETTERS
                    .iter()
                    .zip(&choices)
                    .map(|(letter, word)| format!("{letter} ) {word}"))
                    .collect();
                (options.join(" "), LETTERS[answer].to_string())
            }
            Form::Plain => (choices.join(" , "), choices[answer].to_string()),
        };
        let template = match form {
            Form::Lettered => LETTERED_TEMPLATE,
            Form::Plain => PLAIN_TEMPLATE,
        };
        let prompt = template
            .replace("{phrase}", category.phrase)
            .replace("{options}", &options);
        return Example {
            skill: Skill::Category,
            prompt,
            response,
            choices: Some(choices.iter().map(|w| w.to_string()).collect()),
            answer_index: Some(answer),
        };
    }
}

/// A member of `category` and `CHOICES - 1` words from other categories, shuffled; returns the
/// choices and the member's index.
fn choices_for(rng: &mut SeededRng, category: &Category) -> (Vec<&'static str>, usize) {
    let member = *pick(rng, category.words);
    let others: Vec<&'static str> = CATEGORIES
        .iter()
        .filter(|c| c.name != category.name)
        .flat_map(|c| c.words.iter().copied())
        .collect();
    let mut choices: Vec<&'static str> = distinct_indices(rng, others.len(), CHOICES - 1)
        .into_iter()
        .map(|i| others[i])
        .collect();
    let answer = rng.below(CHOICES);
    choices.insert(answer, member);
    (choices, answer)
}
