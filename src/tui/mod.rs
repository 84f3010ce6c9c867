//! The terminal workbench (ratatui): browse modules, toggle trainability, edit recipes, launch
//! detached runs and watch their drift live. It only reads and writes run directories and
//! recipes; the engine knows nothing of it.
//!
//! Terminal safety: ratatui's `init` installs a panic hook that restores the terminal before
//! the panic message prints; SIGTERM and SIGHUP end the loop and restore it too; nothing is
//! printed to stdout or stderr while the alternate screen is up (logging is off in the UI).

pub mod actions;
pub mod app;
pub mod dialog;
pub mod format;
pub mod keymap;
pub mod launch;
pub mod model_grid;
pub mod model_state;
pub mod panes;
pub mod recipe_form;
pub mod series;
pub mod theme;
pub mod ui;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use ratatui::crossterm::event::{self, Event, KeyEventKind};

pub use app::App;

/// How often run directories are re-read.
const REFRESH: Duration = Duration::from_millis(250);
/// Longest wait for input before the next refresh check.
const POLL: Duration = Duration::from_millis(50);

/// Runs the workbench until the user quits (or SIGTERM/SIGHUP arrives).
pub fn run(mut app: App) -> Result<()> {
    let terminate = Arc::new(AtomicBool::new(false));
    {
        let terminate = terminate.clone();
        let _ = ctrlc::set_handler(move || terminate.store(true, Ordering::SeqCst));
    }
    let mut terminal = ratatui::try_init()?;
    let result = event_loop(&mut terminal, &mut app, &terminate);
    ratatui::restore();
    result
}

/// Reads terminal events on their own thread, so a terminal that hangs up (where reading
/// can block or spin) never stalls the loop: the loop still sees the quit flag and exits.
fn spawn_event_reader() -> mpsc::Receiver<Event> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        while let Ok(event) = event::read() {
            if tx.send(event).is_err() {
                break;
            }
        }
    });
    rx
}

/// The process that started us; when it goes away (the terminal's shell died), we quit.
fn parent_pid() -> u32 {
    #[cfg(unix)]
    {
        std::os::unix::process::parent_id()
    }
    #[cfg(not(unix))]
    {
        0
    }
}

fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    app: &mut App,
    terminate: &AtomicBool,
) -> Result<()> {
    let events = spawn_event_reader();
    let parent = parent_pid();
    drive(
        terminal,
        app,
        &events,
        || !terminate.load(Ordering::SeqCst) && parent_pid() == parent,
        |_| {},
    )
}

/// The loop itself, on any backend and event source: what [`run`] uses on the terminal and what
/// the key-latency benchmark drives on a test backend. `on_draw` gets the number of keys handled
/// so far after each completed draw.
pub fn drive<B: ratatui::backend::Backend>(
    terminal: &mut ratatui::Terminal<B>,
    app: &mut App,
    events: &mpsc::Receiver<Event>,
    keep_going: impl Fn() -> bool,
    mut on_draw: impl FnMut(u64),
) -> Result<()>
where
    B::Error: Send + Sync + 'static,
{
    let mut dirty = true;
    let mut last_refresh: Option<Instant> = None;
    let mut keys = 0u64;
    while !app.should_quit && keep_going() {
        if last_refresh.is_none_or(|t| t.elapsed() >= REFRESH) {
            dirty |= app.refresh();
            last_refresh = Some(Instant::now());
        }
        if dirty {
            terminal.draw(|frame| ui::draw(frame, app))?;
            on_draw(keys);
            dirty = false;
        }
        match events.recv_timeout(POLL) {
            Ok(Event::Key(key)) if key.kind != KeyEventKind::Release => {
                app.handle_key(key);
                keys += 1;
                dirty = true;
            }
            Ok(Event::Resize(_, _)) => dirty = true,
            Ok(_) | Err(RecvTimeoutError::Timeout) => {}
            // The reader stopped: the terminal is gone.
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    Ok(())
}
