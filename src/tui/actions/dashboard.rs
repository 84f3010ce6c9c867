//! Dashboard tab: zoom the focused panel, move focus to the next one, stop the attached run.

use crate::tui::app::{App, Level};
use crate::tui::keymap::Action;

impl App {
    /// Applies a Dashboard-tab action.
    pub(super) fn dashboard_action(&mut self, action: Action) {
        match action {
            Action::Zoom => {
                self.dash_zoom = if self.dash_zoom.is_some() {
                    None
                } else {
                    Some(self.dash_focus)
                }
            }
            Action::NextPanel | Action::Right | Action::Down => {
                self.dash_focus = self.dash_focus.next();
                if self.dash_zoom.is_some() {
                    self.dash_zoom = Some(self.dash_focus);
                }
            }
            Action::Interpolate => self.open_interpolation(),
            Action::Stop => {
                if let Some(path) = self.attached.as_ref().map(|r| r.run().path().to_path_buf()) {
                    self.confirm_stop(path);
                } else {
                    self.say("no run attached: pick one on the Runs tab", Level::Warn);
                }
            }
            _ => {}
        }
    }
}
