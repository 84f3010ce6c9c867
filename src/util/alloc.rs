//! The allocator's settings for training: glibc's malloc hands large freed blocks back to the
//! kernel (every block over its mmap threshold, at most 32 MiB, is a mapping of its own and is
//! unmapped on free; the heap's top is trimmed), so every step of a training loop faults the
//! same pages in again and clears them. At SmolLM2-135M's 4 × 128 a step touched 2.4 GB of new
//! pages that way; the logits, the embedding gradient and AdamW's moments are all over 32 MiB.
//! Keeping freed memory took a `full-llm` step from 3.6 to 3.0 s here, with the same peak RSS
//! (README, "Performance"). The price: memory a run has freed stays with the process until it
//! exits.

/// Keeps freed memory in the process for reuse: every thread allocates from the one main heap
/// (a thread's own arena maps blocks over 64 MiB whatever the settings), no block gets a mapping
/// of its own, and the heap is never trimmed. Call it before any thread starts. Returns whether
/// glibc took the settings; without glibc it does nothing and returns false.
pub fn retain_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; it is called before any
        // allocation-heavy work and from the main thread.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1) == 1
                && libc::mallopt(libc::M_MMAP_MAX, 0) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, -1) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

// Tested in tests/allocator.rs: the settings hold only for threads started after them, and
// the test harness runs every unit test on a thread it started before.
