//! Evaluation: the numeric-token drift probe, held-out and target task scoring, and per-layer
//! drift between the base and the current model.

pub mod drift;
pub mod numeric;
pub mod probe;
pub mod tasks;
