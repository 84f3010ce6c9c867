//! The demo: a small model pretrained from scratch on the synthetic world (`assets/demo-model`),
//! and the learning vs forgetting table of the `recipes/demo-*.yaml` fine-tuning recipes.
//!
//! - [`tokenizer`]: the word-level tokenizer of the world.
//! - [`pretrain`]: training the demo model with the project's trainer, and scoring it per skill.
//! - [`report`]: running the demo recipes and reading each run's last evaluation and probe.

pub mod pretrain;
pub mod report;
pub mod seeds;
pub mod tokenizer;

pub use pretrain::{pretrain, score_model, DemoScores, PretrainOptions, SkillScore};
pub use report::{read_row, table, ReportRow};
pub use seeds::{aggregate, SeededRow, Spread};
pub use tokenizer::{build_word_tokenizer, word_vocabulary};
