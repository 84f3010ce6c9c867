//! The training engine: AdamW over the trainable `Var`s only, with warmup and decay, global-norm
//! clipping, gradient accumulation and seeded data order; it records everything in the run
//! directory and emits typed events, running on its own thread when spawned.

pub mod events;
pub mod loss;
pub mod monitor;
pub mod optimizer;
mod prepare;
pub mod regularize;
pub mod schedule;
pub mod step;
mod trainer;

pub use events::{StepMetrics, TrainEvent};
pub use prepare::{check, prepare, Prepared};
pub use trainer::{
    run_prepared, run_training, spawn_prepared, spawn_training, TrainControl, TrainOutcome,
};
