//! Modal dialogs: a yes/no confirmation, a line of input, a list to pick from; what their keys
//! do and what happens when they are accepted. Drawing lives in `ui`.

use std::path::PathBuf;

use ratatui::crossterm::event::{KeyCode, KeyEvent};

use super::app::{run_name, App, Level};
use super::launch::stop_run;
use super::recipe_form::{set_field, FIELDS};
use crate::run::RunDir;

/// What an input line is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputPurpose {
    Field(usize),
    SaveAs,
    Filter,
    /// Where to write the interpolated model at this α grid index.
    WriteInterpolated(usize),
}

/// A modal dialog.
#[derive(Debug, Clone, PartialEq)]
pub enum Dialog {
    /// Yes/no question; `yes` is what happens on `y`.
    Confirm { message: String, yes: Confirmed },
    /// A line of text being typed, with the engine's complaint about the last attempt.
    Input {
        title: String,
        text: String,
        purpose: InputPurpose,
        error: Option<String>,
    },
    /// A list to choose from.
    Picker {
        title: String,
        items: Vec<PathBuf>,
        selected: usize,
    },
}

/// Actions that need a confirmation first.
#[derive(Debug, Clone, PartialEq)]
pub enum Confirmed {
    Quit,
    Stop(PathBuf),
}

impl App {
    /// Handles a key while `dialog` is open (it was taken out of the app; put back to stay).
    pub(crate) fn handle_dialog_key(&mut self, dialog: Dialog, key: KeyEvent) {
        match dialog {
            Dialog::Confirm { message, yes } => match key.code {
                KeyCode::Char('y') | KeyCode::Char('Y') => match yes {
                    Confirmed::Quit => self.should_quit = true,
                    Confirmed::Stop(path) => match RunDir::open(&path).and_then(|r| stop_run(&r)) {
                        Ok(()) => self.say(
                            format!("stopping {} (checkpoint first)", run_name(&path)),
                            Level::Info,
                        ),
                        Err(e) => self.say(format!("{e:#}"), Level::Error),
                    },
                },
                KeyCode::Char('n') | KeyCode::Char('N') | KeyCode::Esc => {}
                _ => self.dialog = Some(Dialog::Confirm { message, yes }),
            },
            Dialog::Picker {
                title,
                items,
                selected,
            } => match key.code {
                KeyCode::Esc => {}
                KeyCode::Up | KeyCode::Char('k') => {
                    self.dialog = Some(Dialog::Picker {
                        title,
                        items,
                        selected: selected.saturating_sub(1),
                    })
                }
                KeyCode::Down | KeyCode::Char('j') => {
                    let selected = (selected + 1).min(items.len().saturating_sub(1));
                    self.dialog = Some(Dialog::Picker {
                        title,
                        items,
                        selected,
                    });
                }
                KeyCode::Enter => {
                    if let Some(path) = items.get(selected) {
                        self.open_recipe(path);
                    }
                }
                _ => {
                    self.dialog = Some(Dialog::Picker {
                        title,
                        items,
                        selected,
                    })
                }
            },
            Dialog::Input {
                title,
                mut text,
                purpose,
                error,
            } => match key.code {
                KeyCode::Esc => {}
                KeyCode::Enter => self.submit_input(title, text, purpose),
                KeyCode::Backspace => {
                    text.pop();
                    self.dialog = Some(Dialog::Input {
                        title,
                        text,
                        purpose,
                        error,
                    });
                }
                KeyCode::Char(c) => {
                    text.push(c);
                    self.dialog = Some(Dialog::Input {
                        title,
                        text,
                        purpose,
                        error,
                    });
                }
                _ => {
                    self.dialog = Some(Dialog::Input {
                        title,
                        text,
                        purpose,
                        error,
                    })
                }
            },
        }
    }

    fn submit_input(&mut self, title: String, text: String, purpose: InputPurpose) {
        match purpose {
            InputPurpose::Filter => {
                if let Some(m) = &mut self.model {
                    m.filter = text;
                    m.tree_cursor = 0;
                }
            }
            InputPurpose::SaveAs => self.save_to(&PathBuf::from(text.trim())),
            InputPurpose::WriteInterpolated(grid) => self.write_interpolated(grid, &text),
            InputPurpose::Field(index) => {
                let field = &FIELDS[index];
                match set_field(&self.recipe, field, &text) {
                    Ok(recipe) => self.set_recipe(recipe, field.key),
                    // Stay in the editor with the engine's own message.
                    Err(e) => {
                        self.dialog = Some(Dialog::Input {
                            title,
                            text,
                            purpose,
                            error: Some(format!("{e:#}")),
                        })
                    }
                }
            }
        }
    }
}
