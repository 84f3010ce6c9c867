//! Recipe tab: move between fields, edit one (a choice cycles, text opens an input line), save,
//! save as, and open a recipe from `./recipes`.

use std::path::{Path, PathBuf};

use crate::recipe::Recipe;
use crate::tui::app::{App, Dialog, InputPurpose, Level};
use crate::tui::keymap::Action;
use crate::tui::recipe_form::{cycle, field_text, save_preserving_order, FieldKind, FIELDS};

impl App {
    /// Applies a Recipe-tab action.
    pub(super) fn recipe_action(&mut self, action: Action) {
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

    /// Replaces the recipe after `key` changed, re-listing runs or reopening the model when
    /// that key affects them.
    pub(crate) fn set_recipe(&mut self, recipe: Recipe, key: &str) {
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

    /// Saves the recipe to `path`, keeping its field order.
    pub(crate) fn save_to(&mut self, path: &Path) {
        match save_preserving_order(&self.recipe, path) {
            Ok(()) => {
                self.recipe_path = Some(path.to_path_buf());
                self.recipe_dirty = false;
                self.say(format!("saved {}", path.display()), Level::Info);
            }
            Err(e) => self.say(format!("{e:#}"), Level::Error),
        }
    }

    /// Opens the recipe at `path`, keeping the current model and data when it leaves them open.
    pub(crate) fn open_recipe(&mut self, path: &Path) {
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
                self.recipe_path = Some(path.to_path_buf());
                self.recipe_dirty = false;
                self.reload_model();
                self.say(format!("opened {}", path.display()), Level::Info);
            }
            Err(e) => self.say(format!("{e:#}"), Level::Error),
        }
    }
}
