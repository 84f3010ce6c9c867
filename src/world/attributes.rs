//! The attributes skill (held out): invented objects with seeded colour, shape and size;
//! "what colour is the dax ?" → "red". Every fact is asked in five phrasings: two (chosen by a
//! hash of the fact) are test-only, the other three train-only, so each fact and each phrasing
//! is seen in training while no test prompt is.

use crate::util::rng::SeededRng;

use super::lexicon::ATTRIBUTE_KINDS;
use super::sampling::pick;
use super::split::{phrasings_for, PHRASINGS};
use super::{Example, Skill, Split, World};

/// The phrasings; `{attr}` is "colour", "shape" or "size", `{obj}` the object's name.
pub const TEMPLATES: [&str; PHRASINGS] = [
    "what {attr} is the {obj} ?",
    "the {obj} has which {attr} ?",
    "tell me the {attr} of the {obj} .",
    "which {attr} is the {obj} ?",
    "what is the {attr} of the {obj} ?",
];

/// One attribute question of `split` about a random object and attribute.
pub fn draw(world: &World, rng: &mut SeededRng, split: Split) -> Example {
    let object = pick(rng, world.objects());
    let kind = rng.below(ATTRIBUTE_KINDS.len());
    let attr = ATTRIBUTE_KINDS[kind];
    let phrasings = phrasings_for(&format!("attributes|{}|{attr}", object.name), split);
    let template = TEMPLATES[*pick(rng, &phrasings)];
    let prompt = template
        .replace("{attr}", attr)
        .replace("{obj}", &object.name);
    let value = match kind {
        0 => object.colour,
        1 => object.shape,
        _ => object.size,
    };
    Example::answer(Skill::Attributes, prompt, value.to_string())
}
