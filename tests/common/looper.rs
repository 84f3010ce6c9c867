//! The workbench loop driven on a test backend from a thread of its own: keys go in, the loop's
//! notes come out, and stopping hands back the App and the screen.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use tunescope::recipe::Recipe;
use tunescope::tui::theme::Theme;
use tunescope::tui::{drive, App, LoopOptions, Note};

/// The running loop: its notes, and a way to end it and get the App and screen back.
pub struct Looper {
    pub notes: mpsc::Receiver<Note>,
    keys: Option<tokio::sync::mpsc::UnboundedSender<Event>>,
    handle: std::thread::JoinHandle<(App, Terminal<TestBackend>)>,
}

impl Looper {
    pub fn start(root: &Path, attach: Option<&Path>, options: LoopOptions) -> Self {
        let recipe = Recipe {
            output_dir: root.display().to_string(),
            ..Recipe::default()
        };
        let mut app = App::new(recipe, None, vec![Theme::dark()], 0);
        if let Some(run) = attach {
            app.attach(run).unwrap();
        }
        Self::start_app(app, options)
    }

    pub fn start_app(mut app: App, options: LoopOptions) -> Self {
        let (note_tx, notes) = mpsc::channel();
        let (keys, mut key_rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
        let handle = std::thread::spawn(move || {
            let mut terminal = Terminal::new(TestBackend::new(120, 30)).unwrap();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let events =
                futures_util::stream::poll_fn(move |cx| key_rx.poll_recv(cx).map(|e| e.map(Ok)));
            runtime
                .block_on(drive(&mut terminal, &mut app, events, options, |note| {
                    let _ = note_tx.send(note.clone());
                }))
                .unwrap();
            (app, terminal)
        });
        Self {
            notes,
            keys: Some(keys),
            handle,
        }
    }

    /// Waits (at most a minute, as a hang guard) for a note matching `wanted`.
    pub fn wait_for(&self, what: &str, wanted: impl Fn(&Note) -> bool) -> Note {
        loop {
            match self.notes.recv_timeout(Duration::from_secs(60)) {
                Ok(note) if wanted(&note) => return note,
                Ok(_) => {}
                Err(e) => panic!("no {what}: {e}"),
            }
        }
    }

    /// Sends a key press.
    pub fn key(&self, code: KeyCode) {
        let event = Event::Key(KeyEvent::new(code, KeyModifiers::NONE));
        self.keys.as_ref().unwrap().send(event).unwrap();
    }

    pub fn stop(mut self) -> (App, Terminal<TestBackend>) {
        self.keys.take();
        self.handle.join().unwrap()
    }
}

/// What the screen shows, as one string.
pub fn screen_text(terminal: &Terminal<TestBackend>) -> String {
    terminal
        .backend()
        .buffer()
        .content()
        .iter()
        .map(|c| c.symbol())
        .collect()
}
