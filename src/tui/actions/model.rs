//! Model tab: move over the layer × projection grid or the module tree, toggle trainability by
//! cell, column, row or preset, filter the tree; every change is written back to the recipe.

use crate::plan::StepShape;
use crate::tui::app::{App, Dialog, InputPurpose, Level};
use crate::tui::keymap::Action;

impl App {
    /// Applies a Model-tab action.
    pub(super) fn model_action(&mut self, action: Action) {
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
        let shape = StepShape::of(&self.recipe);
        let Some(model) = &mut self.model else { return };
        model.update_memory(shape);
        if let Some(spec) = model.trainable_spec() {
            self.recipe.trainable = spec;
            self.recipe_dirty = true;
        }
    }
}
