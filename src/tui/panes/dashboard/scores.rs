//! Panel (d): the held-out score table (task, role, base, now, Δ; perplexity where a task has no
//! score, lower being better) over the Δ learning / Δ held-out summary.

use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Row, Table};
use ratatui::Frame;

use crate::eval::tasks::{TaskRole, TaskScore};
use crate::run::reader::RunSnapshot;
use crate::tui::format::{escape_line, fmt_num, fmt_signed};
use crate::tui::panes::widgets::{delta_style, put_line, render_message};
use crate::tui::series::finite;
use crate::tui::theme::Theme;

/// One row of the score table.
struct ScoreRow {
    name: String,
    role: TaskRole,
    base: Option<f64>,
    now: Option<f64>,
    /// Perplexity: lower is better.
    lower_better: bool,
}

fn primary(score: &TaskScore) -> (Option<f64>, bool) {
    match finite(score.score) {
        Some(v) => (Some(v), false),
        None => match score.metrics.get("perplexity") {
            Some(p) => (finite(Some(*p)), true),
            None => (None, false),
        },
    }
}

fn score_rows(snap: &RunSnapshot) -> Vec<ScoreRow> {
    let mut rows: Vec<ScoreRow> = Vec::new();
    for s in &snap.scores {
        let (now, lower_better) = primary(s);
        let base = snap
            .base_scores
            .iter()
            .find(|b| b.name == s.name)
            .and_then(|b| primary(b).0);
        rows.push(ScoreRow {
            name: s.name.clone(),
            role: s.role,
            base,
            now,
            lower_better,
        });
    }
    for b in &snap.base_scores {
        if !rows.iter().any(|r| r.name == b.name) {
            let (base, lower_better) = primary(b);
            rows.push(ScoreRow {
                name: b.name.clone(),
                role: b.role,
                base,
                now: None,
                lower_better,
            });
        }
    }
    rows.sort_by_key(|r| r.role);
    rows
}

/// What the score panel shows, taken from a run snapshot.
pub struct ScoresView<'a> {
    theme: &'a Theme,
    /// Δ learning and Δ held-out, percentage points.
    delta_learning: Option<f64>,
    delta_heldout: Option<f64>,
    /// Target tasks first, then held-out ones.
    rows: Vec<ScoreRow>,
}

impl<'a> ScoresView<'a> {
    /// The score panel of `snap`.
    pub fn new(snap: &RunSnapshot, theme: &'a Theme) -> Self {
        Self {
            theme,
            delta_learning: finite(snap.delta_learning),
            delta_heldout: finite(snap.delta_heldout),
            rows: score_rows(snap),
        }
    }

    /// Draws the panel into `area` (inside its border).
    pub fn render(&self, frame: &mut Frame, area: Rect) {
        let theme = self.theme;
        let (dl, dh) = (self.delta_learning, self.delta_heldout);
        let full = |label: &'static str, v: Option<f64>| {
            vec![
                Span::styled(label, theme.muted()),
                Span::styled(
                    format!("{} pp", fmt_signed(v, 1)),
                    delta_style(v, theme).add_modifier(Modifier::BOLD),
                ),
            ]
        };
        let one_line: Line = [
            full("Δ learning ", dl),
            vec![Span::styled(" · ", theme.muted())],
            full("Δ held-out ", dh),
        ]
        .concat()
        .into();
        let summary: Vec<Line> = if one_line.width() <= area.width as usize || area.height < 4 {
            vec![one_line]
        } else {
            vec![
                full("Δ learning ", dl).into(),
                full("Δ held-out ", dh).into(),
            ]
        };
        let table_height = area.height.saturating_sub(summary.len() as u16);
        let table_area = Rect::new(area.x, area.y, area.width, table_height);
        for (i, line) in summary.iter().enumerate() {
            put_line(
                frame.buffer_mut(),
                area,
                area.y + table_height + i as u16,
                line,
            );
        }
        if table_area.is_empty() {
            return;
        }
        let rows = &self.rows;
        if rows.is_empty() {
            render_message(frame.buffer_mut(), table_area, "no evaluation yet", theme);
            return;
        }
        let narrow = area.width < 44;
        let body: Vec<Row> = rows
            .iter()
            .map(|r| {
                let delta = match (r.base, r.now) {
                    (Some(b), Some(n)) => Some(n - b),
                    _ => None,
                };
                let good_sign = delta.map(|d| if r.lower_better { -d } else { d });
                let role = match (r.role, narrow) {
                    (TaskRole::Target, false) => "target",
                    (TaskRole::Target, true) => "tgt",
                    (TaskRole::Heldout, false) => "held-out",
                    (TaskRole::Heldout, true) => "held",
                };
                let role_style = if r.role == TaskRole::Target {
                    theme.accent()
                } else {
                    theme.text()
                };
                let name = if r.lower_better {
                    format!("{} (ppl)", r.name)
                } else {
                    r.name.clone()
                };
                Row::new(vec![
                    Cell::from(escape_line(&name)).style(theme.text()),
                    Cell::from(role).style(role_style),
                    Cell::from(Line::from(fmt_num(r.base, 1)).right_aligned())
                        .style(Style::default().fg(theme.base)),
                    Cell::from(Line::from(fmt_num(r.now, 1)).right_aligned())
                        .style(Style::default().fg(theme.now)),
                    Cell::from(Line::from(fmt_signed(delta, 1)).right_aligned())
                        .style(delta_style(good_sign, theme)),
                ])
            })
            .collect();
        let header = Row::new(["task", "role", "base", "now", "Δ"].map(|h| {
            let line = if matches!(h, "base" | "now" | "Δ") {
                Line::from(h).right_aligned()
            } else {
                Line::from(h)
            };
            Cell::from(line)
        }))
        .style(theme.muted().add_modifier(Modifier::BOLD));
        let widths = [
            Constraint::Min(4),
            Constraint::Length(if narrow { 4 } else { 8 }),
            Constraint::Length(6),
            Constraint::Length(6),
            Constraint::Length(6),
        ];
        let table = Table::new(body, widths).header(header).column_spacing(1);
        frame.render_widget(table, table_area);
    }
}
