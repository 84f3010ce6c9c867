//! Pure rendering functions of the workbench's panes: each draws plain data with a theme.

pub mod compare;
pub mod dashboard;
pub mod interpolation;
pub mod model;
pub mod recipe;
pub mod runs;
pub mod stages;
pub mod widgets;
