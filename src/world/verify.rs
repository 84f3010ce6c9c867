//! The verify skill (narrow target, like the study's PathVQA: yes/no questions and short
//! answers): "is cherry a fruit ?" → "yes", "is the dax red ?" → "no" (an invented object's
//! seeded colour, shape or size), and "cherry is what ?" → "a fruit", each bare or after
//! "tell me :" or "say :". Half of the yes/no questions are true. A question belongs to one
//! split, by a hash of its prompt.

use crate::util::rng::SeededRng;

use super::lexicon::{CATEGORIES, COLOURS, SHAPES, SIZES};
use super::sampling::pick;
use super::split::split_of;
use super::{Example, Skill, Split, World};

/// Category membership, yes or no; `{phrase}` is "a fruit", "a piece of clothing", ….
pub const MEMBER_TEMPLATE: &str = "is {word} {phrase} ?";
/// An invented object's attribute, yes or no; `{value}` is "red", "a star", "an oval", "big".
pub const ATTRIBUTE_TEMPLATE: &str = "is the {obj} {value} ?";
/// The short answer: the category phrase of a word.
pub const SHORT_TEMPLATE: &str = "{word} is what ?";
/// Each question is asked bare or after one of these (so every kind of answer has a large pool
/// of distinct prompts and the answers stay balanced).
pub const PREFIXES: [&str; 3] = ["", "tell me : ", "say : "];

/// One verify question of `split`.
pub fn draw(world: &World, rng: &mut SeededRng, split: Split) -> Example {
    loop {
        let (prompt, response) = match rng.below(3) {
            0 => member(rng),
            1 => attribute(world, rng),
            _ => {
                let category = pick(rng, CATEGORIES);
                let word = *pick(rng, category.words);
                (
                    SHORT_TEMPLATE.replace("{word}", word),
                    category.phrase.to_string(),
                )
            }
        };
        let prompt = format!("{}{prompt}", pick(rng, &PREFIXES));
        if split_of(&format!("verify|{prompt}")) == split {
            return Example::answer(Skill::Verify, prompt, response);
        }
    }
}

/// "yes" or "no".
fn yes_no(truth: bool) -> String {
    if truth { "yes" } else { "no" }.to_string()
}

/// "is cherry a fruit ?": the word's own category or another one, half each.
fn member(rng: &mut SeededRng) -> (String, String) {
    let own = rng.below(CATEGORIES.len());
    let word = *pick(rng, CATEGORIES[own].words);
    let truth = rng.below(2) == 0;
    let asked = if truth {
        own
    } else {
        (own + 1 + rng.below(CATEGORIES.len() - 1)) % CATEGORIES.len()
    };
    let prompt = MEMBER_TEMPLATE
        .replace("{word}", word)
        .replace("{phrase}", CATEGORIES[asked].phrase);
    (prompt, yes_no(truth))
}

/// "is the dax red ?": the object's own value of one attribute or another value, half each.
fn attribute(world: &World, rng: &mut SeededRng) -> (String, String) {
    let object = pick(rng, world.objects());
    let kind = rng.below(3);
    let (own, values): (&str, &[&str]) = match kind {
        0 => (object.colour, COLOURS),
        1 => (object.shape, SHAPES),
        _ => (object.size, SIZES),
    };
    let truth = rng.below(2) == 0;
    let value = if truth {
        own
    } else {
        let others: Vec<&str> = values.iter().copied().filter(|v| *v != own).collect();
        *pick(rng, &others)
    };
    let value = match kind {
        1 if value.starts_with(['a', 'e', 'i', 'o', 'u']) => format!("an {value}"),
        1 => format!("a {value}"),
        _ => value.to_string(),
    };
    let prompt = ATTRIBUTE_TEMPLATE
        .replace("{obj}", &object.name)
        .replace("{value}", &value);
    (prompt, yes_no(truth))
}
