//! The clock skill (narrow target, like the study's clock reading: a structured value read off
//! two hands): "short hand 4 , long hand 6 : what is this ?" → "4 : 3 0". The short hand points
//! at the hour (1–12), the long hand at a number k (1–12) meaning 5·k minutes (12 → "0 0").
//! Numbers are written digit by digit ("1 2"), as the world's vocabulary has single digits
//! only. A reading (hour and long hand) belongs to one split, by hash, in every phrasing.

use crate::util::rng::SeededRng;

use super::sampling::pick;
use super::split::split_of;
use super::{Example, Skill, Split};

/// The phrasings; `{h}` is the short hand's number, `{m}` the long hand's.
pub const TEMPLATES: [&str; 4] = [
    "short hand {h} , long hand {m} : what is this ?",
    "long hand {m} , short hand {h} : what is this ?",
    "the short hand is {h} , the long hand is {m} . what is this ?",
    "the long hand is {m} , the short hand is {h} . what is this ?",
];

/// A number written digit by digit: 12 → "1 2".
pub fn digits(n: usize) -> String {
    n.to_string()
        .chars()
        .map(String::from)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The reading of hour `hour` and long hand `hand` (both 1–12): "4 : 3 0".
pub fn reading(hour: usize, hand: usize) -> String {
    let minutes = (5 * hand) % 60;
    format!("{} : {} {}", digits(hour), minutes / 10, minutes % 10)
}

/// One clock question of `split`.
pub fn draw(rng: &mut SeededRng, split: Split) -> Example {
    loop {
        let hour = 1 + rng.below(12);
        let hand = 1 + rng.below(12);
        let template = *pick(rng, &TEMPLATES);
        if split_of(&format!("clock|{hour}|{hand}")) != split {
            continue;
        }
        let prompt = template
            .replace("{h}", &digits(hour))
            .replace("{m}", &digits(hand));
        return Example::answer(Skill::Clock, prompt, reading(hour, hand));
    }
}
