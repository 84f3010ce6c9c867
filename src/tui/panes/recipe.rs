//! The Recipe pane: every field as an editable row.

use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};
use ratatui::Frame;

use crate::recipe::Recipe;
use crate::tui::recipe_form::{field_text, FieldKind, FIELDS};
use crate::tui::theme::Theme;

/// Draws the recipe form with the cursor on `selected`.
pub fn render_recipe(
    frame: &mut Frame,
    area: Rect,
    recipe: &Recipe,
    path: Option<&str>,
    dirty: bool,
    selected: usize,
    theme: &Theme,
) {
    let title = format!(
        " {}{} ",
        path.unwrap_or("unsaved recipe"),
        if dirty { " [modified]" } else { "" }
    );
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(theme.border())
        .title(Span::styled(title, theme.accent()));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let visible = (inner.height as usize).saturating_sub(1).max(1);
    let top = selected.saturating_sub(visible.saturating_sub(1));
    let mut lines = Vec::new();
    for (i, field) in FIELDS.iter().enumerate().skip(top).take(visible) {
        let value = field_text(recipe, field);
        let hint = match field.kind {
            FieldKind::Choice(options) => format!("  ({})", options.join("/")),
            FieldKind::List => "  (comma-separated)".to_string(),
            _ => String::new(),
        };
        let value_style = if value.is_empty() {
            theme.muted()
        } else {
            theme.text()
        };
        let shown = if value.is_empty() {
            "—".to_string()
        } else {
            value
        };
        let mut spans = vec![
            Span::styled(
                format!("{:>20}  ", field.label),
                if i == selected {
                    theme.selected()
                } else {
                    theme.muted()
                },
            ),
            Span::styled(
                shown,
                if i == selected {
                    value_style.patch(theme.selected())
                } else {
                    value_style
                },
            ),
        ];
        if i == selected {
            spans.push(Span::styled(hint, theme.muted()));
        }
        lines.push(Line::from(spans));
    }
    lines.push(Line::from(Span::styled(
        "Enter edit · s save · w save as · o open · L launch",
        theme.muted(),
    )));
    frame.render_widget(Paragraph::new(lines), inner);
}
