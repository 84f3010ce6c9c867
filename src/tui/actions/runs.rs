//! Runs tab: move over the list, attach the dashboard to a run, or stop one (after asking).

use std::path::PathBuf;

use crate::tui::app::{run_name, App, Confirmed, Dialog, Level};
use crate::tui::keymap::Action;

impl App {
    /// Applies a Runs-tab action.
    pub(super) fn runs_action(&mut self, action: Action) {
        let count = self.runs.len();
        match action {
            Action::Up => self.run_cursor = self.run_cursor.saturating_sub(1),
            Action::Down => self.run_cursor = (self.run_cursor + 1).min(count.saturating_sub(1)),
            Action::Top => self.run_cursor = 0,
            Action::Bottom => self.run_cursor = count.saturating_sub(1),
            Action::Attach => {
                if let Some(path) = self.run_path_at(self.run_cursor) {
                    if let Err(e) = self.attach(&path) {
                        self.say(format!("{e:#}"), Level::Error);
                    }
                }
            }
            Action::Stop => {
                if let Some(path) = self.run_path_at(self.run_cursor) {
                    self.confirm_stop(path);
                }
            }
            _ => {}
        }
    }

    /// Asks before stopping the run at `path`.
    pub(super) fn confirm_stop(&mut self, path: PathBuf) {
        self.dialog = Some(Dialog::Confirm {
            message: format!(
                "stop {} after its current step (it checkpoints first)? (y/n)",
                run_name(&path)
            ),
            yes: Confirmed::Stop(path),
        });
    }
}
