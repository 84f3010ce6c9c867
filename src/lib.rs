//! tunescope: selective fine-tuning of language models with candle, watching drift as it happens.
//!
//! Data flows one way: recipe → selection → trainer → run directory → views. The engine
//! (`model`, and later selection, data, training and evaluation) knows nothing of the terminal.

pub mod bench;
pub mod cli;
pub mod data;
pub mod demo;
pub mod eval;
pub mod export;
pub mod gguf;
pub mod model;
pub mod plan;
pub mod recipe;
pub mod run;
pub mod select;
pub mod train;
pub mod tui;
pub mod util;
pub mod watch;
pub mod world;
