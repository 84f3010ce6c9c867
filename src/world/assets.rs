//! The shipped data sets: training JSONL, lm-evaluation-harness-style tasks (a YAML header next
//! to its JSONL items) and probe prompt sets, all rendered from one seed.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::util::fs::write_atomic;
use crate::util::rng::SeededRng;

use super::sampling::shuffle;
use super::split::derive_seed;
use super::{ChoiceForm, Example, Skill, Split, World};

/// Items in `train/counting.jsonl`.
pub const TRAIN_COUNTING: usize = 400;
/// Items in `train/mixture.jsonl` (all six skills, equal shares).
pub const TRAIN_MIXTURE: usize = 2000;
/// Items in `train/heldout-skills.jsonl` (the five held-out skills, equal shares).
pub const TRAIN_HELDOUT: usize = 400;
/// Items in each `tasks/*.jsonl`.
pub const TASK_ITEMS: usize = 200;
/// Items in each `probe/*.jsonl`.
pub const PROBE_ITEMS: usize = 100;

/// One written file: its path relative to the output directory, item count and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetFile {
    pub path: PathBuf,
    pub items: usize,
    pub bytes: usize,
}

/// What `write_assets` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetSummary {
    pub seed: u64,
    pub files: Vec<AssetFile>,
}

impl AssetSummary {
    /// Total bytes of every file written.
    pub fn total_bytes(&self) -> usize {
        self.files.iter().map(|f| f.bytes).sum()
    }
}

/// Writes the data sets of the world of `seed` under `out` (created if missing):
/// `train/{counting,mixture,heldout-skills}.jsonl`, `tasks/<task>.{yaml,jsonl}` for counting,
/// attributes, antonyms, reverse and category, `probe/{target,heldout}.jsonl`, and for the other
/// narrow target skills (classify, verify, lookup, clock) `train/<skill>.jsonl`,
/// `tasks/<skill>.{yaml,jsonl}` and `probe/<skill>.jsonl`. Files are byte-identical for the same
/// seed.
pub fn write_assets(out: &Path, seed: u64) -> Result<AssetSummary> {
    let mut files = Vec::new();
    for (path, text, items) in render(seed)? {
        let full = out.join(&path);
        if let Some(dir) = full.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        write_atomic(&full, text.as_bytes())?;
        files.push(AssetFile {
            path,
            items,
            bytes: text.len(),
        });
    }
    Ok(AssetSummary { seed, files })
}

/// A rendered file: relative path, contents, item count.
pub(super) type Rendered = (PathBuf, String, usize);

/// Every file's contents, in a fixed order.
fn render(seed: u64) -> Result<Vec<Rendered>> {
    let world = World::new(seed);
    let sample = |name: &str| derive_seed(seed, name);
    let mut files: Vec<Rendered> = Vec::new();

    let counting = world.examples(
        Skill::Counting,
        Split::Train,
        TRAIN_COUNTING,
        sample("train/counting"),
    );
    files.push(jsonl("train/counting.jsonl", &counting, train_record)?);
    let mixture = mixed(
        &world,
        &Skill::ALL,
        TRAIN_MIXTURE,
        Split::Train,
        seed,
        "train/mixture",
    );
    files.push(jsonl("train/mixture.jsonl", &mixture, tagged_train_record)?);
    let heldout = mixed(
        &world,
        &Skill::HELD_OUT,
        TRAIN_HELDOUT,
        Split::Train,
        seed,
        "train/heldout",
    );
    files.push(jsonl(
        "train/heldout-skills.jsonl",
        &heldout,
        tagged_train_record,
    )?);

    for task in TASKS {
        let items = match task.skill {
            Skill::Category => world.category_examples(
                Split::Test,
                TASK_ITEMS,
                sample("tasks/category"),
                ChoiceForm::Plain,
            ),
            skill => world.examples(
                skill,
                Split::Test,
                TASK_ITEMS,
                sample(&format!("tasks/{skill}")),
            ),
        };
        files.push((
            PathBuf::from(format!("tasks/{}.yaml", task.skill)),
            task.header(),
            1,
        ));
        let record = if task.multiple_choice {
            choice_record
        } else {
            answer_record
        };
        files.push(jsonl(
            &format!("tasks/{}.jsonl", task.skill),
            &items,
            record,
        )?);
    }

    let target = world.examples(
        Skill::Counting,
        Split::Test,
        PROBE_ITEMS,
        sample("probe/target"),
    );
    files.push(jsonl("probe/target.jsonl", &target, probe_record)?);
    let heldout = mixed(
        &world,
        &Skill::HELD_OUT,
        PROBE_ITEMS,
        Split::Test,
        seed,
        "probe/heldout",
    );
    files.push(jsonl("probe/heldout.jsonl", &heldout, probe_record)?);
    files.extend(super::target_assets::render(&world, seed)?);
    Ok(files)
}

/// `n` examples of `split` shared equally among `skills` (earlier skills take the remainder),
/// shuffled together.
fn mixed(
    world: &World,
    skills: &[Skill],
    n: usize,
    split: Split,
    seed: u64,
    name: &str,
) -> Vec<Example> {
    let mut all = Vec::with_capacity(n);
    for (i, &skill) in skills.iter().enumerate() {
        let share = n / skills.len() + usize::from(i < n % skills.len());
        let stream = derive_seed(seed, &format!("{name}/{skill}"));
        all.extend(world.examples(skill, split, share, stream));
    }
    let mut rng = SeededRng::new(derive_seed(seed, &format!("{name}/order")));
    shuffle(&mut rng, &mut all);
    all
}

/// One evaluation task's header.
pub(super) struct Task {
    pub skill: Skill,
    pub role: &'static str,
    pub multiple_choice: bool,
    pub max_new_tokens: usize,
    pub matching: &'static str,
}

/// The tasks written under `tasks/`.
const TASKS: [Task; 5] = [
    Task {
        skill: Skill::Counting,
        role: "target",
        multiple_choice: false,
        max_new_tokens: 4,
        matching: "numeric",
    },
    Task {
        skill: Skill::Attributes,
        role: "heldout",
        multiple_choice: false,
        max_new_tokens: 4,
        matching: "exact",
    },
    Task {
        skill: Skill::Antonyms,
        role: "heldout",
        multiple_choice: false,
        max_new_tokens: 4,
        matching: "exact",
    },
    Task {
        skill: Skill::Reverse,
        role: "heldout",
        multiple_choice: false,
        max_new_tokens: 8,
        matching: "exact",
    },
    Task {
        skill: Skill::Category,
        role: "heldout",
        multiple_choice: true,
        max_new_tokens: 0,
        matching: "",
    },
];

impl Task {
    /// The YAML header (keys: name, role, type, data, chat, and for generate tasks
    /// max_new_tokens and match).
    pub(super) fn header(&self) -> String {
        let name = self.skill.as_str();
        let mut text = format!("name: {name}\nrole: {}\n", self.role);
        if self.multiple_choice {
            text.push_str("type: multiple_choice\n");
        } else {
            text.push_str("type: generate\n");
        }
        text.push_str(&format!("data: {name}.jsonl\nchat: true\n"));
        if !self.multiple_choice {
            text.push_str(&format!(
                "max_new_tokens: {}\nmatch: {}\n",
                self.max_new_tokens, self.matching
            ));
        }
        text
    }
}

/// Renders `examples` as JSONL, one `record` per line.
pub(super) fn jsonl(
    path: &str,
    examples: &[Example],
    record: fn(&Example) -> String,
) -> Result<Rendered> {
    let mut text = String::new();
    for example in examples {
        text.push_str(&record(example));
        text.push('\n');
    }
    Ok((PathBuf::from(path), text, examples.len()))
}

/// One JSON line (fields in declaration order).
fn to_line<T: Serialize>(record: T) -> String {
    serde_json::to_string(&record).expect("plain records serialise")
}

/// `{"prompt", "response"}`.
pub(super) fn train_record(e: &Example) -> String {
    #[derive(Serialize)]
    struct Record<'a> {
        prompt: &'a str,
        response: &'a str,
    }
    to_line(Record {
        prompt: &e.prompt,
        response: &e.response,
    })
}

/// `{"prompt", "response", "skill"}`.
fn tagged_train_record(e: &Example) -> String {
    #[derive(Serialize)]
    struct Record<'a> {
        prompt: &'a str,
        response: &'a str,
        skill: &'a str,
    }
    to_line(Record {
        prompt: &e.prompt,
        response: &e.response,
        skill: e.skill.as_str(),
    })
}

/// `{"prompt", "answer": str}` (generate tasks).
pub(super) fn answer_record(e: &Example) -> String {
    #[derive(Serialize)]
    struct Record<'a> {
        prompt: &'a str,
        answer: &'a str,
    }
    to_line(Record {
        prompt: &e.prompt,
        answer: &e.response,
    })
}

/// `{"prompt", "choices": [str], "answer": index}` (multiple-choice tasks).
fn choice_record(e: &Example) -> String {
    #[derive(Serialize)]
    struct Record<'a> {
        prompt: &'a str,
        choices: &'a [String],
        answer: usize,
    }
    to_line(Record {
        prompt: &e.prompt,
        choices: e.choices.as_deref().unwrap_or_default(),
        answer: e.answer_index.unwrap_or_default(),
    })
}

/// `{"prompt"}` (probe sets).
pub(super) fn probe_record(e: &Example) -> String {
    #[derive(Serialize)]
    struct Record<'a> {
        prompt: &'a str,
    }
    to_line(Record { prompt: &e.prompt })
}
