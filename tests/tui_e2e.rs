//! End to end: the real binary in tmux. Open the workbench on a tiny model, toggle the q and
//! gate columns, launch, watch the dashboard, detach, re-attach from `tunescope attach`, stop
//! the run, quit; the terminal is left sane and the run directory says `stopped`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::TinyModel;
use tunescope::model::Architecture;
use tunescope::run::{list_runs, RunState};

struct Tmux {
    session: String,
}

impl Tmux {
    fn start(dir: &Path, width: u16, height: u16) -> Self {
        let session = format!("tunescope-e2e-{}", std::process::id());
        let ok = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                &session,
                "-x",
                &width.to_string(),
                "-y",
                &height.to_string(),
                "-c",
            ])
            .arg(dir)
            .args(["bash", "--norc", "--noprofile"])
            .env("TERM", "xterm-256color")
            .status()
            .expect("tmux must be installed (`apt-get install tmux`; .ci/run installs it)");
        assert!(ok.success(), "tmux new-session failed");
        Self { session }
    }

    fn keys(&self, keys: &[&str]) {
        for key in keys {
            let ok = Command::new("tmux")
                .args(["send-keys", "-t", &self.session, key])
                .status()
                .unwrap();
            assert!(ok.success());
            std::thread::sleep(Duration::from_millis(60));
        }
    }

    fn type_line(&self, line: &str) {
        let ok = Command::new("tmux")
            .args(["send-keys", "-t", &self.session, "-l", line])
            .status()
            .unwrap();
        assert!(ok.success());
        self.keys(&["Enter"]);
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.session])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn alternate_screen_on(&self) -> bool {
        let out = Command::new("tmux")
            .args([
                "display-message",
                "-p",
                "-t",
                &self.session,
                "#{alternate_on}",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim() == "1"
    }

    /// Polls the screen until `pred` holds; returns the screen and how long it took.
    fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> (String, Duration) {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if pred(&screen) {
                return (screen, start.elapsed());
            }
            if start.elapsed() > timeout {
                panic!("timed out waiting for {what}; screen:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.session])
            .status();
    }
}

fn dashboard_step(screen: &str) -> Option<usize> {
    let at = screen.find("step ")?;
    let rest = &screen[at + 5..];
    rest.split('/').next()?.trim().parse().ok()
}

#[test]
fn workbench_launch_watch_detach_attach_stop() {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_tunescope"));
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let work = tempfile::tempdir().unwrap();
    let tiny = TinyModel::new(Architecture::Llama, 9);
    let recipe = work.path().join("recipe.yaml");
    let assets = repo.join("assets");
    std::fs::write(
        &recipe,
        format!(
            "name: e2e\nmodel: {}\ndata: {}\ntrainable:\n  kinds: [k]\noptimizer:\n  lr: 0.002\nbatch_size: 4\nmax_steps: 100000\n\
             output_dir: {}\nprobe:\n  every_steps: 5\n  heldout: {}\n  max_new_tokens: 4\n  max_prompts: 4\n",
            tiny.spec_str(),
            assets.join("train/counting.jsonl").display(),
            work.path().join("runs").display(),
            assets.join("probe/heldout.jsonl").display(),
        ),
    )
    .unwrap();

    let tmux = Tmux::start(work.path(), 100, 32);
    tmux.type_line(&format!(
        "{} ui {}; stty -a > stty.txt",
        bin.display(),
        recipe.display()
    ));
    let (screen, _) = tmux.wait_for("the model grid", Duration::from_secs(20), |s| {
        s.contains("layer") && s.contains("gate")
    });
    assert!(tmux.alternate_screen_on());
    // The recipe trains k only: the k column shows ■, q shows ·.
    assert!(screen.contains("■"), "{screen}");

    // Toggle the q column (cursor starts on layer 0, q) and the gate column (four to the right).
    tmux.keys(&["c", "l", "l", "l", "l", "c"]);
    let (screen, _) = tmux.wait_for("q and gate trainable", Duration::from_secs(5), |s| {
        s.lines().any(|l| {
            l.trim_start_matches('│').trim_start().starts_with("0 │") && l.matches('■').count() >= 3
        })
    });
    println!("grid after toggling q and gate:\n{screen}");

    // Key responsiveness: from a key press to the updated screen.
    let pressed = Instant::now();
    tmux.keys(&["?"]);
    let (_, _) = tmux.wait_for("help overlay", Duration::from_secs(5), |s| {
        s.contains("keys (Esc")
    });
    println!("key → screen (help overlay, idle): {:?}", pressed.elapsed());
    tmux.keys(&["Escape"]);

    tmux.keys(&["L"]);
    let (screen, waited) = tmux.wait_for(
        "dashboard at step >= 5 with a histogram",
        Duration::from_secs(90),
        |s| {
            dashboard_step(s).is_some_and(|n| n >= 5)
                && s.contains("token distribution")
                && s.contains('#')
        },
    );
    println!("dashboard after {waited:?}:\n{screen}");
    let run = list_runs(&work.path().join("runs"))
        .into_iter()
        .next()
        .expect("a run directory");
    let recipe_snapshot = std::fs::read_to_string(run.recipe_path()).unwrap();
    assert!(
        recipe_snapshot.contains("q") && recipe_snapshot.contains("gate"),
        "{recipe_snapshot}"
    );

    // Responsiveness while the run trains.
    let pressed = Instant::now();
    tmux.keys(&["1"]);
    tmux.wait_for("Model tab", Duration::from_secs(5), |s| {
        s.contains("grid (t: tree)")
    });
    println!(
        "key → screen while training (switch to Model tab): {:?}",
        pressed.elapsed()
    );

    // Detach: quitting asks first, the run keeps going.
    tmux.keys(&["q"]);
    tmux.wait_for("quit confirmation", Duration::from_secs(5), |s| {
        s.contains("keeps running")
    });
    tmux.keys(&["y"]);
    tmux.wait_for("shell prompt", Duration::from_secs(10), |_| {
        work.path().join("stty.txt").is_file()
    });
    let step_at_detach = run.read_status().unwrap().step;
    std::thread::sleep(Duration::from_millis(1500));
    let status = run.read_status().unwrap();
    assert_eq!(
        status.state,
        RunState::Running,
        "the run must outlive the workbench"
    );
    assert!(
        status.step > step_at_detach,
        "the run kept training after detach"
    );

    // Terminal left sane: no alternate screen, echo on.
    assert!(!tmux.alternate_screen_on());
    let stty = std::fs::read_to_string(work.path().join("stty.txt")).unwrap();
    assert!(
        stty.split_whitespace().any(|w| w == "echo"),
        "echo is off after quitting: {stty}"
    );
    assert!(
        stty.split_whitespace().any(|w| w == "icanon"),
        "terminal left in raw mode: {stty}"
    );

    // Re-attach from a second process and stop the run from the dashboard.
    tmux.type_line(&format!(
        "{} attach {}",
        bin.display(),
        run.path().display()
    ));
    tmux.wait_for("attached dashboard", Duration::from_secs(20), |s| {
        s.contains("token distribution") && dashboard_step(s).is_some()
    });
    tmux.keys(&["S"]);
    tmux.wait_for("stop confirmation", Duration::from_secs(5), |s| {
        s.contains("checkpoints first")
    });
    tmux.keys(&["y"]);
    let start = Instant::now();
    loop {
        let status = run.read_status().unwrap();
        if status.state == RunState::Stopped {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "run did not stop: {status:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    tmux.wait_for(
        "stopped state on the dashboard",
        Duration::from_secs(10),
        |s| s.contains("stopped"),
    );
    tmux.keys(&["q"]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!tmux.alternate_screen_on());
    assert!(
        run.latest_checkpoint().is_some(),
        "a stopped run keeps a checkpoint"
    );
}
