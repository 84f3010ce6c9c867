//! The terminal workbench (ratatui): browse modules, toggle trainability, edit recipes, launch
//! detached runs and watch their drift live. It only reads and writes run directories and
//! recipes; the engine knows nothing of it.
//!
//! The loop ([`event_loop`]) runs on tokio: terminal events, run-directory notifications (with
//! polling as the fallback), exits of launched workers, signals and a tick meet in one `select!`;
//! run directories are read and models opened on workers, so drawing never waits on them.
//!
//! Terminal safety: ratatui's `init` installs a panic hook that restores the terminal before
//! the panic message prints; SIGINT, SIGTERM and SIGHUP end the loop and restore it too (detached
//! runs keep training); nothing is printed to stdout or stderr while the alternate screen is up
//! (logging is off in the UI, and hub downloads report to the status line).

pub mod actions;
pub mod app;
pub mod dialog;
pub mod event_loop;
pub mod follow;
pub mod format;
pub mod interpolation;
pub mod keymap;
pub mod launch;
pub mod loading;
pub mod model_grid;
pub mod model_state;
pub mod panes;
pub mod recipe_form;
pub mod refresh;
pub mod series;
pub mod signals;
pub mod theme;
pub mod ui;

use anyhow::Result;
use ratatui::crossterm::event::EventStream;

pub use app::App;
pub use event_loop::{drive, LoopOptions, Note};

/// Runs the workbench until the user quits, a signal arrives or the terminal goes away.
pub fn run(mut app: App) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut terminal = ratatui::try_init()?;
    let options = LoopOptions {
        signals: true,
        follow_parent: true,
        ..LoopOptions::default()
    };
    let result = runtime.block_on(drive(
        &mut terminal,
        &mut app,
        EventStream::new(),
        options,
        |_| {},
    ));
    ratatui::restore();
    result
}
