//! Small helpers shared by the engine.

pub mod alloc;
pub mod device;
pub mod format;
pub mod fs;
pub mod fswatch;
pub mod process;
pub mod rng;
pub mod stat_poll;
