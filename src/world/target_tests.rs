//! Tests of the narrow target skills: every answer recomputed from its prompt, splits disjoint,
//! every word in the world's vocabulary, and samples checked by hand.

use std::collections::BTreeSet;

use super::lexicon::{category_of, CATEGORIES, LETTERS};
use super::*;

/// The answer of a classify, verify, lookup or clock prompt, worked out from the prompt alone
/// (and the world's facts for verify's attribute questions).
fn solve(world: &World, skill: Skill, prompt: &str) -> String {
    let words: Vec<&str> = prompt.split(' ').collect();
    match skill {
        Skill::Classify => {
            // "what is W ? a ) a fruit b ) ..."
            let own = category_of(words[2]).unwrap().phrase;
            let options = prompt.split(" ? ").nth(1).unwrap();
            // "a ) a tool b ) a fruit c ) …": each chunk but the last ends in the next letter.
            let chunks: Vec<&str> = options.split(" ) ").skip(1).collect();
            let phrases: Vec<&str> = chunks
                .iter()
                .enumerate()
                .map(|(i, chunk)| match chunk.rsplit_once(' ') {
                    Some((phrase, _)) if i + 1 < chunks.len() => phrase,
                    _ => chunk,
                })
                .collect();
            let at = phrases.iter().position(|p| *p == own).unwrap();
            LETTERS[at].to_string()
        }
        Skill::Verify => {
            let prompt = ["tell me : ", "say : "]
                .iter()
                .find_map(|p| prompt.strip_prefix(p))
                .unwrap_or(prompt);
            if let Some(word) = prompt.strip_suffix(" is what ?") {
                return category_of(word).unwrap().phrase.to_string();
            }
            let body = prompt
                .strip_prefix("is ")
                .unwrap()
                .strip_suffix(" ?")
                .unwrap();
            let truth = if let Some(rest) = body.strip_prefix("the ") {
                let (name, value) = rest.split_once(' ').unwrap();
                let o = world.objects().iter().find(|o| o.name == name).unwrap();
                let value = value.trim_start_matches("an ").trim_start_matches("a ");
                [o.colour, o.shape, o.size].contains(&value)
            } else {
                let (word, phrase) = body.split_once(' ').unwrap();
                category_of(word).unwrap().phrase == phrase
            };
            if truth { "yes" } else { "no" }.to_string()
        }
        Skill::Lookup => {
            let (question, list) = prompt.split_once(" : ").unwrap();
            let list: Vec<&str> = list.strip_suffix(" ?").unwrap().split(' ').collect();
            let q: Vec<&str> = question.split(' ').collect();
            let at = |w: &str| list.iter().position(|x| *x == w).unwrap();
            // "what word is after W", "what word is before W", "what is the first/last word".
            match (q[3], q[q.len() - 1]) {
                ("after", w) => list[at(w) + 1].to_string(),
                ("before", w) => list[at(w) - 1].to_string(),
                ("first", _) => list[0].to_string(),
                ("last", _) => list[list.len() - 1].to_string(),
                other => unreachable!("{other:?}"),
            }
        }
        Skill::Clock => {
            // The number after "short hand [is]" and after "long hand [is]", digit by digit.
            let number_after = |hand: &str| -> usize {
                let start = words.windows(2).position(|w| w == [hand, "hand"]).unwrap() + 2;
                words[start..]
                    .iter()
                    .skip_while(|w| **w == "is")
                    .take_while(|w| w.chars().all(|c| c.is_ascii_digit()))
                    .fold(0, |n, d| n * 10 + d.parse::<usize>().unwrap())
            };
            let (hour, hand) = (number_after("short"), number_after("long"));
            let minutes = hand * 5 % 60;
            let hour = hour
                .to_string()
                .chars()
                .map(String::from)
                .collect::<Vec<_>>();
            format!("{} : {} {}", hour.join(" "), minutes / 10, minutes % 10)
        }
        _ => unreachable!("not a new target skill"),
    }
}

const NEW: [Skill; 4] = [Skill::Classify, Skill::Verify, Skill::Lookup, Skill::Clock];

#[test]
fn answers_follow_from_the_prompts() {
    for seed in [0, 5] {
        let world = World::new(seed);
        for skill in NEW {
            for split in [Split::Train, Split::Test] {
                for e in world.examples(skill, split, 150, 3) {
                    assert_eq!(e.response, solve(&world, skill, &e.prompt), "{e:?}");
                }
            }
        }
    }
}

#[test]
fn target_splits_never_share_a_prompt_and_every_word_is_known() {
    let world = World::new(0);
    let vocab: BTreeSet<String> = world.vocabulary().into_iter().collect();
    for skill in NEW {
        let train: BTreeSet<String> = world
            .examples(skill, Split::Train, 400, 1)
            .into_iter()
            .map(|e| e.prompt)
            .collect();
        let test = world.examples(skill, Split::Test, 150, 2);
        for e in &test {
            assert!(!train.contains(&e.prompt), "{skill}: {}", e.prompt);
            for word in e.prompt.split(' ').chain(e.response.split(' ')) {
                assert!(vocab.contains(word), "{skill}: {word:?} in {e:?}");
            }
        }
        assert!(train.len() >= 390, "{skill}: {} distinct", train.len());
    }
    assert_eq!(Skill::TARGETS.len(), 5);
    for skill in Skill::TARGETS {
        assert_eq!(Skill::from_name(skill.as_str()), Some(skill));
    }
}

#[test]
fn clock_readings_by_hand() {
    assert_eq!(clock_reading(4, 6), "4 : 3 0");
    assert_eq!(clock_reading(12, 12), "1 2 : 0 0");
    assert_eq!(clock_reading(1, 1), "1 : 0 5");
    assert_eq!(clock_reading(9, 11), "9 : 5 5");
}

#[test]
fn verify_answers_are_balanced_and_classify_letters_spread() {
    let world = World::new(0);
    let verify = world.examples(Skill::Verify, Split::Train, 400, 4);
    let yes = verify.iter().filter(|e| e.response == "yes").count();
    let no = verify.iter().filter(|e| e.response == "no").count();
    let short = verify.len() - yes - no;
    assert!(
        (90..=180).contains(&yes) && (90..=180).contains(&no),
        "{yes} {no}"
    );
    assert!((90..=180).contains(&short), "{short}");
    let classify = world.examples(Skill::Classify, Split::Train, 400, 4);
    for letter in LETTERS {
        let n = classify.iter().filter(|e| e.response == *letter).count();
        assert!((60..=140).contains(&n), "{letter}: {n}");
    }
    assert_eq!(CATEGORIES.len(), 8);
}
