//! `util::alloc::retain_freed_memory`: after it, a block far over glibc's 32 MiB mmap ceiling,
//! allocated on a thread started later (as the trainer's is), comes from the heap and is not
//! handed back to the kernel when freed. Without the settings glibc maps such a block on its own
//! and unmaps it on free, and every training step faults its pages in again.

fn main() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        assert!(
            tunescope::util::alloc::retain_freed_memory(),
            "glibc refused a setting"
        );
        // SAFETY: mallinfo2 only reads the allocator's counters.
        let mapped = || unsafe { libc::mallinfo2() }.hblkhd;
        let before = mapped();
        let worker = std::thread::spawn(move || {
            let block = std::hint::black_box(vec![1u8; 256 << 20]);
            let during = mapped();
            drop(block);
            during
        });
        let during = worker.join().expect("allocating thread");
        assert!(
            during < before + (256 << 20),
            "a 256 MiB block got a mapping of its own ({before} → {during} bytes mapped)"
        );
        println!("allocator: a 256 MiB block on a new thread came from the heap");
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    println!("allocator: skipped, the settings are glibc's");
}
