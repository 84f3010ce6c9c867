//! The workbench's async loop on a test backend: a metrics line written to the attached run is
//! picked up by a file notification (the tick is an hour, so nothing else could), the polling
//! fallback does the same and says so on the status line, and a launched worker's exit is
//! noticed. Each waits on the loop's notes, never on a fixed delay.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::looper::{screen_text, Looper};
use tunescope::recipe::Recipe;
use tunescope::run::RunDir;
use tunescope::tui::theme::Theme;
use tunescope::tui::{App, LoopOptions, Note};

const TRAIN_LINE: &str = r#"{"elapsed":0.01,"epoch":0,"grad_norm":1.0,"kind":"train","loss":2.5,"lr":0.001,"step":STEP,"tokens":80,"tokens_per_s":1000.0,"total_steps":100}"#;

/// A run directory under `root` with one training step recorded.
fn make_run(root: &Path) -> PathBuf {
    let recipe = Recipe {
        name: "loop".into(),
        output_dir: root.display().to_string(),
        ..Recipe::default()
    };
    let run = RunDir::create(root, &recipe.name).unwrap();
    run.write_recipe(&recipe).unwrap();
    append_step(run.path(), 1);
    run.path().to_path_buf()
}

fn append_step(run: &Path, step: usize) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run.join("metrics.jsonl"))
        .unwrap();
    writeln!(file, "{}", TRAIN_LINE.replace("STEP", &step.to_string())).unwrap();
}

/// Options where only a file change can cause a refresh.
fn hour_tick() -> LoopOptions {
    LoopOptions {
        tick: Duration::from_secs(3600),
        poll_every: Duration::from_secs(3600),
        force_poll: false,
        ..LoopOptions::default()
    }
}

fn loss_points(app: &App) -> usize {
    app.attached.as_ref().unwrap().snapshot().loss.len()
}

#[test]
fn a_metrics_line_refreshes_the_dashboard_by_notification() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("runs");
    let run = make_run(&root);
    let looper = Looper::start(&root, Some(&run), hour_tick());
    let mode = looper.wait_for("mode", |n| matches!(n, Note::Following(_)));
    assert_eq!(
        mode,
        Note::Following(tunescope::util::fswatch::Mode::Notify)
    );
    // The first background read, then a new line.
    looper.wait_for("first refresh", |n| matches!(n, Note::Refreshed { .. }));
    append_step(&run, 2);
    looper.wait_for("refresh after the new line", |n| {
        *n == Note::Refreshed { changed: true }
    });
    let (app, _) = looper.stop();
    assert_eq!(loss_points(&app), 2, "both steps are on the dashboard");
}

#[test]
fn the_polling_fallback_refreshes_too_and_says_so() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("runs");
    let run = make_run(&root);
    let options = LoopOptions {
        poll_every: Duration::from_millis(100),
        force_poll: true,
        ..hour_tick()
    };
    let looper = Looper::start(&root, Some(&run), options);
    let mode = looper.wait_for("mode", |n| matches!(n, Note::Following(_)));
    assert!(
        matches!(
            mode,
            Note::Following(tunescope::util::fswatch::Mode::Polling { .. })
        ),
        "{mode:?}"
    );
    looper.wait_for("first refresh", |n| matches!(n, Note::Refreshed { .. }));
    append_step(&run, 2);
    append_step(&run, 3);
    looper.wait_for("refresh after the new lines", |n| {
        *n == Note::Refreshed { changed: true }
    });
    let (mut app, mut terminal) = looper.stop();
    assert!(loss_points(&app) >= 2);
    assert!(app.follow_note.as_deref().unwrap().contains("polling"));
    app.message = None;
    terminal
        .draw(|f| tunescope::tui::ui::draw(f, &app))
        .unwrap();
    let screen = screen_text(&terminal);
    assert!(
        screen.contains("polling runs every 0.1 s"),
        "the status line shows the fallback"
    );
}

#[test]
fn a_launched_worker_exiting_is_noticed() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("runs");
    let run = make_run(&root);
    let recipe = Recipe {
        output_dir: root.display().to_string(),
        ..Recipe::default()
    };
    let mut app = App::new(recipe, None, vec![Theme::dark()], 0);
    let child = Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
    app.children.push((run.clone(), child));
    let looper = Looper::start_app(app, hour_tick());
    let note = looper.wait_for("child exit", |n| matches!(n, Note::ChildExited { .. }));
    assert_eq!(
        note,
        Note::ChildExited {
            run: run.clone(),
            code: Some(3)
        }
    );
    let (app, _) = looper.stop();
    let (message, _) = app.message.clone().unwrap();
    assert!(message.contains("exited with code 3"), "{message}");
    assert!(app.children.is_empty());
}
