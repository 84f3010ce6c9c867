//! The counting skill (the narrow target): "how many apples are in this list : apple pear
//! apple plum ?" → "2", and coloured shapes: "count the red shapes : red circle , blue square ,
//! red star" → "2". Answers are single digits 0–9; items are split by a hash of the prompt.

use crate::util::rng::SeededRng;

use super::lexicon::{COUNT_COLOURS, COUNT_NOUNS, COUNT_SHAPES};
use super::sampling::{pick, shuffle};
use super::split::split_of;
use super::{Example, Skill, Split};

/// Largest count asked for.
pub const MAX_COUNT: usize = 9;

/// Plain-list questions; `{plural}`/`{noun}` name the counted noun, `{items}` is the list.
pub const LIST_TEMPLATES: &[&str] = &[
    "how many {plural} are in this list : {items} ?",
    "count the {plural} : {items}",
    "how many times does {noun} appear : {items} ?",
];

/// Coloured-shape questions; `{target}` is a colour ("red shapes") or a plural shape ("stars").
pub const SHAPE_TEMPLATES: &[&str] = &[
    "count the {target} : {items}",
    "how many {target} are there : {items} ?",
];

/// How a colour is named as the counted thing in coloured-shape questions.
pub const COLOUR_TARGET: &str = "{colour} shapes";

/// One counting example of `split` (candidates of the other split are redrawn).
pub fn draw(rng: &mut SeededRng, split: Split) -> Example {
    loop {
        let (prompt, count) = if rng.below(2) == 0 {
            list_question(rng)
        } else {
            shape_question(rng)
        };
        if split_of(&format!("counting|{prompt}")) == split {
            return Example::answer(Skill::Counting, prompt, count.to_string());
        }
    }
}

/// `len` slots of which `count` hold `target` and the rest a draw from `others`, shuffled.
fn fill<T: Copy>(rng: &mut SeededRng, len: usize, count: usize, target: T, others: &[T]) -> Vec<T> {
    let mut slots: Vec<T> = (0..len)
        .map(|i| {
            if i < count {
                target
            } else {
                *pick(rng, others)
            }
        })
        .collect();
    shuffle(rng, &mut slots);
    slots
}

/// "how many apples are in this list : …" with 3–12 nouns.
fn list_question(rng: &mut SeededRng) -> (String, usize) {
    let count = rng.below(MAX_COUNT + 1);
    let len = count.max(3) + rng.below(12 - count.max(3) + 1);
    let target = rng.below(COUNT_NOUNS.len());
    let others: Vec<usize> = (0..COUNT_NOUNS.len()).filter(|&i| i != target).collect();
    let items: Vec<&str> = fill(rng, len, count, target, &others)
        .into_iter()
        .map(|i| COUNT_NOUNS[i].0)
        .collect();
    let (noun, plural) = COUNT_NOUNS[target];
    let prompt = pick(rng, LIST_TEMPLATES)
        .replace("{plural}", plural)
        .replace("{noun}", noun)
        .replace("{items}", &items.join(" "));
    (prompt, count)
}

/// "count the red shapes : red circle , blue square , …" (or "count the stars : …"), 3–9 items.
fn shape_question(rng: &mut SeededRng) -> (String, usize) {
    let count = rng.below(MAX_COUNT + 1);
    let len = count.max(3) + rng.below(MAX_COUNT - count.max(3) + 1);
    let by_colour = rng.below(2) == 0;
    let (target, options) = if by_colour {
        (rng.below(COUNT_COLOURS.len()), COUNT_COLOURS.len())
    } else {
        (rng.below(COUNT_SHAPES.len()), COUNT_SHAPES.len())
    };
    let others: Vec<usize> = (0..options).filter(|&i| i != target).collect();
    let counted = fill(rng, len, count, target, &others);
    let items: Vec<String> = counted
        .into_iter()
        .map(|i| {
            let (colour, shape) = if by_colour {
                (i, rng.below(COUNT_SHAPES.len()))
            } else {
                (rng.below(COUNT_COLOURS.len()), i)
            };
            format!("{} {}", COUNT_COLOURS[colour], COUNT_SHAPES[shape].0)
        })
        .collect();
    let target = if by_colour {
        COLOUR_TARGET.replace("{colour}", COUNT_COLOURS[target])
    } else {
        COUNT_SHAPES[target].1.to_string()
    };
    let prompt = pick(rng, SHAPE_TEMPLATES)
        .replace("{target}", &target)
        .replace("{items}", &items.join(" , "));
    (prompt, count)
}
