//! Fused CPU ops with their own backward (placeholder: switch only).

use std::sync::atomic::{AtomicBool, Ordering};

static FUSED: AtomicBool = AtomicBool::new(true);

/// Turns the fused CPU ops on or off for the whole process (off: the explicit compositions).
pub fn set_fused(on: bool) {
    FUSED.store(on, Ordering::Relaxed);
}

/// Whether the fused CPU ops are in use.
pub fn fused() -> bool {
    FUSED.load(Ordering::Relaxed)
}
