//! The Model pane's state: the module map, the trainable set being edited, and the layer ×
//! projection grid over it ([`super::model_grid`]). Every change is written back to the recipe's
//! `trainable` section.

use std::collections::{BTreeSet, HashSet};

use anyhow::Result;

use crate::model::module_map::{ModuleMap, ModuleNode};
use crate::model::{Model, ModelConfig};
use crate::plan::{estimate, MemoryEstimate, StepShape};
use crate::select::{self, compact::spec_for, TrainableSpec};

use super::model_grid::{CellState, Grid, GridCell};

/// A line of the flattened module tree.
#[derive(Debug, Clone, PartialEq)]
pub struct TreeLine {
    pub depth: usize,
    pub name: String,
    pub path: String,
    pub numel: usize,
    pub detail: String,
    pub has_children: bool,
    pub collapsed: bool,
    /// Parameter names below this line.
    pub names: Vec<String>,
}

/// The Model pane.
pub struct ModelState {
    pub spec: String,
    pub config: ModelConfig,
    pub map: ModuleMap,
    pub selected: BTreeSet<String>,
    pub grid: Grid,
    pub row: usize,
    pub col: usize,
    pub tree_view: bool,
    pub collapsed: HashSet<String>,
    pub filter: String,
    pub tree_cursor: usize,
    pub preset_index: usize,
    pub memory: MemoryEstimate,
    /// Why the selection cannot be written back, if it cannot.
    pub problem: Option<String>,
}

impl ModelState {
    /// Opens the model and resolves the recipe's selection on it.
    pub fn open(spec: &str, trainable: &TrainableSpec, shape: StepShape) -> Result<Self> {
        let model = Model::open(spec)?;
        let map = model.module_map();
        let (selected, problem) = match select::resolve(trainable, &map) {
            Ok(s) => (s.names, None),
            Err(e) => (BTreeSet::new(), Some(format!("{e:#}"))),
        };
        let grid = Grid::build(&map);
        let mut collapsed = HashSet::new();
        collapse_layers(&map.tree(), &mut collapsed);
        let mut state = Self {
            spec: spec.to_string(),
            config: model.config.clone(),
            memory: estimate(
                &model.config,
                &map,
                &select::Selection {
                    names: BTreeSet::new(),
                },
                shape,
            ),
            map,
            selected,
            grid,
            row: 0,
            col: 0,
            tree_view: false,
            collapsed,
            filter: String::new(),
            tree_cursor: 0,
            preset_index: 0,
            problem,
        };
        state.update_memory(shape);
        Ok(state)
    }

    /// Recomputes the memory estimate for the current selection.
    pub fn update_memory(&mut self, shape: StepShape) {
        let selection = select::Selection {
            names: self.selected.clone(),
        };
        self.memory = estimate(&self.config, &self.map, &selection, shape);
    }

    /// State of a set of names.
    pub fn state_of(&self, names: &[String]) -> CellState {
        if names.is_empty() {
            return CellState::Absent;
        }
        let on = names.iter().filter(|n| self.selected.contains(*n)).count();
        match on {
            0 => CellState::Frozen,
            n if n == names.len() => CellState::Trainable,
            _ => CellState::Partial,
        }
    }

    /// The cell under the cursor.
    pub fn current_cell(&self) -> Option<&GridCell> {
        self.grid
            .rows
            .get(self.row)
            .and_then(|(_, cells)| cells.get(self.col))
    }

    fn set_all(&mut self, names: &[String], on: bool) {
        for n in names {
            if on {
                self.selected.insert(n.clone());
            } else {
                self.selected.remove(n);
            }
        }
    }

    /// Toggles a group: all on unless all are on already.
    fn toggle_group(&mut self, names: Vec<String>) {
        let on = self.state_of(&names) != CellState::Trainable;
        self.set_all(&names, on);
    }

    /// Space: the cell under the cursor (or the tree node in tree view).
    pub fn toggle_cell(&mut self) {
        let names = if self.tree_view {
            self.tree_lines()
                .get(self.tree_cursor)
                .map(|l| l.names.clone())
                .unwrap_or_default()
        } else {
            self.current_cell()
                .map(|c| c.names.clone())
                .unwrap_or_default()
        };
        self.toggle_group(names);
    }

    /// The cursor's projection kind across every layer.
    pub fn toggle_column(&mut self) {
        let layers = self.grid.layers;
        if self.row >= layers {
            self.toggle_cell();
            return;
        }
        let names: Vec<String> = self.grid.rows[..layers]
            .iter()
            .filter_map(|(_, cells)| cells.get(self.col))
            .flat_map(|c| c.names.clone())
            .collect();
        self.toggle_group(names);
    }

    /// Every cell of the cursor's row.
    pub fn toggle_row(&mut self) {
        let names: Vec<String> = self
            .grid
            .rows
            .get(self.row)
            .map(|(_, cells)| cells.iter().flat_map(|c| c.names.clone()).collect())
            .unwrap_or_default();
        self.toggle_group(names);
    }

    /// Every parameter flips.
    pub fn invert(&mut self) {
        self.selected = self
            .map
            .params
            .iter()
            .map(|p| p.name.clone())
            .filter(|n| !self.selected.contains(n))
            .collect();
    }

    /// Applies the next shipped preset that this model can express; returns its name.
    pub fn next_preset(&mut self) -> Option<&'static str> {
        for _ in 0..select::PRESETS.len() {
            let name = select::PRESETS[self.preset_index % select::PRESETS.len()];
            self.preset_index += 1;
            if let Some(spec) = select::preset(name) {
                if let Ok(selection) = select::resolve(&spec, &self.map) {
                    self.selected = selection.names;
                    return Some(name);
                }
            }
        }
        None
    }

    /// The recipe section for the current selection (`None` when nothing is selected).
    pub fn trainable_spec(&mut self) -> Option<TrainableSpec> {
        if self.selected.is_empty() {
            self.problem = Some("nothing is selected to train".into());
            return None;
        }
        self.problem = None;
        Some(spec_for(&self.selected, &self.map))
    }

    /// Trainable elements.
    pub fn trainable_numel(&self) -> usize {
        self.map
            .params
            .iter()
            .filter(|p| self.selected.contains(&p.name))
            .map(|p| p.numel)
            .sum()
    }

    /// Moves the grid or tree cursor.
    pub fn move_cursor(&mut self, dr: isize, dc: isize) {
        if self.tree_view {
            let len = self.tree_lines().len();
            self.tree_cursor = clamp_add(self.tree_cursor, dr, len);
            return;
        }
        self.row = clamp_add(self.row, dr, self.grid.rows.len());
        let width = self.grid.rows.get(self.row).map_or(0, |(_, c)| c.len());
        self.col = clamp_add(self.col.min(width.saturating_sub(1)), dc, width);
    }

    /// Jumps to the first or last row.
    pub fn jump(&mut self, last: bool) {
        if self.tree_view {
            self.tree_cursor = if last {
                self.tree_lines().len().saturating_sub(1)
            } else {
                0
            };
        } else {
            self.row = if last {
                self.grid.rows.len().saturating_sub(1)
            } else {
                0
            };
            let width = self.grid.rows.get(self.row).map_or(0, |(_, c)| c.len());
            self.col = self.col.min(width.saturating_sub(1));
        }
    }

    /// Expands or collapses the tree node under the cursor.
    pub fn toggle_collapse(&mut self, collapse: Option<bool>) {
        if let Some(line) = self.tree_lines().get(self.tree_cursor).cloned() {
            if !line.has_children {
                return;
            }
            let now = collapse.unwrap_or(!line.collapsed);
            if now {
                self.collapsed.insert(line.path);
            } else {
                self.collapsed.remove(&line.path);
            }
        }
    }

    /// The visible lines of the module tree (collapsed nodes hide their children; with a
    /// filter, only lines whose path contains it, and their ancestors, show).
    pub fn tree_lines(&self) -> Vec<TreeLine> {
        let mut out = Vec::new();
        let root = self.map.tree();
        for child in &root.children {
            self.flatten(child, 0, &mut out);
        }
        out
    }

    fn flatten(&self, node: &ModuleNode, depth: usize, out: &mut Vec<TreeLine>) {
        let names: Vec<String> = self
            .map
            .params
            .iter()
            .filter(|p| p.name == node.path || p.name.starts_with(&format!("{}.", node.path)))
            .map(|p| p.name.clone())
            .collect();
        if !self.filter.is_empty() && !names.iter().any(|n| n.contains(&self.filter)) {
            return;
        }
        let collapsed = self.filter.is_empty() && self.collapsed.contains(&node.path);
        let detail = match node.param {
            Some(i) => {
                let p = &self.map.params[i];
                format!("{:?} {}", p.shape, p.kind_label())
            }
            None => format!("{} tensors", node.param_count),
        };
        out.push(TreeLine {
            depth,
            name: node.name.clone(),
            path: node.path.clone(),
            numel: node.numel,
            detail,
            has_children: !node.children.is_empty(),
            collapsed,
            names,
        });
        if !collapsed {
            for child in &node.children {
                self.flatten(child, depth + 1, out);
            }
        }
    }
}

/// Layers start collapsed so the tree fits a screen.
fn collapse_layers(node: &ModuleNode, collapsed: &mut HashSet<String>) {
    for child in &node.children {
        let parts: Vec<&str> = child.path.split('.').collect();
        if parts.len() >= 2
            && parts[parts.len() - 2] == "layers"
            && parts[parts.len() - 1].parse::<usize>().is_ok()
        {
            collapsed.insert(child.path.clone());
        }
        collapse_layers(child, collapsed);
    }
}

fn clamp_add(value: usize, delta: isize, len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    (value as isize + delta).clamp(0, len as isize - 1) as usize
}
