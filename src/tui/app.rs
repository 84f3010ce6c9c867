//! The workbench's state and what each key does to it. Drawing lives in `ui`; nothing here
//! touches the terminal.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{KeyCode, KeyEvent};

use super::keymap::{action_for, Action, Context};
use super::launch::{launch_detached, stop_run};
use super::model_state::ModelState;
use super::panes::compare::CompareRow;
use super::panes::dashboard::DashPanel;
use super::panes::runs::RunRow;
use super::recipe_form::{cycle, field_text, save_preserving_order, set_field, FieldKind, FIELDS};
use super::theme::Theme;
use crate::recipe::Recipe;
use crate::run::reader::RunReader;
use crate::run::{list_runs, RunDir};

/// The panes, in tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Model,
    Recipe,
    Runs,
    Dashboard,
    Compare,
}

impl Tab {
    pub const ALL: [Tab; 5] = [
        Tab::Model,
        Tab::Recipe,
        Tab::Runs,
        Tab::Dashboard,
        Tab::Compare,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Tab::Model => "Model",
            Tab::Recipe => "Recipe",
            Tab::Runs => "Runs",
            Tab::Dashboard => "Dashboard",
            Tab::Compare => "Compare",
        }
    }

    fn context(self) -> Context {
        match self {
            Tab::Model => Context::Model,
            Tab::Recipe => Context::Recipe,
            Tab::Runs => Context::Runs,
            Tab::Dashboard => Context::Dashboard,
            Tab::Compare => Context::Compare,
        }
    }
}

/// What an input line is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputPurpose {
    Field(usize),
    SaveAs,
    Filter,
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

/// How a status message is coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// One run known to the workbench.
pub struct RunEntry {
    pub reader: RunReader,
    pub recipe: String,
}

/// All state of the workbench.
pub struct App {
    pub tab: Tab,
    pub themes: Vec<Theme>,
    pub theme_index: usize,
    pub help: bool,
    pub dialog: Option<Dialog>,
    pub message: Option<(String, Level)>,
    pub model: Option<ModelState>,
    pub model_error: Option<String>,
    pub recipe: Recipe,
    pub recipe_path: Option<PathBuf>,
    pub recipe_dirty: bool,
    pub field: usize,
    pub runs_root: PathBuf,
    pub runs: BTreeMap<PathBuf, RunEntry>,
    pub run_cursor: usize,
    pub compare_cursor: usize,
    pub attached: Option<RunReader>,
    pub dash_focus: DashPanel,
    pub dash_zoom: Option<DashPanel>,
    /// Runs started from this workbench (quit asks first while one still trains).
    pub launched: Vec<PathBuf>,
    pub should_quit: bool,
    last_scan: Option<Instant>,
}

impl App {
    /// A workbench on `recipe` (its model is opened for the Model pane).
    pub fn new(
        recipe: Recipe,
        recipe_path: Option<PathBuf>,
        themes: Vec<Theme>,
        theme_index: usize,
    ) -> Self {
        let runs_root = PathBuf::from(&recipe.output_dir);
        let mut app = Self {
            tab: Tab::Model,
            themes,
            theme_index,
            help: false,
            dialog: None,
            message: None,
            model: None,
            model_error: None,
            recipe,
            recipe_path,
            recipe_dirty: false,
            field: 0,
            runs_root,
            runs: BTreeMap::new(),
            run_cursor: 0,
            compare_cursor: 0,
            attached: None,
            dash_focus: DashPanel::Loss,
            dash_zoom: None,
            launched: Vec::new(),
            should_quit: false,
            last_scan: None,
        };
        app.reload_model();
        app
    }

    /// The active theme.
    pub fn theme(&self) -> &Theme {
        &self.themes[self.theme_index % self.themes.len()]
    }

    fn dtype_bytes(&self) -> usize {
        if self.recipe.dtype == "bf16" {
            2
        } else {
            4
        }
    }

    /// (Re)opens the recipe's model for the Model pane.
    pub fn reload_model(&mut self) {
        self.model = None;
        self.model_error = None;
        let Some(spec) = self.recipe.model.clone() else {
            self.model_error =
                Some("the recipe names no model: set `model` on the Recipe tab".into());
            return;
        };
        match ModelState::open(
            &spec,
            &self.recipe.trainable,
            self.recipe.batch_size,
            self.recipe.max_length,
            self.dtype_bytes(),
        ) {
            Ok(state) => self.model = Some(state),
            Err(e) => self.model_error = Some(format!("{e:#}")),
        }
    }

    /// Attaches the dashboard to a run directory.
    pub fn attach(&mut self, dir: &Path) -> anyhow::Result<()> {
        let mut reader = RunReader::new(RunDir::open(dir)?);
        reader.refresh();
        self.attached = Some(reader);
        self.tab = Tab::Dashboard;
        Ok(())
    }

    fn say(&mut self, text: impl Into<String>, level: Level) {
        self.message = Some((text.into(), level));
    }

    /// Re-reads run directories; returns whether anything visible changed.
    pub fn refresh(&mut self) -> bool {
        let mut changed = false;
        if let Some(reader) = &mut self.attached {
            changed |= reader.refresh();
        }
        let due = self
            .last_scan
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if due && matches!(self.tab, Tab::Runs | Tab::Compare) || self.last_scan.is_none() {
            self.last_scan = Some(Instant::now());
            let dirs = list_runs(&self.runs_root);
            let before = self.runs.len();
            self.runs
                .retain(|path, _| dirs.iter().any(|d| d.path() == path));
            for dir in dirs {
                let path = dir.path().to_path_buf();
                let entry = self.runs.entry(path).or_insert_with(|| RunEntry {
                    recipe: dir.read_recipe().map(|r| r.name).unwrap_or_default(),
                    reader: RunReader::new(dir),
                });
                changed |= entry.reader.refresh();
            }
            changed |= before != self.runs.len();
        }
        changed
    }

    /// Rows of the Runs pane, newest first.
    pub fn run_rows(&self) -> Vec<RunRow> {
        self.runs
            .iter()
            .rev()
            .map(|(path, e)| RunRow::from_snapshot(&run_name(path), e.reader.snapshot()))
            .collect()
    }

    /// Rows of the Compare pane, newest first.
    pub fn compare_rows(&self) -> Vec<CompareRow> {
        self.runs
            .iter()
            .rev()
            .map(|(path, e)| {
                CompareRow::from_snapshot(&run_name(path), &e.recipe, e.reader.snapshot())
            })
            .collect()
    }

    fn run_path_at(&self, index: usize) -> Option<PathBuf> {
        self.runs.keys().rev().nth(index).cloned()
    }

    /// Whether a run launched here is still training.
    pub fn launched_still_running(&self) -> Option<PathBuf> {
        self.launched
            .iter()
            .find(|p| {
                RunDir::open(p)
                    .and_then(|r| r.read_status())
                    .map(|s| {
                        !s.state.is_terminal() && s.pid.is_some_and(crate::util::process::pid_alive)
                    })
                    .unwrap_or(false)
            })
            .cloned()
    }

    /// Handles one key press.
    pub fn handle_key(&mut self, key: KeyEvent) {
        if let Some(dialog) = self.dialog.take() {
            self.handle_dialog_key(dialog, key);
            return;
        }
        if self.help {
            if matches!(
                key.code,
                KeyCode::Esc | KeyCode::Char('?') | KeyCode::Char('q')
            ) {
                self.help = false;
            }
            return;
        }
        let Some(action) = action_for(key, self.tab.context()) else {
            return;
        };
        self.message = None;
        self.apply(action);
    }

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
                Tab::Dashboard => self.dashboard_action(action),
                Tab::Compare => self.compare_action(action),
            },
        }
    }

    fn tab_index(&self) -> usize {
        Tab::ALL.iter().position(|t| *t == self.tab).unwrap_or(0)
    }

    fn model_action(&mut self, action: Action) {
        let Some(model) = &mut self.model else { return };
        let mut changed = true;
        match action {
            Action::Up => model.move_cursor(-1, 0),
            Action::Down => model.move_cursor(1, 0),
            Action::Left if model.tree_view => model.toggle_collapse(Some(true)),
            Action::Right if model.tree_view => model.toggle_collapse(Some(false)),
            Action::Left => model.move_cursor(0, -1),
            Action::Right => model.move_cursor(0, 1),
            Action::PageUp => model.move_cursor(-10, 0),
            Action::PageDown => model.move_cursor(10, 0),
            Action::Top => model.jump(false),
            Action::Bottom => model.jump(true),
            Action::ToggleTree => model.tree_view = !model.tree_view,
            Action::Filter => {
                model.tree_view = true;
                self.dialog = Some(Dialog::Input {
                    title: "filter the module tree".into(),
                    text: model.filter.clone(),
                    purpose: InputPurpose::Filter,
                    error: None,
                });
            }
            Action::ToggleCell => model.toggle_cell(),
            Action::ToggleColumn => model.toggle_column(),
            Action::ToggleRow => model.toggle_row(),
            Action::Invert => model.invert(),
            Action::NextPreset => {
                let name = model.next_preset();
                self.say(
                    format!("preset: {}", name.unwrap_or("none fits this model")),
                    Level::Info,
                );
            }
            _ => changed = false,
        }
        if changed
            && matches!(
                action,
                Action::ToggleCell
                    | Action::ToggleColumn
                    | Action::ToggleRow
                    | Action::Invert
                    | Action::NextPreset
            )
        {
            self.write_back_selection();
        }
    }

    /// Writes the grid's selection into the recipe's `trainable` section.
    fn write_back_selection(&mut self) {
        let (batch, seq, bytes) = (
            self.recipe.batch_size,
            self.recipe.max_length,
            self.dtype_bytes(),
        );
        let Some(model) = &mut self.model else { return };
        model.update_memory(batch, seq, bytes);
        if let Some(spec) = model.trainable_spec() {
            self.recipe.trainable = spec;
            self.recipe_dirty = true;
        }
    }

    fn recipe_action(&mut self, action: Action) {
        match action {
            Action::Up => self.field = self.field.saturating_sub(1),
            Action::Down => self.field = (self.field + 1).min(FIELDS.len() - 1),
            Action::PageUp => self.field = self.field.saturating_sub(10),
            Action::PageDown => self.field = (self.field + 10).min(FIELDS.len() - 1),
            Action::Top => self.field = 0,
            Action::Bottom => self.field = FIELDS.len() - 1,
            Action::Edit => {
                let field = &FIELDS[self.field];
                if let FieldKind::Choice(_) = field.kind {
                    match cycle(&self.recipe, field) {
                        Ok(recipe) => self.set_recipe(recipe, field.key),
                        Err(e) => self.say(format!("{e:#}"), Level::Error),
                    }
                } else {
                    self.dialog = Some(Dialog::Input {
                        title: format!("{} ({})", field.label, field.key),
                        text: field_text(&self.recipe, field),
                        purpose: InputPurpose::Field(self.field),
                        error: None,
                    });
                }
            }
            Action::Save => match self.recipe_path.clone() {
                Some(path) => self.save_to(&path),
                None => self.apply(Action::SaveAs),
            },
            Action::SaveAs => {
                let text = self
                    .recipe_path
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| format!("recipes/{}.yaml", self.recipe.name));
                self.dialog = Some(Dialog::Input {
                    title: "save recipe as".into(),
                    text,
                    purpose: InputPurpose::SaveAs,
                    error: None,
                });
            }
            Action::Open => {
                let mut items: Vec<PathBuf> = std::fs::read_dir("recipes")
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
                    .collect();
                items.sort();
                if items.is_empty() {
                    self.say("no recipes in ./recipes", Level::Warn);
                } else {
                    self.dialog = Some(Dialog::Picker {
                        title: "open a recipe".into(),
                        items,
                        selected: 0,
                    });
                }
            }
            _ => {}
        }
    }

    fn set_recipe(&mut self, recipe: Recipe, key: &str) {
        let reload = key == "model"
            || key.starts_with("trainable")
            || matches!(key, "batch_size" | "max_length" | "dtype");
        self.recipe = recipe;
        self.recipe_dirty = true;
        if key == "output_dir" {
            self.runs_root = PathBuf::from(&self.recipe.output_dir);
            self.runs.clear();
            self.last_scan = None;
        }
        if reload {
            self.reload_model();
        }
    }

    fn save_to(&mut self, path: &Path) {
        match save_preserving_order(&self.recipe, path) {
            Ok(()) => {
                self.recipe_path = Some(path.to_path_buf());
                self.recipe_dirty = false;
                self.say(format!("saved {}", path.display()), Level::Info);
            }
            Err(e) => self.say(format!("{e:#}"), Level::Error),
        }
    }

    fn launch(&mut self) {
        if let Some(problem) = self.model.as_ref().and_then(|m| m.problem.clone()) {
            self.say(format!("cannot launch: {problem}"), Level::Error);
            return;
        }
        match launch_detached(&self.recipe) {
            Ok(run) => {
                let path = run.path().to_path_buf();
                self.launched.push(path.clone());
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

    fn runs_action(&mut self, action: Action) {
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

    fn confirm_stop(&mut self, path: PathBuf) {
        self.dialog = Some(Dialog::Confirm {
            message: format!(
                "stop {} after its current step (it checkpoints first)? (y/n)",
                run_name(&path)
            ),
            yes: Confirmed::Stop(path),
        });
    }

    fn dashboard_action(&mut self, action: Action) {
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

    fn compare_action(&mut self, action: Action) {
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

    fn handle_dialog_key(&mut self, dialog: Dialog, key: KeyEvent) {
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
                        match Recipe::load(path, &[]) {
                            Ok(recipe) => {
                                let keep_model = self.recipe.model.clone();
                                let keep_data = self.recipe.data.clone();
                                self.recipe = recipe;
                                // Shipped recipes leave model and data open: keep the current ones.
                                if self.recipe.model.is_none() {
                                    self.recipe.model = keep_model;
                                }
                                if self.recipe.data.is_none() {
                                    self.recipe.data = keep_data;
                                }
                                self.recipe_path = Some(path.clone());
                                self.recipe_dirty = false;
                                self.reload_model();
                                self.say(format!("opened {}", path.display()), Level::Info);
                            }
                            Err(e) => self.say(format!("{e:#}"), Level::Error),
                        }
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

/// A run directory's display name.
pub fn run_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}
