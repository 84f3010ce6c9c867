//! Planning a run before training it: what a step would cost in memory for a model, a trainable
//! selection and a batch shape. Pure engine code, shared by `tunescope plan` and the workbench;
//! it knows nothing of the terminal.

pub mod memory;

pub use memory::{estimate, MemoryEstimate, StepShape};
