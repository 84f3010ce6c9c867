//! Invented object names: two-syllable pronounceable nonsense words ("dafex", "mupok"), drawn
//! from the seed, distinct from each other and from every word in the lexicon.

use std::collections::BTreeSet;

use crate::util::rng::SeededRng;

use super::sampling::pick;

const ONSETS: &[&str] = &[
    "b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z", "bl", "dr", "gl",
    "sn", "tr",
];
const VOWELS: &[&str] = &["a", "e", "i", "o", "u"];
const SECOND_ONSETS: &[&str] = &[
    "b", "d", "f", "g", "k", "l", "m", "n", "p", "s", "t", "v", "z",
];
const CODAS: &[&str] = &["", "x", "k", "p", "b", "g", "sh"];

/// `count` distinct nonsense names (consonant-vowel, consonant-vowel-coda), in draw order,
/// none of them in `taken` (the world's fixed words).
pub fn invent(rng: &mut SeededRng, count: usize, taken: &BTreeSet<&str>) -> Vec<String> {
    let mut names: Vec<String> = Vec::with_capacity(count);
    while names.len() < count {
        let name = format!(
            "{}{}{}{}{}",
            pick(rng, ONSETS),
            pick(rng, VOWELS),
            pick(rng, SECOND_ONSETS),
            pick(rng, VOWELS),
            pick(rng, CODAS)
        );
        if !taken.contains(name.as_str()) && !names.contains(&name) {
            names.push(name);
        }
    }
    names
}
