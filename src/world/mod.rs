//! A synthetic multi-skill world, generated deterministically from a seed: the data for the
//! shipped evaluation assets (`assets/`) and, later, for pretraining a small demo model.
//!
//! Six skills produce chat-style prompt/response pairs over a small vocabulary (a few hundred
//! lowercase words, the digits and `? . , : )`, every token separated by spaces):
//! **counting** (the narrow target skill, digit answers) and five held-out skills whose answers
//! are never numbers: **attributes** of invented objects, **category** (multiple choice),
//! **antonyms**, **copy** and **reverse**. The seed decides the invented objects' names and
//! attributes; the word lists and templates are fixed (`lexicon`).
//!
//! Five narrow **target** skills serve sequences of fine-tuning stages (the study's five-stage
//! experiment), each over the same vocabulary so the demo model's tokenizer covers them:
//! **classify** (lettered multiple choice, like CUB-200), **counting** (PixMo-Count), **verify**
//! (yes/no and short answers, PathVQA), **lookup** (reading a word off a text, TextVQA) and
//! **clock** (a time read off two hands, clock reading). Only counting is in the pretraining
//! mixture; the other four are new to the demo model.
//!
//! Splits never share a prompt. Counting, category, copy and reverse items are assigned to
//! train or test by a stable hash of their content (30% test). Attribute and antonym facts must
//! be seen in training to be answerable, so those split by *phrasing*: each fact has five
//! phrasings, two of which (chosen per fact by hash) only ever appear in the test split.

mod antonyms;
mod assets;
mod attributes;
mod category;
mod classify;
mod clock;
mod counting;
pub mod lexicon;
mod lookup;
mod names;
mod sampling;
mod sequence;
pub mod shapes;
pub mod split;
mod target_assets;
#[cfg(test)]
mod target_tests;
#[cfg(test)]
mod tests;
mod verify;

use std::collections::BTreeSet;
use std::fmt;

use crate::util::rng::SeededRng;

pub use assets::{write_assets, AssetFile, AssetSummary};
pub use category::Form as ChoiceForm;
pub use clock::reading as clock_reading;

/// Number of invented objects in a world.
pub const OBJECTS: usize = 40;

/// A skill of the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Skill {
    Counting,
    Attributes,
    Category,
    Antonyms,
    Copy,
    Reverse,
    Classify,
    Verify,
    Lookup,
    Clock,
}

impl Skill {
    /// The six skills of the pretraining mixture, target first.
    pub const ALL: [Skill; 6] = [
        Skill::Counting,
        Skill::Attributes,
        Skill::Category,
        Skill::Antonyms,
        Skill::Copy,
        Skill::Reverse,
    ];

    /// The held-out skills (all but counting); their answers are never numbers.
    pub const HELD_OUT: [Skill; 5] = [
        Skill::Attributes,
        Skill::Category,
        Skill::Antonyms,
        Skill::Copy,
        Skill::Reverse,
    ];

    /// The five narrow target skills of a sequence, in the study's order (CUB-200, PixMo-Count,
    /// PathVQA, TextVQA, clock reading).
    pub const TARGETS: [Skill; 5] = [
        Skill::Classify,
        Skill::Counting,
        Skill::Verify,
        Skill::Lookup,
        Skill::Clock,
    ];

    /// The skill's name: "counting", "attributes", "category", "antonyms", "copy", "reverse",
    /// "classify", "verify", "lookup", "clock".
    pub fn as_str(self) -> &'static str {
        match self {
            Skill::Counting => "counting",
            Skill::Attributes => "attributes",
            Skill::Category => "category",
            Skill::Antonyms => "antonyms",
            Skill::Copy => "copy",
            Skill::Reverse => "reverse",
            Skill::Classify => "classify",
            Skill::Verify => "verify",
            Skill::Lookup => "lookup",
            Skill::Clock => "clock",
        }
    }

    /// The skill named `name`, if any.
    pub fn from_name(name: &str) -> Option<Skill> {
        Skill::ALL
            .into_iter()
            .chain(Skill::TARGETS)
            .find(|s| s.as_str() == name)
    }
}

impl fmt::Display for Skill {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which side of a skill's train/test split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Split {
    Train,
    Test,
}

impl Split {
    /// "train" or "test".
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

/// One chat-style item: a prompt and the expected response. Multiple-choice items (category)
/// also carry their choice words and the index of the correct one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub skill: Skill,
    pub prompt: String,
    pub response: String,
    pub choices: Option<Vec<String>>,
    pub answer_index: Option<usize>,
}

impl Example {
    /// A free-answer example (no choices).
    fn answer(skill: Skill, prompt: String, response: String) -> Self {
        Self {
            skill,
            prompt,
            response,
            choices: None,
            answer_index: None,
        }
    }
}

/// An invented object and its seeded attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub name: String,
    pub colour: &'static str,
    pub shape: &'static str,
    pub size: &'static str,
}

/// The seeded facts of a world: its invented objects and their attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct World {
    seed: u64,
    objects: Vec<Object>,
}

impl World {
    /// The world of `seed`: `OBJECTS` invented objects with random colour, shape and size.
    pub fn new(seed: u64) -> Self {
        let mut rng = SeededRng::new(split::derive_seed(seed, "world"));
        let fixed = fixed_words();
        let names = names::invent(&mut rng, OBJECTS, &fixed);
        let mut objects = Vec::with_capacity(OBJECTS);
        for name in names {
            let colour = *sampling::pick(&mut rng, lexicon::COLOURS);
            let shape = *sampling::pick(&mut rng, lexicon::SHAPES);
            let size = *sampling::pick(&mut rng, lexicon::SIZES);
            objects.push(Object {
                name,
                colour,
                shape,
                size,
            });
        }
        Self { seed, objects }
    }

    /// The seed the world was made from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The invented objects, in generation order.
    pub fn objects(&self) -> &[Object] {
        &self.objects
    }

    /// `n` examples of `skill` from `split`, drawn with the sampling seed `seed`. Prompts are
    /// distinct while the split has enough of them; small pools (attributes, antonyms) repeat
    /// only after every prompt has been used once.
    pub fn examples(&self, skill: Skill, split: Split, n: usize, seed: u64) -> Vec<Example> {
        let mut rng = self.sampler(skill.as_str(), split, seed);
        sampling::collect_distinct(n, &mut rng, |rng| match skill {
            Skill::Counting => counting::draw(rng, split),
            Skill::Attributes => attributes::draw(self, rng, split),
            Skill::Category => category::draw(rng, split, None),
            Skill::Antonyms => antonyms::draw(rng, split),
            Skill::Copy => sequence::draw(rng, split, false),
            Skill::Reverse => sequence::draw(rng, split, true),
            Skill::Classify => classify::draw(rng, split),
            Skill::Verify => verify::draw(self, rng, split),
            Skill::Lookup => lookup::draw(rng, split),
            Skill::Clock => clock::draw(rng, split),
        })
    }

    /// Like `examples(Skill::Category, ..)` but every question in one `form`.
    pub fn category_examples(
        &self,
        split: Split,
        n: usize,
        seed: u64,
        form: ChoiceForm,
    ) -> Vec<Example> {
        let name = match form {
            ChoiceForm::Lettered => "category-lettered",
            ChoiceForm::Plain => "category-plain",
        };
        let mut rng = self.sampler(name, split, seed);
        sampling::collect_distinct(n, &mut rng, |rng| category::draw(rng, split, Some(form)))
    }

    /// Every word (whitespace-separated token) the world can produce, sorted and deduplicated:
    /// fixed words, template words, invented names, digits and punctuation.
    pub fn vocabulary(&self) -> Vec<String> {
        let mut words: BTreeSet<&str> = fixed_words();
        words.extend(self.objects.iter().map(|o| o.name.as_str()));
        words.into_iter().map(str::to_string).collect()
    }

    /// The generator for one stream of examples.
    fn sampler(&self, name: &str, which: Split, seed: u64) -> SeededRng {
        let stream = format!("{name}|{}", which.as_str());
        SeededRng::new(split::derive_seed(seed, &stream))
    }
}

/// Every template of every skill (placeholders are `{name}` tokens).
fn templates() -> Vec<&'static str> {
    let mut all: Vec<&'static str> = Vec::new();
    all.extend(counting::LIST_TEMPLATES);
    all.extend(counting::SHAPE_TEMPLATES);
    all.push(counting::COLOUR_TARGET);
    all.extend(attributes::TEMPLATES);
    all.extend(antonyms::TEMPLATES);
    all.push(category::LETTERED_TEMPLATE);
    all.push(category::PLAIN_TEMPLATE);
    all.extend(sequence::COPY_TEMPLATES);
    all.extend(sequence::REVERSE_TEMPLATES);
    all
}

/// The words that do not depend on the seed: the lexicon and the templates' literal words.
fn fixed_words() -> BTreeSet<&'static str> {
    let mut words: BTreeSet<&'static str> = lexicon::all_words().into_iter().collect();
    for template in templates() {
        words.extend(
            template
                .split_whitespace()
                .filter(|w| !(w.starts_with('{') && w.ends_with('}'))),
        );
    }
    words
}
