//! Training data for supervised fine-tuning: JSONL records, chat rendering into token ids with
//! loss labels on the assistant's replies, and seeded, right-padded batches.

pub mod batch;
pub mod jsonl;
pub mod tokenize;

pub use batch::{batches_per_epoch, epoch_order, make_batch, Batch};
pub use jsonl::{read_records, Record};
pub use tokenize::{tokenize, Example, TokenizeOptions, TokenizedData, IGNORE_INDEX};
