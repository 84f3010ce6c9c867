//! The Model pane: the layer × projection grid (or the module tree) and a footer with the
//! trainable count, share of the model and memory estimate.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};
use ratatui::Frame;

use crate::tui::format::human_bytes;
use crate::tui::model_grid::CellState;
use crate::tui::model_state::ModelState;
use crate::tui::theme::Theme;
use crate::util::format::group_digits;

/// Glyph of a cell state: works without colour too.
pub fn glyph(state: CellState) -> &'static str {
    match state {
        CellState::Trainable => "■",
        CellState::Partial => "◧",
        CellState::Frozen => "·",
        CellState::Absent => " ",
    }
}

fn cell_style(state: CellState, theme: &Theme) -> Style {
    match state {
        CellState::Trainable => theme.good().add_modifier(Modifier::BOLD),
        CellState::Partial => theme.warn(),
        _ => theme.muted(),
    }
}

/// Draws the Model pane.
pub fn render_model(
    frame: &mut Frame,
    area: Rect,
    state: Option<&ModelState>,
    error: Option<&str>,
    theme: &Theme,
) {
    let Some(state) = state else {
        let text = error.unwrap_or("no model loaded");
        let p = Paragraph::new(text.to_string())
            .style(theme.bad())
            .wrap(ratatui::widgets::Wrap { trim: true })
            .block(Block::default().borders(Borders::ALL).title(" Model "));
        frame.render_widget(p, area);
        return;
    };
    let [main, footer] = Layout::vertical([Constraint::Min(3), Constraint::Length(2)]).areas(area);
    let title = format!(
        " {} · {} layers · {} ",
        state.spec,
        state.config.num_hidden_layers,
        if state.tree_view {
            "tree (t: grid)"
        } else {
            "grid (t: tree)"
        }
    );
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(theme.border())
        .title(Span::styled(title, theme.accent()));
    let inner = block.inner(main);
    frame.render_widget(block, main);
    if state.tree_view {
        render_tree(frame, inner, state, theme);
    } else {
        render_grid(frame, inner, state, theme);
    }
    render_footer(frame, footer, state, theme);
}

fn render_grid(frame: &mut Frame, area: Rect, state: &ModelState, theme: &Theme) {
    if area.height == 0 {
        return;
    }
    let col_width = 6usize;
    let mut lines = Vec::new();
    let mut header = vec![Span::styled(format!("{:>6} │", "layer"), theme.muted())];
    for (label, _) in &state.grid.columns {
        header.push(Span::styled(format!("{label:^col_width$}"), theme.accent()));
    }
    lines.push(Line::from(header));
    let layer_rows = state.grid.layers;
    // Whole-model rows (model, vision, projector) wrap to the pane's width.
    let mut tail: Vec<Line> = Vec::new();
    for (r, (label, cells)) in state.grid.rows.iter().enumerate().skip(layer_rows) {
        let mut spans = vec![Span::styled(format!("{label:>6} │ "), theme.muted())];
        let mut used = 9usize;
        for (c, cell) in cells.iter().enumerate() {
            let cell_state = state.state_of(&cell.names);
            let mut style = cell_style(cell_state, theme);
            if state.row == r && c == state.col {
                style = style.patch(theme.selected());
            }
            let text = format!("{} {}", glyph(cell_state), cell.label);
            let width = text.chars().count() + 2;
            if used + width > area.width as usize && spans.len() > 1 {
                tail.push(Line::from(std::mem::take(&mut spans)));
                spans.push(Span::styled(format!("{:>6} │ ", ""), theme.muted()));
                used = 9;
            }
            spans.push(Span::styled(text, style));
            spans.push(Span::raw("  "));
            used += width;
        }
        tail.push(Line::from(spans));
    }
    // Rows available for layers: header, whole-model rows and legend take the rest.
    let visible = (area.height as usize).saturating_sub(2 + tail.len()).max(1);
    let top = if state.row < layer_rows {
        state.row.saturating_sub(visible.saturating_sub(1))
    } else {
        layer_rows.saturating_sub(visible)
    };
    for (r, (label, cells)) in state.grid.rows[..layer_rows]
        .iter()
        .enumerate()
        .skip(top)
        .take(visible)
    {
        let mut spans = vec![Span::styled(format!("{label:>6} │"), theme.muted())];
        for (c, cell) in cells.iter().enumerate() {
            let cell_state = state.state_of(&cell.names);
            let mut style = cell_style(cell_state, theme);
            if r == state.row && c == state.col {
                style = style.patch(theme.selected());
            }
            spans.push(Span::styled(
                format!("{:^col_width$}", glyph(cell_state)),
                style,
            ));
        }
        lines.push(Line::from(spans));
    }
    lines.extend(tail);
    lines.push(Line::from(Span::styled(
        "■ trains  ◧ partly  · frozen   Space cell · c column · r row · i invert · p preset · L launch",
        theme.muted(),
    )));
    frame.render_widget(Paragraph::new(lines), area);
}

fn render_tree(frame: &mut Frame, area: Rect, state: &ModelState, theme: &Theme) {
    let lines = state.tree_lines();
    let visible = area.height as usize;
    let top = state.tree_cursor.saturating_sub(visible.saturating_sub(1));
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate().skip(top).take(visible) {
        let marker = if !line.has_children {
            " "
        } else if line.collapsed {
            "▸"
        } else {
            "▾"
        };
        let cell_state = state.state_of(&line.names);
        let mut style = cell_style(cell_state, theme);
        if i == state.tree_cursor {
            style = style.patch(theme.selected());
        }
        let indent = "  ".repeat(line.depth);
        out.push(Line::from(vec![
            Span::styled(format!("{} ", glyph(cell_state)), style),
            Span::styled(
                format!("{indent}{marker} {}", line.name),
                if i == state.tree_cursor {
                    theme.selected()
                } else {
                    theme.text()
                },
            ),
            Span::styled(
                format!("  {}  {}", group_digits(line.numel), line.detail),
                theme.muted(),
            ),
        ]));
    }
    if !state.filter.is_empty() {
        out.insert(
            0,
            Line::from(Span::styled(
                format!("filter: {} (Esc clears)", state.filter),
                theme.warn(),
            )),
        );
        out.truncate(visible);
    }
    frame.render_widget(Paragraph::new(out), area);
}

fn render_footer(frame: &mut Frame, area: Rect, state: &ModelState, theme: &Theme) {
    let trainable = state.trainable_numel();
    let total = state.map.total().max(1);
    let cell = state.current_cell().map(|c| {
        let names = c.names.join(", ");
        if names.len() > 80 {
            format!("{} tensors", c.names.len())
        } else {
            names
        }
    });
    let line1 = Line::from(vec![
        Span::styled("trainable ", theme.muted()),
        Span::styled(
            format!(
                "{} / {} ({:.2}%)",
                group_digits(trainable),
                group_digits(total),
                100.0 * trainable as f64 / total as f64
            ),
            theme.accent(),
        ),
        Span::styled("  est. memory ", theme.muted()),
        Span::styled(human_bytes(state.memory.total), theme.text()),
        Span::styled(
            format!(
                " (AdamW {} · activations {})",
                human_bytes(state.memory.optimizer),
                human_bytes(state.memory.activations)
            ),
            theme.muted(),
        ),
    ]);
    let line2 = match &state.problem {
        Some(problem) => Line::from(Span::styled(problem.clone(), theme.bad())),
        None => Line::from(Span::styled(
            if state.tree_view {
                String::new()
            } else {
                cell.unwrap_or_default()
            },
            theme.muted(),
        )),
    };
    frame.render_widget(Paragraph::new(vec![line1, line2]), area);
}
