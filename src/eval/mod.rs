//! Evaluation: the drift probe (numeric tokens, the target task's answer vocabulary and other
//! token classes, answer shape), held-out and target task scoring, and per-layer drift between
//! the base and the current model.

pub mod classes;
pub mod drift;
pub mod forecast;
pub mod numeric;
pub mod probe;
pub mod tasks;
