//! Key bindings: every binding has a description, and the help overlay is generated from them.
//! Arrows and vim keys both work.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// Where a binding applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    Global,
    Model,
    Recipe,
    Runs,
    Dashboard,
    Compare,
    Interpolation,
}

impl Context {
    pub fn title(self) -> &'static str {
        match self {
            Context::Global => "everywhere",
            Context::Model => "Model",
            Context::Recipe => "Recipe",
            Context::Runs => "Runs",
            Context::Dashboard => "Dashboard",
            Context::Compare => "Compare",
            Context::Interpolation => "Interpolation (Dashboard, W)",
        }
    }
}

/// What a key does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Quit,
    Help,
    Escape,
    NextTab,
    PrevTab,
    Tab(usize),
    Up,
    Down,
    Left,
    Right,
    Top,
    Bottom,
    PageUp,
    PageDown,
    CycleTheme,
    // Model pane
    ToggleCell,
    ToggleColumn,
    ToggleRow,
    Invert,
    NextPreset,
    Filter,
    ToggleTree,
    // Recipe pane
    Edit,
    Save,
    SaveAs,
    Open,
    Launch,
    // Runs / dashboard / compare
    Attach,
    Stop,
    Zoom,
    NextPanel,
    // Interpolation view
    Interpolate,
    ScoreAll,
    WriteModel,
}

/// One binding: the keys shown in help, the action, and what it does.
#[derive(Debug, Clone)]
pub struct Binding {
    pub keys: &'static str,
    pub action: Action,
    pub description: &'static str,
    pub context: Context,
}

const fn b(
    keys: &'static str,
    action: Action,
    description: &'static str,
    context: Context,
) -> Binding {
    Binding {
        keys,
        action,
        description,
        context,
    }
}

/// Every binding, in help order.
pub const BINDINGS: &[Binding] = &[
    b("?", Action::Help, "show or hide this help", Context::Global),
    b(
        "q  Ctrl-C",
        Action::Quit,
        "quit (runs keep training)",
        Context::Global,
    ),
    b(
        "Esc",
        Action::Escape,
        "close a dialog, cancel an edit or filter, leave zoom",
        Context::Global,
    ),
    b(
        "Tab  Shift-Tab",
        Action::NextTab,
        "next / previous pane",
        Context::Global,
    ),
    b(
        "1-5",
        Action::Tab(0),
        "go to Model, Recipe, Runs, Dashboard, Compare",
        Context::Global,
    ),
    b("↑↓←→  hjkl", Action::Up, "move", Context::Global),
    b("g  G", Action::Top, "first / last row", Context::Global),
    b(
        "Ctrl-u  Ctrl-d",
        Action::PageUp,
        "page up / down",
        Context::Global,
    ),
    b(
        "T",
        Action::CycleTheme,
        "cycle the colour theme",
        Context::Global,
    ),
    b(
        "Space",
        Action::ToggleCell,
        "toggle the parameter under the cursor",
        Context::Model,
    ),
    b(
        "c",
        Action::ToggleColumn,
        "toggle the projection column in every layer",
        Context::Model,
    ),
    b(
        "r",
        Action::ToggleRow,
        "toggle the whole layer",
        Context::Model,
    ),
    b("i", Action::Invert, "invert the selection", Context::Model),
    b(
        "p",
        Action::NextPreset,
        "apply the next preset (sa-proj, mlp-gate-up, ...)",
        Context::Model,
    ),
    b(
        "/",
        Action::Filter,
        "filter the module tree by name",
        Context::Model,
    ),
    b(
        "t",
        Action::ToggleTree,
        "switch between the layer grid and the module tree",
        Context::Model,
    ),
    b(
        "Enter",
        Action::Edit,
        "edit the field (enums cycle)",
        Context::Recipe,
    ),
    b(
        "s",
        Action::Save,
        "save the recipe (keeps the file's key order)",
        Context::Recipe,
    ),
    b(
        "w",
        Action::SaveAs,
        "save the recipe under a new path",
        Context::Recipe,
    ),
    b(
        "o",
        Action::Open,
        "open a recipe from recipes/",
        Context::Recipe,
    ),
    b(
        "L",
        Action::Launch,
        "launch a detached training run",
        Context::Recipe,
    ),
    b(
        "Enter",
        Action::Attach,
        "attach the dashboard to the run",
        Context::Runs,
    ),
    b(
        "S",
        Action::Stop,
        "stop the run gracefully (checkpoint first)",
        Context::Runs,
    ),
    b(
        "S",
        Action::Stop,
        "stop the attached run gracefully",
        Context::Dashboard,
    ),
    b(
        "z",
        Action::Zoom,
        "zoom the focused panel to full screen",
        Context::Dashboard,
    ),
    b(
        "n",
        Action::NextPanel,
        "focus the next panel",
        Context::Dashboard,
    ),
    b(
        "W",
        Action::Interpolate,
        "WiSE-FT: interpolate a finished run between base and tuned",
        Context::Dashboard,
    ),
    b(
        "Enter",
        Action::Attach,
        "attach the dashboard to the run",
        Context::Compare,
    ),
    b(
        "←→  hl",
        Action::Left,
        "move α by 0.1 (g / G: base / tuned)",
        Context::Interpolation,
    ),
    b(
        "Enter",
        Action::Edit,
        "probe and score the point at α (cached in the run)",
        Context::Interpolation,
    ),
    b(
        "a",
        Action::ScoreAll,
        "score every α from 0 to 1",
        Context::Interpolation,
    ),
    b(
        "w",
        Action::WriteModel,
        "write the best α (or α under the cursor) out as a model",
        Context::Interpolation,
    ),
    b(
        "Esc",
        Action::Escape,
        "close the interpolation view",
        Context::Interpolation,
    ),
];

/// The action for a key in a context (pane-specific bindings first).
pub fn action_for(key: KeyEvent, context: Context) -> Option<Action> {
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    let global = match key.code {
        KeyCode::Char('c') if ctrl => Some(Action::Quit),
        KeyCode::Char('u') if ctrl => Some(Action::PageUp),
        KeyCode::Char('d') if ctrl => Some(Action::PageDown),
        _ if ctrl => return None,
        KeyCode::Char('?') => Some(Action::Help),
        KeyCode::Char('q') => Some(Action::Quit),
        KeyCode::Esc => Some(Action::Escape),
        KeyCode::Tab => Some(Action::NextTab),
        KeyCode::BackTab => Some(Action::PrevTab),
        KeyCode::Char(c @ '1'..='5') => Some(Action::Tab(c as usize - '1' as usize)),
        KeyCode::Up | KeyCode::Char('k') => Some(Action::Up),
        KeyCode::Down | KeyCode::Char('j') => Some(Action::Down),
        KeyCode::Left | KeyCode::Char('h') => Some(Action::Left),
        KeyCode::Right | KeyCode::Char('l') => Some(Action::Right),
        KeyCode::Home | KeyCode::Char('g') => Some(Action::Top),
        KeyCode::End | KeyCode::Char('G') => Some(Action::Bottom),
        KeyCode::PageUp => Some(Action::PageUp),
        KeyCode::PageDown => Some(Action::PageDown),
        KeyCode::Char('T') => Some(Action::CycleTheme),
        _ => None,
    };
    let local = match (context, key.code) {
        (Context::Model, KeyCode::Char(' ')) => Some(Action::ToggleCell),
        (Context::Model, KeyCode::Enter) => Some(Action::ToggleCell),
        (Context::Model, KeyCode::Char('c')) => Some(Action::ToggleColumn),
        (Context::Model, KeyCode::Char('r')) => Some(Action::ToggleRow),
        (Context::Model, KeyCode::Char('i')) => Some(Action::Invert),
        (Context::Model, KeyCode::Char('p')) => Some(Action::NextPreset),
        (Context::Model, KeyCode::Char('/')) => Some(Action::Filter),
        (Context::Model, KeyCode::Char('t')) => Some(Action::ToggleTree),
        (Context::Recipe, KeyCode::Enter | KeyCode::Char(' ')) => Some(Action::Edit),
        (Context::Recipe, KeyCode::Char('s')) => Some(Action::Save),
        (Context::Recipe, KeyCode::Char('w')) => Some(Action::SaveAs),
        (Context::Recipe, KeyCode::Char('o')) => Some(Action::Open),
        (Context::Recipe | Context::Model, KeyCode::Char('L')) => Some(Action::Launch),
        (Context::Runs | Context::Compare, KeyCode::Enter) => Some(Action::Attach),
        (Context::Runs | Context::Dashboard, KeyCode::Char('S')) => Some(Action::Stop),
        (Context::Dashboard, KeyCode::Char('z')) => Some(Action::Zoom),
        (Context::Dashboard, KeyCode::Char('n')) => Some(Action::NextPanel),
        (Context::Dashboard, KeyCode::Char('W')) => Some(Action::Interpolate),
        (Context::Interpolation, KeyCode::Enter) => Some(Action::Edit),
        (Context::Interpolation, KeyCode::Char('a')) => Some(Action::ScoreAll),
        (Context::Interpolation, KeyCode::Char('w')) => Some(Action::WriteModel),
        _ => None,
    };
    local.or(global)
}

/// The keys of `context` for the one-line context bar: `key description` pairs.
pub fn context_hints(context: Context) -> Vec<(&'static str, &'static str)> {
    let mut hints: Vec<(&str, &str)> = BINDINGS
        .iter()
        .filter(|b| b.context == context)
        .map(|b| (b.keys, b.description.split(' ').next().unwrap_or("")))
        .collect();
    hints.push(("?", "help"));
    hints.push(("q", "quit"));
    hints
}
