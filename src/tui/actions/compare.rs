//! Compare tab: move over the runs and attach the dashboard to one.

use crate::tui::app::{App, Level};
use crate::tui::keymap::Action;

impl App {
    /// Applies a Compare-tab action.
    pub(super) fn compare_action(&mut self, action: Action) {
        let count = self.runs.len();
        match action {
            Action::Up => self.compare_cursor = self.compare_cursor.saturating_sub(1),
            Action::Down => {
                self.compare_cursor = (self.compare_cursor + 1).min(count.saturating_sub(1))
            }
            Action::Attach => {
                if let Some(path) = self.run_path_at(self.compare_cursor) {
                    if let Err(e) = self.attach(&path) {
                        self.say(format!("{e:#}"), Level::Error);
                    }
                }
            }
            _ => {}
        }
    }
}
