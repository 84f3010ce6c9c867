//! The workbench's loop: terminal events, run-directory changes, exits of launched workers,
//! signals, background results and a tick all meet in one `tokio::select!`. The loop only
//! updates the App and draws; reading runs and opening models happen on workers that send their
//! results back over a channel.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use futures_util::{Stream, StreamExt};
use ratatui::backend::Backend;
use ratatui::crossterm::event::{Event, KeyEventKind};
use ratatui::Terminal;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio::time::MissedTickBehavior;

use super::app::{run_name, App, Level};
use super::follow::Follower;
use super::interpolation::{self, Update};
use super::loading::StatusProgress;
use super::refresh::{RefreshRequest, RefreshUpdate, Refresher};
use super::signals::Signals;
use super::ui;
use crate::model::progress::set_download_progress;
use crate::util::fswatch::{Change, Mode};

/// How the loop runs.
#[derive(Debug, Clone)]
pub struct LoopOptions {
    /// Redraw period (elapsed times, the parent-process check).
    pub tick: Duration,
    /// Polling period where file notifications are unavailable.
    pub poll_every: Duration,
    /// Poll instead of using file notifications.
    pub force_poll: bool,
    /// End the loop on SIGINT, SIGTERM and SIGHUP.
    pub signals: bool,
    /// End the loop when the parent process goes away (the terminal's shell died).
    pub follow_parent: bool,
}

impl Default for LoopOptions {
    fn default() -> Self {
        Self {
            tick: Duration::from_secs(1),
            poll_every: Duration::from_secs(1),
            force_poll: crate::util::fswatch::polling_requested(),
            signals: false,
            follow_parent: false,
        }
    }
}

/// What the loop reports to an observer (tests, the latency benchmark).
#[derive(Debug, Clone, PartialEq)]
pub enum Note {
    /// A draw completed; `keys` keys were handled before it.
    Drawn { keys: u64 },
    /// A background read was applied; `changed`: it changed what is shown.
    Refreshed { changed: bool },
    /// How run directories are followed.
    Following(Mode),
    /// A worker launched here exited.
    ChildExited { run: PathBuf, code: Option<i32> },
    /// The loop ended because of this signal.
    Signal(&'static str),
    /// The interpolation worker reported.
    Interpolation(Update),
}

/// What the loop's workers send it.
enum Inbox {
    Fs(Change),
    Refreshed(Box<RefreshUpdate>),
    ChildExited(PathBuf, Option<i32>),
    ModelLoaded(u64, Box<Result<super::model_state::ModelState, String>>),
    Activity(String),
    Interpolation(Update),
}

/// Runs the loop on `terminal` with terminal events from `events` until the user quits, the
/// event stream ends (the terminal is gone), a signal arrives (with `options.signals`) or the
/// parent process goes away (with `options.follow_parent`).
pub async fn drive<B, S>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    mut events: S,
    options: LoopOptions,
    mut observe: impl FnMut(&Note),
) -> Result<()>
where
    B: Backend,
    B::Error: Send + Sync + 'static,
    S: Stream<Item = io::Result<Event>> + Unpin,
{
    let (tx, mut inbox) = unbounded_channel::<Inbox>();
    app.background_io = true;
    let previous_progress =
        set_download_progress(Some(StatusProgress::new(send(&tx, Inbox::Activity))));
    let mut follower = Follower::new(options.poll_every, options.force_poll, send(&tx, Inbox::Fs))?;
    follower.follow(app);
    note_mode(app, &follower, &mut observe);
    let refresher = Refresher::start(send(&tx, |u: RefreshUpdate| Inbox::Refreshed(Box::new(u))));
    let mut signals = options.signals.then(Signals::new).transpose()?;
    let mut tick = tokio::time::interval(options.tick);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let parent = parent_pid();
    let (mut dirty, mut keys) = (true, 0u64);
    let (mut in_flight, mut wanted, mut last_request) = (false, true, None::<RefreshRequest>);
    let result = loop {
        start_background_work(app, &tx);
        if app.should_quit {
            break Ok(());
        }
        let request = app.refresh_request();
        wanted |= last_request.as_ref() != Some(&request);
        if wanted && !in_flight && refresher.request(request.clone()) {
            (in_flight, wanted, last_request) = (true, false, Some(request));
        }
        if dirty {
            if let Err(e) = terminal.draw(|frame| ui::draw(frame, app)) {
                break Err(e.into());
            }
            observe(&Note::Drawn { keys });
            dirty = false;
        }
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(Event::Key(key))) if key.kind != KeyEventKind::Release => {
                    app.handle_key(key);
                    keys += 1;
                    dirty = true;
                    follower.follow(app);
                }
                Some(Ok(Event::Resize(_, _))) => dirty = true,
                Some(Ok(_)) => {}
                // The terminal is gone.
                Some(Err(_)) | None => break Ok(()),
            },
            Some(message) = inbox.recv() => match message {
                Inbox::Fs(Change::Paths(paths)) => wanted |= follower.concerns(app, &paths),
                Inbox::Fs(Change::Failed(reason)) => {
                    follower.fall_back(reason);
                    note_mode(app, &follower, &mut observe);
                    wanted = true;
                }
                Inbox::Refreshed(update) => {
                    in_flight = false;
                    let changed = app.apply_refresh(*update);
                    dirty |= changed;
                    observe(&Note::Refreshed { changed });
                }
                Inbox::ChildExited(run, code) => {
                    say_exit(app, &run, code);
                    observe(&Note::ChildExited { run, code });
                    (dirty, wanted) = (true, true);
                }
                Inbox::ModelLoaded(generation, result) => {
                    dirty |= app.model_loaded(generation, *result);
                }
                Inbox::Interpolation(update) => {
                    observe(&Note::Interpolation(update.clone()));
                    dirty |= app.interpolation_update(update);
                }
                Inbox::Activity(line) => {
                    app.activity = Some(line);
                    dirty = true;
                }
            },
            name = Signals::next(&mut signals) => {
                observe(&Note::Signal(name));
                break Ok(());
            }
            _ = tick.tick() => {
                if options.follow_parent && parent_pid() != parent {
                    break Ok(());
                }
                follower.follow(app);
                dirty = true;
            }
        }
    };
    set_download_progress(previous_progress);
    app.background_io = false;
    result
}

/// A sender that wraps each value into an inbox message.
fn send<T>(tx: &UnboundedSender<Inbox>, wrap: fn(T) -> Inbox) -> impl Fn(T) + Send + Sync + 'static
where
    T: 'static,
{
    let tx = tx.clone();
    move |value| {
        let _ = tx.send(wrap(value));
    }
}

/// Tells how a launched worker ended.
fn say_exit(app: &mut App, run: &std::path::Path, code: Option<i32>) {
    let how = code.map_or("by a signal".to_string(), |c| format!("with code {c}"));
    let level = if code == Some(0) {
        Level::Info
    } else {
        Level::Warn
    };
    app.say(
        format!("the worker of {} exited {how}", run_name(run)),
        level,
    );
}

/// Starts what key handling asked for: waiting on launched workers, opening a model, an
/// interpolation worker.
fn start_background_work(app: &mut App, tx: &UnboundedSender<Inbox>) {
    if let Some(start) = app.pending_interpolation.take() {
        let report = send(tx, Inbox::Interpolation);
        // A plain thread: the worker blocks on its job queue and on the model.
        std::thread::spawn(move || interpolation::work(start, report));
    }
    for (run, mut child) in app.children.drain(..) {
        let tx = tx.clone();
        // A plain thread, not a runtime task: a worker outlives the workbench.
        std::thread::spawn(move || {
            let code = child.wait().ok().and_then(|s| s.code());
            let _ = tx.send(Inbox::ChildExited(run, code));
        });
    }
    if let Some(request) = app.pending_model.take() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let result = request.open();
            let _ = tx.send(Inbox::ModelLoaded(request.generation, Box::new(result)));
        });
    }
}

/// Shows polling in the status line (notifications need no mention) and reports the mode.
fn note_mode(app: &mut App, follower: &Follower, observe: &mut impl FnMut(&Note)) {
    let mode = follower.mode();
    app.follow_note = match &mode {
        Mode::Notify => None,
        Mode::Polling { every, .. } => {
            Some(format!("polling runs every {:.1} s", every.as_secs_f64()))
        }
    };
    if let Mode::Polling { reason, .. } = &mode {
        app.say(
            format!("following run directories by polling: {reason}"),
            Level::Warn,
        );
    }
    observe(&Note::Following(mode));
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
