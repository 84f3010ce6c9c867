//! The workbench's state and where a key goes: to the open dialog ([`super::dialog`]), the help
//! overlay, or through the keymap to an action ([`super::actions`], one module per tab). Drawing
//! lives in `ui`; nothing here touches the terminal.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{KeyCode, KeyEvent};

pub use super::dialog::{Confirmed, Dialog, InputPurpose};
use super::interpolation::{InterpolationView, WorkerStart};
use super::keymap::{action_for, Context};
use super::loading::ModelRequest;
use super::model_state::ModelState;
use super::panes::compare::CompareRow;
use super::panes::dashboard::DashPanel;
use super::panes::runs::RunRow;
use super::theme::Theme;
use crate::plan::StepShape;
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

/// How a status message is coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// One run known to the workbench.
#[derive(Clone)]
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
    /// When run directories were last listed (`None`: list them at the next refresh).
    pub(crate) last_scan: Option<Instant>,
    /// Set by the event loop: slow reads and model loads are left to its workers instead of
    /// being done on the spot.
    pub background_io: bool,
    /// Workers of runs launched here, for the loop to wait on.
    pub children: Vec<(PathBuf, Child)>,
    /// A model open the loop should start (with `background_io`).
    pub pending_model: Option<ModelRequest>,
    pub(crate) model_generation: u64,
    /// What is going on in the background (a model load, a download), for the status line.
    pub activity: Option<String>,
    /// How run directories are followed when it is not by notifications (shown in the status line).
    pub follow_note: Option<String>,
    /// The interpolation view of a finished run, over the Dashboard while open.
    pub interpolation: Option<InterpolationView>,
    /// An interpolation worker the loop should start.
    pub pending_interpolation: Option<WorkerStart>,
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
            background_io: false,
            children: Vec::new(),
            pending_model: None,
            model_generation: 0,
            activity: None,
            follow_note: None,
            interpolation: None,
            pending_interpolation: None,
        };
        app.reload_model();
        app
    }

    /// The active theme.
    pub fn theme(&self) -> &Theme {
        &self.themes[self.theme_index % self.themes.len()]
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
        self.model_generation += 1;
        let request = ModelRequest {
            generation: self.model_generation,
            spec,
            trainable: self.recipe.trainable.clone(),
            shape: StepShape::of(&self.recipe),
        };
        if self.background_io {
            self.activity = Some(format!("opening {}", request.spec));
            self.pending_model = Some(request);
        } else {
            self.model_loaded(request.generation, request.open());
        }
    }

    /// Attaches the dashboard to a run directory.
    pub fn attach(&mut self, dir: &Path) -> anyhow::Result<()> {
        let mut reader = RunReader::new(RunDir::open(dir)?);
        if !self.background_io {
            reader.refresh();
        }
        self.attached = Some(reader);
        self.tab = Tab::Dashboard;
        Ok(())
    }

    /// Where keys apply now: the tab's context, or the interpolation view over the Dashboard.
    pub fn context(&self) -> Context {
        match self.tab {
            Tab::Dashboard if self.interpolation.is_some() => Context::Interpolation,
            tab => tab.context(),
        }
    }

    pub(crate) fn say(&mut self, text: impl Into<String>, level: Level) {
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

    pub(crate) fn run_path_at(&self, index: usize) -> Option<PathBuf> {
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
        let Some(action) = action_for(key, self.context()) else {
            return;
        };
        self.message = None;
        self.apply(action);
    }
}

/// A run directory's display name (`<sequence>/<k>-<stage>` for a stage of a sequence).
pub fn run_name(path: &Path) -> String {
    crate::run::sequence::display_name(path)
}
