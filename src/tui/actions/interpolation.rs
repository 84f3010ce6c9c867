//! The interpolation view of a finished run (Dashboard tab, `W`): move α, score points on the
//! worker, write a point out as a model.

use crate::run::{RunDir, RunState};
use crate::tui::app::{run_name, App, Dialog, InputPurpose, Level};
use crate::tui::interpolation::{alpha_at, grid_index, InterpolationView, Update, ALPHAS};
use crate::tui::keymap::Action;

impl App {
    /// Opens the interpolation view of the attached run, which must have finished.
    pub(super) fn open_interpolation(&mut self) {
        let Some(path) = self.attached.as_ref().map(|r| r.run().path().to_path_buf()) else {
            self.say(
                "no run attached: pick a finished run on the Runs tab",
                Level::Warn,
            );
            return;
        };
        let state = RunDir::open(&path)
            .and_then(|r| r.read_status())
            .map(|s| s.state);
        match state {
            Ok(RunState::Finished) => {}
            Ok(state) => {
                self.say(
                    format!(
                        "{} is {}: interpolation needs a finished run",
                        run_name(&path),
                        state.as_str()
                    ),
                    Level::Warn,
                );
                return;
            }
            Err(e) => return self.say(format!("{e:#}"), Level::Error),
        }
        if !self.background_io {
            self.say("interpolation needs the workbench loop", Level::Error);
            return;
        }
        let (mut view, start) = InterpolationView::open(&path);
        // The two ends first: they frame the curve.
        view.request(0);
        view.request(ALPHAS - 1);
        self.activity = Some(format!("opening {} for interpolation", run_name(&path)));
        self.pending_interpolation = Some(start);
        self.interpolation = Some(view);
    }

    /// Applies an action while the interpolation view is open.
    pub(super) fn interpolation_action(&mut self, action: Action) {
        let Some(view) = self.interpolation.as_mut() else {
            return;
        };
        match action {
            Action::Left | Action::Up => view.cursor = view.cursor.saturating_sub(1),
            Action::Right | Action::Down => view.cursor = (view.cursor + 1).min(ALPHAS - 1),
            Action::Top => view.cursor = 0,
            Action::Bottom => view.cursor = ALPHAS - 1,
            Action::Edit => {
                let i = view.cursor;
                view.request(i);
            }
            Action::ScoreAll => view.request_all(),
            Action::WriteModel => {
                let alpha = view.best().unwrap_or_else(|| view.alpha());
                let out = view
                    .run
                    .join("interpolation")
                    .join(format!("model-alpha-{alpha:.1}"));
                self.dialog = Some(Dialog::Input {
                    title: format!("write the model at α {alpha:.1} to"),
                    text: out.display().to_string(),
                    purpose: InputPurpose::WriteInterpolated(grid_index(alpha)),
                    error: None,
                });
            }
            _ => {}
        }
    }

    /// Sends the write of the model at `alpha` to the worker.
    pub(crate) fn write_interpolated(&mut self, grid: usize, out: &str) {
        let (alpha, out) = (alpha_at(grid), out.trim());
        if out.is_empty() {
            return self.say("no directory given: nothing written", Level::Warn);
        }
        match self.interpolation.as_mut() {
            Some(view) if view.write(alpha, out.into()) => self.say(
                format!("writing the model at α {alpha:.1} to {out}"),
                Level::Info,
            ),
            _ => self.say("the interpolation view is closed", Level::Warn),
        }
    }

    /// Applies a report of the interpolation worker; true when the screen changed.
    pub fn interpolation_update(&mut self, update: Update) -> bool {
        match &update {
            Update::Opened(_) | Update::Failed(..) => self.activity = None,
            Update::Written(_, alpha, out) => self.say(
                format!("wrote the model at α {alpha:.1} to {}", out.display()),
                Level::Info,
            ),
            Update::Scored(..) => {}
        }
        if let Update::Failed(_, why) = &update {
            self.say(why.clone(), Level::Error);
        }
        match self.interpolation.as_mut() {
            Some(view) => view.apply(&update),
            None => false,
        }
    }

    /// The α of the cursor, for tests and the status line.
    pub fn interpolation_alpha(&self) -> Option<f64> {
        self.interpolation.as_ref().map(|v| alpha_at(v.cursor))
    }
}
