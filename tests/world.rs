//! The synthetic world: determinism, split hygiene, answer correctness, vocabulary coverage,
//! the asset files' formats, and that the committed `assets/` are exactly what seed 0 renders.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use tunescope::world::lexicon::{self, CATEGORIES, LETTERS};
use tunescope::world::{write_assets, ChoiceForm, Example, Skill, Split, World};

const SPLITS: [Split; 2] = [Split::Train, Split::Test];

fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect()
}

fn str_field<'a>(record: &'a serde_json::Value, key: &str) -> &'a str {
    record[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing in {record}"))
}

/// Every file under `dir`, relative to it, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A sample of every skill and split (plus both category forms).
fn sample(world: &World, n: usize) -> Vec<Example> {
    let mut all = Vec::new();
    for skill in Skill::ALL {
        for split in SPLITS {
            all.extend(world.examples(skill, split, n, 17));
        }
    }
    for split in SPLITS {
        for form in [ChoiceForm::Lettered, ChoiceForm::Plain] {
            all.extend(world.category_examples(split, n, 18, form));
        }
    }
    all
}

/// The count a counting prompt asks for, recomputed from its text: the items follow " : "
/// (space-separated nouns, or comma-separated "colour shape" pairs); the counted thing is the
/// question word that names the most items (as the item word itself or its plural).
fn recount(prompt: &str) -> usize {
    let (head, tail) = prompt.split_once(" : ").expect("counting prompt has ' : '");
    let tail = tail.strip_suffix(" ?").unwrap_or(tail);
    let items: Vec<Vec<&str>> = if tail.contains(" , ") {
        tail.split(" , ").map(|i| i.split(' ').collect()).collect()
    } else {
        tail.split(' ').map(|w| vec![w]).collect()
    };
    assert!((3..=12).contains(&items.len()), "{prompt}");
    head.split(' ')
        .map(|t| {
            items
                .iter()
                .filter(|words| words.iter().any(|w| *w == t || format!("{w}s") == t))
                .count()
        })
        .max()
        .unwrap()
}

/// The category a question is about ("which of these is a fruit ..." → fruit).
fn category_in(prompt: &str) -> &'static lexicon::Category {
    let matches: Vec<_> = CATEGORIES
        .iter()
        .filter(|c| {
            prompt.starts_with(&format!("which of these is {} ?", c.phrase))
                || prompt.starts_with(&format!("which of these is {} :", c.phrase))
        })
        .collect();
    assert_eq!(matches.len(), 1, "{prompt}");
    matches[0]
}

fn is_numeric(text: &str) -> bool {
    text.chars().any(|c| c.is_ascii_digit())
}

#[test]
fn same_seed_gives_byte_identical_files_and_other_seeds_other_facts() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let c = tempfile::tempdir().unwrap();
    let summary_a = write_assets(a.path(), 0).unwrap();
    let summary_b = write_assets(b.path(), 0).unwrap();
    assert_eq!(summary_a, summary_b);
    assert_eq!(files_under(a.path()), files_under(b.path()));
    for file in &summary_a.files {
        let bytes_a = std::fs::read(a.path().join(&file.path)).unwrap();
        let bytes_b = std::fs::read(b.path().join(&file.path)).unwrap();
        assert!(bytes_a == bytes_b, "{} differs", file.path.display());
        assert_eq!(bytes_a.len(), file.bytes);
    }
    write_assets(c.path(), 1).unwrap();
    let attrs = |dir: &Path| std::fs::read(dir.join("tasks/attributes.jsonl")).unwrap();
    assert_ne!(attrs(a.path()), attrs(c.path()));

    assert_eq!(World::new(5), World::new(5));
    let (w0, w1) = (World::new(0), World::new(1));
    assert_ne!(w0.objects(), w1.objects());
    assert_eq!(w0.objects().len(), 40);
    assert_eq!(
        w0.examples(Skill::Counting, Split::Train, 50, 3),
        w0.examples(Skill::Counting, Split::Train, 50, 3)
    );
    assert_ne!(
        w0.examples(Skill::Counting, Split::Train, 50, 3),
        w0.examples(Skill::Counting, Split::Train, 50, 4)
    );
}

#[test]
fn held_out_answers_are_never_numbers() {
    let world = World::new(0);
    for skill in Skill::HELD_OUT {
        for split in SPLITS {
            for e in world.examples(skill, split, 300, 1) {
                assert!(!is_numeric(&e.response), "{skill}: {e:?}");
                assert!(!e.response.is_empty());
                for choice in e.choices.iter().flatten() {
                    assert!(!is_numeric(choice), "{e:?}");
                }
            }
        }
    }
    for e in world.examples(Skill::Counting, Split::Train, 300, 1) {
        assert!(e.response.parse::<usize>().is_ok(), "{e:?}");
    }
}

#[test]
fn counting_answers_equal_the_true_count() {
    let world = World::new(0);
    let mut answers = BTreeSet::new();
    for split in SPLITS {
        for e in world.examples(Skill::Counting, split, 1000, 2) {
            assert_eq!(e.response, recount(&e.prompt).to_string(), "{}", e.prompt);
            answers.insert(e.response);
        }
    }
    let all: BTreeSet<String> = (0..=9).map(|d| d.to_string()).collect();
    assert_eq!(answers, all, "every count 0-9 occurs");
}

#[test]
fn train_and_test_prompts_never_overlap() {
    for seed in [0, 1] {
        let world = World::new(seed);
        for skill in Skill::ALL {
            let prompts = |split| -> BTreeSet<String> {
                world
                    .examples(skill, split, 600, 5)
                    .into_iter()
                    .map(|e| e.prompt)
                    .collect()
            };
            let (train, test) = (prompts(Split::Train), prompts(Split::Test));
            assert!(train.len() >= 300 && test.len() >= 200, "{skill}");
            let shared: Vec<_> = train.intersection(&test).collect();
            assert!(shared.is_empty(), "{skill}: {shared:?}");
        }
        // Category questions split by their choice set, whatever the form or order.
        let choice_sets = |split| -> BTreeSet<(String, Vec<String>)> {
            let mut sets = BTreeSet::new();
            for form in [ChoiceForm::Lettered, ChoiceForm::Plain] {
                for e in world.category_examples(split, 400, 6, form) {
                    let mut choices = e.choices.unwrap();
                    choices.sort();
                    sets.insert((category_in(&e.prompt).name.to_string(), choices));
                }
            }
            sets
        };
        let train = choice_sets(Split::Train);
        assert!(choice_sets(Split::Test).is_disjoint(&train));
    }
}

#[test]
fn held_out_facts_of_the_test_split_are_taught_in_training() {
    let world = World::new(0);
    let fact = |e: &Example| -> (String, String) {
        let name = world
            .objects()
            .iter()
            .find(|o| e.prompt.split(' ').any(|w| w == o.name))
            .expect("an object is named");
        let object = name.name.clone();
        let attr = ["colour", "shape", "size"]
            .into_iter()
            .find(|a| e.prompt.split(' ').any(|w| w == *a))
            .unwrap();
        let expected = match attr {
            "colour" => name.colour,
            "shape" => name.shape,
            _ => name.size,
        };
        assert_eq!(e.response, expected, "{}", e.prompt);
        (object, attr.to_string())
    };
    let train: BTreeSet<_> = world
        .examples(Skill::Attributes, Split::Train, 360, 0)
        .iter()
        .map(fact)
        .collect();
    let test: BTreeSet<_> = world
        .examples(Skill::Attributes, Split::Test, 240, 0)
        .iter()
        .map(fact)
        .collect();
    assert_eq!(train.len(), 120);
    assert_eq!(test, train);

    let asked = |split| -> BTreeSet<String> {
        world
            .examples(Skill::Antonyms, split, 300, 0)
            .iter()
            .map(|e| {
                let word = e
                    .prompt
                    .split(' ')
                    .find(|w| lexicon::antonym_of(w).is_some())
                    .unwrap();
                assert_eq!(lexicon::antonym_of(word), Some(e.response.as_str()));
                word.to_string()
            })
            .collect()
    };
    assert_eq!(asked(Split::Test), asked(Split::Train));
}

#[test]
fn copy_and_reverse_answers_match_their_words() {
    let world = World::new(0);
    for split in SPLITS {
        for (skill, reverse) in [(Skill::Copy, false), (Skill::Reverse, true)] {
            for e in world.examples(skill, split, 200, 3) {
                let (_, words) = e.prompt.split_once(" : ").unwrap();
                let mut words: Vec<&str> = words.split(' ').collect();
                assert!((3..=5).contains(&words.len()), "{}", e.prompt);
                if reverse {
                    words.reverse();
                }
                assert_eq!(e.response, words.join(" "));
            }
        }
    }
}

#[test]
fn multiple_choice_answer_index_points_at_the_category_member() {
    let world = World::new(0);
    let mut checked = 0;
    for e in sample(&world, 200)
        .into_iter()
        .filter(|e| e.skill == Skill::Category)
    {
        let category = category_in(&e.prompt);
        let choices = e.choices.as_ref().unwrap();
        let answer = e.answer_index.unwrap();
        assert_eq!(choices.len(), 4);
        for (i, choice) in choices.iter().enumerate() {
            assert_eq!(
                category.words.contains(&choice.as_str()),
                i == answer,
                "{e:?}"
            );
        }
        if e.prompt.contains(" a ) ") {
            assert_eq!(e.response, LETTERS[answer]);
            let listed: Vec<String> = LETTERS
                .iter()
                .zip(choices)
                .map(|(l, c)| format!("{l} ) {c}"))
                .collect();
            assert!(e.prompt.ends_with(&listed.join(" ")), "{}", e.prompt);
        } else {
            assert_eq!(&e.response, &choices[answer]);
            assert!(e.prompt.ends_with(&format!("{} ?", choices.join(" , "))));
        }
        checked += 1;
    }
    assert!(checked >= 1000);

    let tmp = tempfile::tempdir().unwrap();
    write_assets(tmp.path(), 0).unwrap();
    for record in read_jsonl(&tmp.path().join("tasks/category.jsonl")) {
        let prompt = str_field(&record, "prompt");
        let choices: Vec<&str> = record["choices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        let answer = record["answer"].as_u64().unwrap() as usize;
        assert!(
            !prompt.contains(')'),
            "no letters in task prompts: {prompt}"
        );
        assert!(
            category_in(prompt).words.contains(&choices[answer]),
            "{record}"
        );
    }
}

#[test]
fn every_generated_word_is_in_the_vocabulary() {
    for seed in [0, 7] {
        let world = World::new(seed);
        let vocab: BTreeSet<String> = world.vocabulary().into_iter().collect();
        assert!((200..=400).contains(&vocab.len()), "{}", vocab.len());
        for word in &vocab {
            assert!(
                word.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                    || ["?", ".", ",", ":", ")"].contains(&word.as_str()),
                "{word:?}"
            );
        }
        let mut used = BTreeSet::new();
        for e in sample(&world, 300) {
            let choices = e.choices.iter().flatten().map(String::as_str);
            let text = [e.prompt.as_str(), e.response.as_str()];
            for word in text.into_iter().flat_map(|t| t.split(' ')).chain(choices) {
                assert!(vocab.contains(word), "{word:?} in {e:?}");
                used.insert(word.to_string());
            }
        }
        // and the vocabulary lists nothing the world never says
        let unused: Vec<_> = vocab.difference(&used).collect();
        assert!(unused.is_empty(), "{unused:?}");
    }
}

#[test]
fn asset_files_have_the_documented_shapes_and_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let summary = write_assets(out, 0).unwrap();
    let vocab: BTreeSet<String> = World::new(0).vocabulary().into_iter().collect();
    let expect = [
        ("train/counting.jsonl", 400),
        ("train/mixture.jsonl", 2000),
        ("train/heldout-skills.jsonl", 400),
        ("tasks/counting.jsonl", 200),
        ("tasks/attributes.jsonl", 200),
        ("tasks/antonyms.jsonl", 200),
        ("tasks/reverse.jsonl", 200),
        ("tasks/category.jsonl", 200),
        ("probe/target.jsonl", 100),
        ("probe/heldout.jsonl", 100),
    ];
    for (path, n) in expect {
        let records = read_jsonl(&out.join(path));
        assert_eq!(records.len(), n, "{path}");
        let listed = summary.files.iter().find(|f| f.path == Path::new(path));
        assert_eq!(listed.map(|f| f.items), Some(n), "{path}");
        let prompts: BTreeSet<&str> = records.iter().map(|r| str_field(r, "prompt")).collect();
        if !path.starts_with("train/mixture") {
            assert_eq!(prompts.len(), n, "{path} prompts are distinct");
        }
        for record in &records {
            for word in str_field(record, "prompt").split(' ') {
                assert!(vocab.contains(word), "{word:?} in {path}");
            }
            let keys: Vec<&str> = record
                .as_object()
                .unwrap()
                .keys()
                .map(|k| k.as_str())
                .collect();
            let mut expected: Vec<&str> = match path {
                "train/counting.jsonl" => vec!["prompt", "response"],
                p if p.starts_with("train/") => vec!["prompt", "response", "skill"],
                "tasks/category.jsonl" => vec!["prompt", "choices", "answer"],
                p if p.starts_with("tasks/") => vec!["prompt", "answer"],
                _ => vec!["prompt"],
            };
            let mut keys = keys;
            keys.sort();
            expected.sort();
            assert_eq!(keys, expected, "{path}");
        }
    }
    // Key order on disk is prompt first.
    let first = std::fs::read_to_string(out.join("tasks/category.jsonl")).unwrap();
    assert!(first.starts_with("{\"prompt\":"));

    for record in read_jsonl(&out.join("tasks/counting.jsonl")) {
        let answer = str_field(&record, "answer");
        assert_eq!(answer, recount(str_field(&record, "prompt")).to_string());
    }
    for record in read_jsonl(&out.join("train/counting.jsonl")) {
        let answer = str_field(&record, "response");
        assert_eq!(answer, recount(str_field(&record, "prompt")).to_string());
    }
    for task in ["attributes", "antonyms", "reverse"] {
        for record in read_jsonl(&out.join(format!("tasks/{task}.jsonl"))) {
            assert!(!is_numeric(str_field(&record, "answer")), "{record}");
        }
    }
    let skills_of = |path: &str| -> Vec<(String, usize)> {
        let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
        for record in read_jsonl(&out.join(path)) {
            let skill = str_field(&record, "skill").to_string();
            if skill != "counting" {
                assert!(!is_numeric(str_field(&record, "response")), "{record}");
            }
            *counts.entry(skill).or_default() += 1;
        }
        counts.into_iter().collect()
    };
    let mixture = skills_of("train/mixture.jsonl");
    assert_eq!(mixture.len(), 6);
    assert!(
        mixture.iter().all(|(_, n)| (333..=334).contains(n)),
        "{mixture:?}"
    );
    let heldout = skills_of("train/heldout-skills.jsonl");
    assert_eq!(heldout.len(), 5);
    assert!(
        heldout.iter().all(|(s, n)| s != "counting" && *n == 80),
        "{heldout:?}"
    );

    // Probe sets: the target set is counting questions, the held-out set never is.
    for record in read_jsonl(&out.join("probe/target.jsonl")) {
        recount(str_field(&record, "prompt"));
    }
    let counting_words = ["how many", "count the"];
    for record in read_jsonl(&out.join("probe/heldout.jsonl")) {
        let prompt = str_field(&record, "prompt");
        assert!(
            !counting_words.iter().any(|w| prompt.contains(w)),
            "{prompt}"
        );
    }
}

#[test]
fn task_headers_use_only_the_allowed_keys() {
    let tmp = tempfile::tempdir().unwrap();
    write_assets(tmp.path(), 0).unwrap();
    let allowed = [
        "name",
        "role",
        "type",
        "data",
        "chat",
        "max_new_tokens",
        "stop",
        "regex",
        "match",
    ];
    let expected = [
        ("counting", "target", "generate", Some((4, "numeric"))),
        ("attributes", "heldout", "generate", Some((4, "exact"))),
        ("antonyms", "heldout", "generate", Some((4, "exact"))),
        ("reverse", "heldout", "generate", Some((8, "exact"))),
        ("category", "heldout", "multiple_choice", None),
    ];
    for (name, role, kind, generate) in expected {
        let path = tmp.path().join(format!("tasks/{name}.yaml"));
        let header: serde_yaml::Mapping =
            serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for key in header.keys() {
            assert!(allowed.contains(&key.as_str().unwrap()), "{name}: {key:?}");
        }
        assert_eq!(header["name"].as_str(), Some(name));
        assert_eq!(header["role"].as_str(), Some(role));
        assert_eq!(header["type"].as_str(), Some(kind));
        assert_eq!(header["chat"].as_bool(), Some(true));
        let data = header["data"].as_str().unwrap();
        assert!(path.with_file_name(data).is_file(), "{name}: {data}");
        match generate {
            Some((tokens, matching)) => {
                assert_eq!(header["max_new_tokens"].as_u64(), Some(tokens));
                assert_eq!(header["match"].as_str(), Some(matching));
            }
            None => assert!(!header.contains_key("max_new_tokens")),
        }
    }
}

#[test]
fn committed_assets_are_what_seed_zero_renders() {
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
    let tmp = tempfile::tempdir().unwrap();
    let summary = write_assets(tmp.path(), 0).unwrap();
    let stale = "regenerate with `cargo run -- make-assets --out assets --seed 0`";
    let mut expected: Vec<PathBuf> = summary.files.iter().map(|f| f.path.clone()).collect();
    expected.push(PathBuf::from("README.md"));
    expected.sort();
    // The pretrained demo model lives beside the generated data; it is checked by tests/demo.rs.
    let generated: Vec<PathBuf> = files_under(&committed)
        .into_iter()
        .filter(|p| !p.starts_with("demo-model"))
        .collect();
    assert_eq!(generated, expected, "{stale}");
    for file in &summary.files {
        let fresh = std::fs::read(tmp.path().join(&file.path)).unwrap();
        let shipped = std::fs::read(committed.join(&file.path)).unwrap();
        assert!(
            fresh == shipped,
            "assets/{} is stale: {stale}",
            file.path.display()
        );
    }
    let total: u64 = generated
        .iter()
        .map(|p| std::fs::metadata(committed.join(p)).unwrap().len())
        .sum();
    assert!(
        total < 1_000_000,
        "generated assets stay small ({total} bytes)"
    );
}
