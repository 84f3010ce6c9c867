//! Sequential fine-tuning stages (the study's five-stage experiment): a sequence file lists
//! stages (recipe, data, target task); each stage starts from the previous stage's final
//! weights; the held-out tasks and every stage's target are scored before the first stage and
//! after each one.
//!
//! ```text
//! runs/<sequence>/
//!   sequence.yaml   the sequence file as given
//!   sequence.json   typed, versioned record: plan, stages, scores (see `record`)
//!   lock            held by the `tunescope sequence` process running it
//!   1-<stage>/      run directory of stage 1 (a normal run directory)
//!   2-<stage>/      run directory of stage 2, whose recipe's model is 1-<stage>/final
//! ```
//!
//! - [`spec`]: the sequence file and its checks.
//! - [`crate::run::sequence`]: `sequence.json` and the sequence file's types (the contract the
//!   views read).
//! - [`runner`]: running and resuming.
//! - [`table`]: the per-stage table (forgetting and recovery).

pub mod runner;
pub mod spec;
pub mod table;

pub use crate::run::sequence::{
    ScoreEntry, SequenceRecord, SequenceSpec, StageEntry, StageSpec, StageState,
};
pub use runner::{default_dir, run_sequence, SequenceEvent, SequenceOutcome};
pub use spec::{PlannedStage, SequencePlan};
pub use table::{stage_table, StageRow, StageTable};
