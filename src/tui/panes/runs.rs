//! The list of runs: state, progress, newest loss, Δ learning / Δ held-out and last update, the
//! selected run highlighted.

use ratatui::layout::{Constraint, Rect};
use ratatui::style::Modifier;
use ratatui::text::Line;
use ratatui::widgets::{Cell, Row, Table, TableState};
use ratatui::Frame;

use super::widgets::{delta_style, render_message, state_style, titled_block};
use crate::run::reader::RunSnapshot;
use crate::tui::format::{fmt_signed, fmt_value, short_time};
use crate::tui::series::finite;
use crate::tui::theme::Theme;

/// The empty-state message of the runs table.
pub const NO_RUNS: &str = "no runs yet — press L on the Recipe tab to launch one";

/// One run in the list.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunRow {
    pub name: String,
    pub state: String,
    pub step: usize,
    pub total_steps: usize,
    pub loss: Option<f64>,
    pub delta_learning: Option<f64>,
    pub delta_heldout: Option<f64>,
    pub updated_at: String,
}

impl RunRow {
    /// The row of one run (state `unknown` before its status is read).
    pub fn from_snapshot(name: &str, snap: &RunSnapshot) -> RunRow {
        let status = snap.status.as_ref();
        RunRow {
            name: name.to_string(),
            state: status.map_or("unknown", |s| s.state.as_str()).to_string(),
            step: status.map_or(0, |s| s.step),
            total_steps: status.map_or(0, |s| s.total_steps),
            loss: snap
                .loss
                .iter()
                .rev()
                .map(|(_, l)| *l)
                .find(|l| l.is_finite()),
            delta_learning: finite(snap.delta_learning),
            delta_heldout: finite(snap.delta_heldout),
            updated_at: status.map(|s| s.updated_at.clone()).unwrap_or_default(),
        }
    }
}

/// Draws the runs table; `selected` indexes `rows` (clamped).
pub fn render_runs(frame: &mut Frame, area: Rect, rows: &[RunRow], selected: usize, theme: &Theme) {
    let area = area.intersection(frame.area());
    if area.is_empty() {
        return;
    }
    let block = titled_block(format!(" runs ({}) ", rows.len()), theme);
    if rows.is_empty() {
        let inner = block.inner(area);
        frame.render_widget(block, area);
        render_message(frame.buffer_mut(), inner, NO_RUNS, theme);
        return;
    }
    let selected = selected.min(rows.len() - 1);
    let right = |text: String| Cell::from(Line::from(text).right_aligned());
    let body: Vec<Row> = rows
        .iter()
        .map(|r| {
            let pct = if r.total_steps > 0 {
                format!(
                    " {:>3.0}%",
                    (r.step as f64 / r.total_steps as f64 * 100.0).min(100.0)
                )
            } else {
                String::new()
            };
            Row::new(vec![
                Cell::from(r.name.clone()).style(theme.text()),
                Cell::from(r.state.clone()).style(state_style(&r.state, theme)),
                right(format!("{}/{}{pct}", r.step, r.total_steps)).style(theme.text()),
                right(fmt_value(r.loss)).style(theme.text()),
                right(fmt_signed(r.delta_learning, 1)).style(delta_style(r.delta_learning, theme)),
                right(fmt_signed(r.delta_heldout, 1)).style(delta_style(r.delta_heldout, theme)),
                Cell::from(short_time(&r.updated_at)).style(theme.muted()),
            ])
        })
        .collect();
    let header = Row::new(
        [
            "run", "state", "step", "loss", "Δ learn", "Δ held", "updated",
        ]
        .into_iter()
        .enumerate()
        .map(|(i, h)| {
            if (2..6).contains(&i) {
                Cell::from(Line::from(h).right_aligned())
            } else {
                Cell::from(h)
            }
        }),
    )
    .style(theme.muted().add_modifier(Modifier::BOLD));
    let widths = [
        Constraint::Fill(1),
        Constraint::Length(8),
        Constraint::Length(14),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(19),
    ];
    let table = Table::new(body, widths)
        .header(header)
        .column_spacing(1)
        .row_highlight_style(theme.selected())
        .highlight_symbol("▸ ")
        .block(block);
    let mut state = TableState::default().with_selected(Some(selected));
    frame.render_stateful_widget(table, area, &mut state);
}
