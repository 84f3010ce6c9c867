//! The data sets of the narrow target skills besides counting (classify, verify, lookup, clock),
//! for sequences of fine-tuning stages: per skill a training file, a target task and probe
//! prompts, rendered after the original files so those stay byte-identical.

use std::path::PathBuf;

use anyhow::Result;

use super::assets::{answer_record, jsonl, probe_record, train_record, Rendered, Task};
use super::split::derive_seed;
use super::{Skill, Split, World};

/// Items in each `train/<skill>.jsonl`.
pub const TRAIN_ITEMS: usize = 400;
/// Items in each `tasks/<skill>.jsonl`.
pub const TASK_ITEMS: usize = 200;
/// Prompts in each `probe/<skill>.jsonl`.
pub const PROBE_ITEMS: usize = 100;

/// The target tasks written here (counting's is among the original files).
const TASKS: [Task; 4] = [
    Task {
        skill: Skill::Classify,
        role: "target",
        multiple_choice: false,
        max_new_tokens: 2,
        matching: "exact",
    },
    Task {
        skill: Skill::Verify,
        role: "target",
        multiple_choice: false,
        max_new_tokens: 5,
        matching: "exact",
    },
    Task {
        skill: Skill::Lookup,
        role: "target",
        multiple_choice: false,
        max_new_tokens: 2,
        matching: "exact",
    },
    Task {
        skill: Skill::Clock,
        role: "target",
        multiple_choice: false,
        max_new_tokens: 6,
        matching: "exact",
    },
];

/// `train/<skill>.jsonl`, `tasks/<skill>.{yaml,jsonl}` and `probe/<skill>.jsonl` of each skill.
pub(super) fn render(world: &World, seed: u64) -> Result<Vec<Rendered>> {
    let mut files = Vec::new();
    for task in &TASKS {
        let skill = task.skill;
        let draw = |split, n, stream: &str| {
            world.examples(
                skill,
                split,
                n,
                derive_seed(seed, &format!("{stream}/{skill}")),
            )
        };
        let train = draw(Split::Train, TRAIN_ITEMS, "train");
        files.push(jsonl(
            &format!("train/{skill}.jsonl"),
            &train,
            train_record,
        )?);
        files.push((
            PathBuf::from(format!("tasks/{skill}.yaml")),
            task.header(),
            1,
        ));
        let test = draw(Split::Test, TASK_ITEMS, "tasks");
        files.push(jsonl(
            &format!("tasks/{skill}.jsonl"),
            &test,
            answer_record,
        )?);
        let probe = draw(Split::Test, PROBE_ITEMS, "probe");
        files.push(jsonl(
            &format!("probe/{skill}.jsonl"),
            &probe,
            probe_record,
        )?);
    }
    Ok(files)
}
