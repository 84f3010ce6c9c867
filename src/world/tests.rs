//! Unit tests of the world's building blocks.

use std::collections::BTreeSet;

use super::lexicon::{self, ANTONYMS, CATEGORIES};
use super::split::{fnv1a, phrasings_for, split_of, test_phrasings, PHRASINGS};
use super::*;

#[test]
fn fnv1a_matches_reference_vectors() {
    assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a("foobar"), 0x8594_4171_f739_67e8);
}

#[test]
fn phrasings_partition_into_two_test_and_three_train() {
    for word in ["hot", "cold", "dax|colour", "wug|size", "x"] {
        let test = phrasings_for(word, Split::Test);
        let train = phrasings_for(word, Split::Train);
        assert_eq!(test.len(), 2, "{word}");
        assert_eq!(train.len(), PHRASINGS - 2, "{word}");
        assert!(test.iter().all(|i| !train.contains(i)));
        let pair = test_phrasings(word);
        assert_ne!(pair[0], pair[1]);
    }
}

#[test]
fn hash_split_is_roughly_thirty_percent_test() {
    let test = (0..10_000)
        .filter(|i| split_of(&format!("item {i}")) == Split::Test)
        .count();
    assert!((2_700..3_300).contains(&test), "{test}");
}

#[test]
fn every_phrasing_is_used_for_training_some_fact() {
    let mut used = BTreeSet::new();
    for &(a, b) in ANTONYMS {
        for word in [a, b] {
            used.extend(phrasings_for(&format!("antonyms|{word}"), Split::Train));
        }
    }
    assert_eq!(used.len(), PHRASINGS);
}

#[test]
fn lexicon_words_are_unambiguous() {
    let mut members = BTreeSet::new();
    for category in CATEGORIES {
        assert_eq!(category.words.len(), 8, "{}", category.name);
        for word in category.words {
            assert!(members.insert(*word), "{word} is in two categories");
        }
    }
    let mut antonym_words = BTreeSet::new();
    for &(a, b) in ANTONYMS {
        assert!(antonym_words.insert(a), "{a} is in two antonym pairs");
        assert!(antonym_words.insert(b), "{b} is in two antonym pairs");
        assert_eq!(lexicon::antonym_of(a), Some(b));
        assert_eq!(lexicon::antonym_of(b), Some(a));
    }
    assert!((40..=60).contains(&ANTONYMS.len()));
    for word in lexicon::all_words() {
        assert!(
            word.chars().all(|c| c.is_ascii_lowercase())
                || word.chars().all(|c| c.is_ascii_digit())
                || lexicon::PUNCTUATION.contains(&word),
            "{word:?}"
        );
    }
}

#[test]
fn invented_names_are_new_distinct_two_syllable_words() {
    let world = World::new(3);
    let fixed = fixed_words();
    let names: BTreeSet<&str> = world.objects().iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names.len(), OBJECTS);
    for name in names {
        assert!(!fixed.contains(name), "{name} collides with a fixed word");
        let vowels = name.chars().filter(|c| "aeiou".contains(*c)).count();
        assert_eq!(vowels, 2, "{name}");
        assert!(name.chars().all(|c| c.is_ascii_lowercase()), "{name}");
    }
}

#[test]
fn vocabulary_is_a_few_hundred_words() {
    let vocab = World::new(0).vocabulary();
    assert!((200..=400).contains(&vocab.len()), "{}", vocab.len());
    let mut sorted = vocab.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, vocab);
}

#[test]
fn skill_names_round_trip() {
    for skill in Skill::ALL {
        assert_eq!(Skill::from_name(skill.as_str()), Some(skill));
    }
    assert_eq!(Skill::from_name("nope"), None);
}

#[test]
fn examples_are_distinct_and_of_the_split() {
    let world = World::new(0);
    for skill in Skill::ALL {
        for split in [Split::Train, Split::Test] {
            let examples = world.examples(skill, split, 150, 9);
            assert_eq!(examples.len(), 150);
            let prompts: BTreeSet<&str> = examples.iter().map(|e| e.prompt.as_str()).collect();
            assert_eq!(prompts.len(), 150, "{skill} {split:?}");
            assert!(examples.iter().all(|e| e.skill == skill));
        }
    }
}

#[test]
fn small_pools_cycle_instead_of_stalling() {
    let world = World::new(0);
    // 50 pairs × 2 directions × 2 test phrasings = 200 distinct test prompts.
    let examples = world.examples(Skill::Antonyms, Split::Test, 450, 1);
    let prompts: BTreeSet<&str> = examples.iter().map(|e| e.prompt.as_str()).collect();
    assert_eq!(prompts.len(), 4 * ANTONYMS.len());
}

#[test]
fn category_forms_answer_with_letter_or_word() {
    let world = World::new(0);
    for e in world.category_examples(Split::Train, 50, 2, ChoiceForm::Lettered) {
        let index = e.answer_index.unwrap();
        assert_eq!(e.response, lexicon::LETTERS[index]);
        assert!(e.prompt.contains(" a ) "), "{}", e.prompt);
    }
    for e in world.category_examples(Split::Test, 50, 2, ChoiceForm::Plain) {
        let choices = e.choices.as_ref().unwrap();
        assert_eq!(e.response, choices[e.answer_index.unwrap()]);
        assert!(!e.prompt.contains(')'), "{}", e.prompt);
    }
}
