//! Process liveness.

/// Whether a process with this pid exists (Linux: /proc; elsewhere assumed alive).
pub fn pid_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        std::path::Path::new("/proc").join(pid.to_string()).exists()
    } else {
        true
    }
}
