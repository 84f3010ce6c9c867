//! tunescope: selective fine-tuning of language models with candle, watching drift as it happens.
//!
//! Data flows one way: recipe → selection → trainer → run directory → views. The modules come
//! in three tiers, and each uses only the tiers above it:
//! - **core engine**: [`model`], [`select`], [`recipe`], [`data`], [`train`], [`eval`] and
//!   [`run`] (the run directory, the one contract between the engine and every view); none of
//!   them knows of a terminal;
//! - **tools** built on the engine: [`bench`], [`watch`], [`export`], [`gguf`], [`merge`]
//!   (fold a LoRA adapter, interpolate two models), [`interpolate`] (WiSE-FT along a finished
//!   run), [`sequence`] (stages run one after another), [`demo`] with its synthetic [`world`];
//! - **fronts**: [`tui`] (the workbench) and [`cli`].
//!
//! [`util`] holds the small helpers every tier shares (atomic writes, seeded randomness).

// Core engine.
pub mod data;
pub mod eval;
pub mod model;
pub mod plan;
pub mod recipe;
pub mod run;
pub mod select;
pub mod train;

// Tools.
pub mod bench;
pub mod demo;
pub mod export;
pub mod gguf;
pub mod interpolate;
pub mod merge;
pub mod sequence;
pub mod watch;
pub mod world;

// Fronts.
pub mod cli;
pub mod tui;

// Shared helpers.
pub mod util;
