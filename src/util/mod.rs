//! Small helpers shared by the engine.

pub mod device;
pub mod fs;
pub mod rng;
