//! Training data for supervised fine-tuning: JSONL records, chat rendering into token ids with
//! loss labels on the assistant's replies, and seeded, right-padded batches.

pub mod batch;
pub mod images;
pub mod jsonl;
pub mod tokenize;

pub use batch::{batches_per_epoch, epoch_order, make_batch, Batch};
pub use images::{image_token_counts, load_images, Pixels};
pub use jsonl::{read_records, Record};
pub use tokenize::{
    tokenize, tokenize_with_images, Example, ImageTokens, TokenizeOptions, TokenizedData,
    IGNORE_INDEX,
};
