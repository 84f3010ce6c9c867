//! Key-to-screen latency of the workbench while a run trains.
//!
//! Starts `tunescope train` on the demo model in the background (a real training process that
//! keeps writing metrics), opens the workbench's loop on a 160x48 test backend with the dashboard
//! attached to that run, injects `z` (zoom on/off) key presses at jittered intervals, and times
//! each from injection to the end of the first draw that reflects it. Terminal output is not
//! part of the figure (the backend is in memory); everything else the loop does is.
//!
//! ```text
//! cargo build --locked && cargo run --locked --example key_latency -- 300
//! ```

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use rand::Rng;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use tunescope::recipe::Recipe;
use tunescope::tui::theme::Theme;
use tunescope::tui::App;

fn main() -> Result<()> {
    let keys: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()
        .context("the argument is the number of key presses")?
        .unwrap_or(300);
    let exe = std::env::current_exe()?
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("tunescope"))
        .context("cannot find the target folder")?;
    ensure!(
        exe.is_file(),
        "{} is missing: run `cargo build` first",
        exe.display()
    );
    let work = tempfile::tempdir()?;
    let run_dir = work.path().join("bench-run");
    let mut trainer = start_training(&exe, &run_dir, work.path())?;
    let result = measure(&run_dir, keys);
    let _ = trainer.kill();
    let _ = trainer.wait();
    let (mut samples, steps) = result?;
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "key-to-screen latency over {} keys while training ({steps} steps trained meanwhile): \
         median {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        samples.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    );
    Ok(())
}

/// Starts the demo recipe training for far more steps than the measurement lasts.
fn start_training(exe: &Path, run_dir: &Path, work: &Path) -> Result<Child> {
    let log = std::fs::File::create(work.join("train.log"))?;
    let child = Command::new(exe)
        .args(["train", "recipes/demo-sa-proj.yaml", "--plain"])
        .args(["--set", "max_steps=100000"])
        .arg("--run-dir")
        .arg(run_dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start tunescope train")?;
    let started = Instant::now();
    while training_step(run_dir) < 2 {
        if started.elapsed() > Duration::from_secs(300) {
            bail!("the demo run wrote no training steps within 5 minutes");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(child)
}

/// The run's current step from status.json (0 when unreadable).
fn training_step(run_dir: &Path) -> usize {
    tunescope::run::RunDir::open(run_dir)
        .and_then(|r| r.read_status())
        .map(|s| s.step)
        .unwrap_or(0)
}

/// Runs the loop on a test backend and returns the latency of each key in ms, and how many
/// training steps ran meanwhile.
fn measure(run_dir: &Path, keys: usize) -> Result<(Vec<f64>, usize)> {
    let recipe = Recipe::load(Path::new("recipes/demo-sa-proj.yaml"), &[])?;
    let mut app = App::new(recipe, None, vec![Theme::dark()], 0);
    app.attach(run_dir)?;
    let terminal = Terminal::new(TestBackend::new(160, 48))?;
    let (draw_tx, draws) = mpsc::channel::<(u64, Instant)>();
    let looper = Looper::start(terminal, app, draw_tx);
    let first_step = training_step(run_dir);
    let mut samples = Vec::with_capacity(keys);
    let mut rng = rand::rng();
    // Let the first draw happen.
    draws.recv_timeout(Duration::from_secs(30))?;
    for i in 0..keys {
        std::thread::sleep(Duration::from_millis(rng.random_range(15..60)));
        while draws.try_recv().is_ok() {}
        let sent = Instant::now();
        looper.send(Event::Key(KeyEvent::new(
            KeyCode::Char('z'),
            KeyModifiers::NONE,
        )))?;
        loop {
            let (handled, at) = draws
                .recv_timeout(Duration::from_secs(30))
                .context("no draw within 30 s of a key")?;
            if handled > i as u64 {
                samples.push(at.duration_since(sent).as_secs_f64() * 1e3);
                break;
            }
        }
    }
    let steps = training_step(run_dir).saturating_sub(first_step);
    looper.stop()?;
    Ok((samples, steps))
}

/// The workbench loop on its own thread and runtime, fed key events by the measurement.
struct Looper {
    events: Option<tokio::sync::mpsc::UnboundedSender<Event>>,
    handle: std::thread::JoinHandle<Result<()>>,
}

impl Looper {
    fn start(
        mut terminal: Terminal<TestBackend>,
        mut app: App,
        draws: mpsc::Sender<(u64, Instant)>,
    ) -> Self {
        let (events, mut rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
        let handle = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let stream =
                futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|e| e.map(Ok)));
            runtime.block_on(tunescope::tui::drive(
                &mut terminal,
                &mut app,
                stream,
                tunescope::tui::LoopOptions::default(),
                |note| {
                    if let tunescope::tui::Note::Drawn { keys } = note {
                        let _ = draws.send((*keys, Instant::now()));
                    }
                },
            ))
        });
        Self {
            events: Some(events),
            handle,
        }
    }

    fn send(&self, event: Event) -> Result<()> {
        self.events
            .as_ref()
            .context("stopped")?
            .send(event)
            .ok()
            .context("the loop ended")
    }

    /// Ends the event stream, which ends the loop.
    fn stop(mut self) -> Result<()> {
        self.events.take();
        self.handle
            .join()
            .map_err(|_| anyhow::anyhow!("the loop panicked"))?
    }
}
