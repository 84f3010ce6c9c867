//! The per-stage table of a sequence (Compare, when the selected run is a stage of one): a row
//! for the base model and after each stage, with the mean held-out score, its change against
//! the base, the stage's forgetting and recovery, and every stage's target score.

use ratatui::layout::{Constraint, Rect};
use ratatui::style::Modifier;
use ratatui::text::Line;
use ratatui::widgets::{Cell, Row, Table, TableState};
use ratatui::Frame;

use super::widgets::{delta_style, titled_block};
use crate::sequence::StageTable;
use crate::tui::format::{fmt_num, fmt_signed, truncate};
use crate::tui::theme::Theme;

/// Draws `table`, highlighting the row after stage `stage` (0: the base).
pub fn render_stage_table(
    frame: &mut Frame,
    area: Rect,
    table: &StageTable,
    stage: usize,
    theme: &Theme,
) {
    let right = |text: String| Cell::from(Line::from(text).right_aligned());
    let targets = table.target_tasks.len();
    let body: Vec<Row> = table
        .rows
        .iter()
        .map(|r| {
            let label = if r.after == 0 {
                "base".to_string()
            } else {
                format!("{} {}", r.after, r.label)
            };
            let mut cells = vec![
                Cell::from(label).style(theme.text()),
                right(fmt_num(r.heldout_mean, 1)).style(theme.text()),
                right(fmt_signed(r.heldout_delta, 1)).style(delta_style(r.heldout_delta, theme)),
                right(fmt_num(r.forgetting, 1)).style(theme.text()),
                right(fmt_num(r.recovery, 1)).style(theme.text()),
            ];
            cells.extend(r.targets.iter().map(|t| {
                let text = match t.delta {
                    Some(_) if r.after > 0 => {
                        format!("{} {}", fmt_num(t.score, 0), fmt_signed(t.delta, 0))
                    }
                    _ => fmt_num(t.score, 0),
                };
                right(text).style(delta_style(t.delta.filter(|_| r.after > 0), theme))
            }));
            Row::new(cells)
        })
        .collect();
    let mut header = vec![
        Cell::from("after"),
        right("held".into()),
        right("Δ held".into()),
        right("forgot".into()),
        right("recov".into()),
    ];
    header.extend(table.target_tasks.iter().map(|t| right(truncate(t, 9))));
    let mut widths = vec![
        Constraint::Fill(1),
        Constraint::Length(5),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(5),
    ];
    widths.extend(std::iter::repeat_n(Constraint::Length(9), targets));
    let title = format!(
        " stages of {} · held-out and targets in % · Δ in pp ",
        table.sequence
    );
    let widget = Table::new(body, widths)
        .header(Row::new(header).style(theme.muted().add_modifier(Modifier::BOLD)))
        .column_spacing(1)
        .row_highlight_style(theme.selected())
        .block(titled_block(
            truncate(&title, area.width.saturating_sub(2) as usize),
            theme,
        ));
    let selected = table.rows.iter().position(|r| r.after == stage);
    let mut state = TableState::default().with_selected(selected);
    frame.render_stateful_widget(widget, area, &mut state);
}
