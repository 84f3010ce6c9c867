//! What each action does to the workbench: global ones (quit, help, tabs, theme, launch) here,
//! the rest in one module per tab. Actions come from the keymap ([`super::keymap`]); nothing
//! here reads keys or touches the terminal.

mod compare;
mod dashboard;
mod interpolation;
mod model;
mod recipe;
mod runs;

use super::app::{run_name, App, Confirmed, Dialog, Level, Tab};
use super::keymap::Action;
use super::launch::launch_detached;

impl App {
    /// Applies an action to the current pane.
    pub fn apply(&mut self, action: Action) {
        match action {
            Action::Quit => match self.launched_still_running() {
                Some(path) => {
                    self.dialog = Some(Dialog::Confirm {
                        message: format!(
                            "{} is still training and keeps running after you quit. Quit? (y/n)",
                            run_name(&path)
                        ),
                        yes: Confirmed::Quit,
                    })
                }
                None => self.should_quit = true,
            },
            Action::Help => self.help = true,
            Action::Escape => {
                // Closing the view drops its job queue: the worker ends after its current job.
                if self.context() == super::keymap::Context::Interpolation {
                    self.interpolation = None;
                }
                self.dash_zoom = None;
                if let Some(m) = &mut self.model {
                    m.filter.clear();
                }
            }
            Action::NextTab => self.tab = Tab::ALL[(self.tab_index() + 1) % Tab::ALL.len()],
            Action::PrevTab => {
                self.tab = Tab::ALL[(self.tab_index() + Tab::ALL.len() - 1) % Tab::ALL.len()]
            }
            Action::Tab(i) => self.tab = Tab::ALL[i.min(Tab::ALL.len() - 1)],
            Action::CycleTheme => {
                self.theme_index = (self.theme_index + 1) % self.themes.len();
                let name = self.theme().name.clone();
                self.say(format!("theme: {name}"), Level::Info);
            }
            Action::Launch => self.launch(),
            _ => match self.tab {
                Tab::Model => self.model_action(action),
                Tab::Recipe => self.recipe_action(action),
                Tab::Runs => self.runs_action(action),
                Tab::Dashboard if self.interpolation.is_some() => self.interpolation_action(action),
                Tab::Dashboard => self.dashboard_action(action),
                Tab::Compare => self.compare_action(action),
            },
        }
    }

    fn tab_index(&self) -> usize {
        Tab::ALL.iter().position(|t| *t == self.tab).unwrap_or(0)
    }

    /// Launches the recipe as a detached run and attaches the dashboard to it.
    fn launch(&mut self) {
        if let Some(problem) = self.model.as_ref().and_then(|m| m.problem.clone()) {
            self.say(format!("cannot launch: {problem}"), Level::Error);
            return;
        }
        match launch_detached(&self.recipe) {
            Ok((run, child)) => {
                let path = run.path().to_path_buf();
                self.launched.push(path.clone());
                self.children.push((path.clone(), child));
                self.last_scan = None;
                if let Err(e) = self.attach(&path) {
                    self.say(format!("{e:#}"), Level::Error);
                } else {
                    self.say(format!("launched {}", run_name(&path)), Level::Info);
                }
            }
            Err(e) => self.say(format!("cannot launch: {e:#}"), Level::Error),
        }
    }
}
