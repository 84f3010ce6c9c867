//! The study's main table: the user's runs side by side (trainable share, Δ learning, Δ held-out,
//! numeric mass drift, throughput) and a scatter of Δ learning against Δ held-out, one labelled
//! point per run (the table's `#`). Up and right is better: learned more, forgot less.
//!
//! Layout: table left and scatter right from 110 columns; below that the scatter goes under the
//! table when there are at least 16 rows, else only the table is drawn. When the selected run is
//! a stage of a sequence, the sequence's per-stage table takes the scatter's place.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::canvas::{Canvas, Line as CanvasLine};
use ratatui::widgets::{Cell, Row, Table, TableState};
use ratatui::Frame;

use super::stages::render_stage_table;
use super::widgets::{delta_style, render_message, state_style, titled_block};
use crate::run::reader::RunSnapshot;
use crate::sequence::{stage_table, StageTable};
use crate::tui::format::{fmt_num, fmt_prob, fmt_rate, fmt_signed, truncate};
use crate::tui::series::{bounds, finite};
use crate::tui::theme::Theme;

/// One run in the comparison.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CompareRow {
    pub run: String,
    pub recipe: String,
    pub state: String,
    /// Trainable parameters, percent of all.
    pub trainable_pct: Option<f64>,
    /// Percentage points.
    pub delta_learning: Option<f64>,
    /// Percentage points.
    pub delta_heldout: Option<f64>,
    /// Held-out numeric mass of the base model (probability, 0..1).
    pub numeric_mass_base: Option<f64>,
    /// Held-out numeric mass at the newest probe (probability, 0..1).
    pub numeric_mass_end: Option<f64>,
    pub tokens_per_s: Option<f64>,
    /// For a stage of a sequence: its stage (1-based) and the sequence's per-stage table.
    pub stages: Option<(usize, StageTable)>,
}

impl CompareRow {
    /// The comparison row of one run; `recipe` falls back to the status's recipe when empty.
    pub fn from_snapshot(run: &str, recipe: &str, snap: &RunSnapshot) -> CompareRow {
        let status = snap.status.as_ref();
        let recipe = if recipe.is_empty() {
            status.map(|s| s.recipe.clone()).unwrap_or_default()
        } else {
            recipe.to_string()
        };
        let trainable_pct = match (snap.trainable, snap.total_params) {
            (Some(t), Some(n)) if n > 0 => Some(t as f64 / n as f64 * 100.0),
            _ => None,
        };
        let stages = snap
            .sequence
            .as_ref()
            .map(|seq| (seq.stage, stage_table(&seq.record)));
        CompareRow {
            run: run.to_string(),
            stages,
            recipe,
            state: status.map_or("unknown", |s| s.state.as_str()).to_string(),
            trainable_pct,
            delta_learning: finite(snap.delta_learning),
            delta_heldout: finite(snap.delta_heldout),
            numeric_mass_base: snap
                .probes
                .iter()
                .rev()
                .find_map(|p| finite(p.heldout_base_mass)),
            numeric_mass_end: snap
                .probes
                .iter()
                .rev()
                .find_map(|p| finite(p.heldout_mass)),
            tokens_per_s: finite(snap.tokens_per_s),
        }
    }
}

/// Trainable share: `0.52%`, `12.0%`, `100%`.
fn fmt_share(v: Option<f64>) -> String {
    match finite(v) {
        Some(p) if p >= 99.95 => "100%".into(),
        Some(p) if p < 1.0 => format!("{p:.2}%"),
        Some(p) => format!("{p:.1}%"),
        None => "–".into(),
    }
}

/// Draws the comparison table and scatter; `selected` indexes `rows` (clamped).
pub fn render_compare(
    frame: &mut Frame,
    area: Rect,
    rows: &[CompareRow],
    selected: usize,
    theme: &Theme,
) {
    let area = area.intersection(frame.area());
    if area.is_empty() {
        return;
    }
    if rows.is_empty() {
        let block = titled_block(" compare runs ", theme);
        let inner = block.inner(area);
        frame.render_widget(block, area);
        render_message(
            frame.buffer_mut(),
            inner,
            "nothing to compare yet — launch runs from the Recipe tab",
            theme,
        );
        return;
    }
    let selected = selected.min(rows.len() - 1);
    // The selected stage's sequence table, else the scatter.
    let side = |frame: &mut Frame, area: Rect| match &rows[selected].stages {
        Some((stage, table)) => render_stage_table(frame, area, table, *stage, theme),
        None => render_scatter(frame, area, rows, selected, theme),
    };
    if area.width >= 110 {
        let [table, scatter] =
            Layout::horizontal([Constraint::Percentage(60), Constraint::Fill(1)]).areas(area);
        render_table(frame, table, rows, selected, theme);
        side(frame, scatter);
    } else if area.height >= 16 {
        let table_height = (rows.len() as u16 + 3).clamp(4, area.height / 2);
        let [table, scatter] =
            Layout::vertical([Constraint::Length(table_height), Constraint::Fill(1)]).areas(area);
        render_table(frame, table, rows, selected, theme);
        side(frame, scatter);
    } else {
        render_table(frame, area, rows, selected, theme);
    }
}

fn render_table(
    frame: &mut Frame,
    area: Rect,
    rows: &[CompareRow],
    selected: usize,
    theme: &Theme,
) {
    // Under 100 columns the state column goes, leaving room for run and recipe names.
    let with_state = area.width >= 100;
    let keep = |column: usize| with_state || column != 3;
    let right = |text: String| Cell::from(Line::from(text).right_aligned());
    let body: Vec<Row> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mass = match (finite(r.numeric_mass_base), finite(r.numeric_mass_end)) {
                (None, None) => "–".to_string(),
                (b, e) => format!("{}→{}", fmt_prob(b), fmt_prob(e)),
            };
            let mass_style = match (finite(r.numeric_mass_base), finite(r.numeric_mass_end)) {
                (Some(b), Some(e)) if (e - b).abs() > 0.05 * b.abs().max(0.01) => theme.warn(),
                _ => theme.text(),
            };
            let cells = vec![
                Cell::from(format!("{}", i + 1)).style(theme.muted()),
                Cell::from(r.run.clone()).style(theme.text()),
                Cell::from(r.recipe.clone()).style(theme.text()),
                Cell::from(r.state.clone()).style(state_style(&r.state, theme)),
                right(fmt_share(r.trainable_pct)).style(theme.text()),
                right(fmt_signed(r.delta_learning, 1)).style(delta_style(r.delta_learning, theme)),
                right(fmt_signed(r.delta_heldout, 1)).style(delta_style(r.delta_heldout, theme)),
                right(mass).style(mass_style),
                right(fmt_rate(r.tokens_per_s).replace(" tok/s", "")).style(theme.text()),
            ];
            Row::new(
                cells
                    .into_iter()
                    .enumerate()
                    .filter(|(c, _)| keep(*c))
                    .map(|(_, cell)| cell),
            )
        })
        .collect();
    let header = Row::new(
        [
            "#", "run", "recipe", "state", "train", "Δ learn", "Δ held", "num mass", "tok/s",
        ]
        .into_iter()
        .enumerate()
        .filter(|(c, _)| keep(*c))
        .map(|(i, h)| {
            if i >= 4 {
                Cell::from(Line::from(h).right_aligned())
            } else {
                Cell::from(h)
            }
        }),
    )
    .style(theme.muted().add_modifier(Modifier::BOLD));
    let widths = [
        Constraint::Length(2),
        Constraint::Fill(if with_state { 2 } else { 1 }),
        Constraint::Fill(1),
        Constraint::Length(8),
        Constraint::Length(6),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(13),
        Constraint::Length(6),
    ]
    .into_iter()
    .enumerate()
    .filter(|(c, _)| keep(*c))
    .map(|(_, w)| w);
    let table = Table::new(body, widths)
        .header(header)
        .column_spacing(1)
        .row_highlight_style(theme.selected())
        .block(titled_block(" runs compared · Δ in pp ", theme));
    let mut state = TableState::default().with_selected(Some(selected));
    frame.render_stateful_widget(table, area, &mut state);
}

fn render_scatter(
    frame: &mut Frame,
    area: Rect,
    rows: &[CompareRow],
    selected: usize,
    theme: &Theme,
) {
    let points: Vec<(usize, f64, f64)> = rows
        .iter()
        .enumerate()
        .filter_map(|(i, r)| Some((i, finite(r.delta_heldout)?, finite(r.delta_learning)?)))
        .collect();
    let xs = bounds(points.iter().map(|p| p.1).chain([0.0]), 0.15);
    let ys = bounds(points.iter().map(|p| p.2).chain([0.0]), 0.15);
    let missing = rows.len() - points.len();
    let mut footer = format!(
        " x Δ held-out {}…{} · y Δ learning {}…{} · ↗ better ",
        fmt_num(Some(xs[0]), 1),
        fmt_num(Some(xs[1]), 1),
        fmt_num(Some(ys[0]), 1),
        fmt_num(Some(ys[1]), 1)
    );
    if missing > 0 {
        footer.push_str(&format!("· {missing} without eval "));
    }
    let block = titled_block(" Δ learning vs Δ held-out ", theme).title_bottom(Line::styled(
        truncate(&footer, area.width.saturating_sub(2) as usize),
        theme.muted(),
    ));
    if points.is_empty() {
        let inner = block.inner(area);
        frame.render_widget(block, area);
        render_message(frame.buffer_mut(), inner, "no evaluated runs yet", theme);
        return;
    }
    let axis = theme.muted().fg.unwrap_or_default();
    let labels: Vec<(f64, f64, Line<'static>)> = points
        .iter()
        .map(|&(i, x, y)| {
            let line = if i == selected {
                Line::from(Span::styled(
                    format!("●{} {}", i + 1, rows[i].recipe),
                    theme.selected().fg(theme.accent),
                ))
            } else {
                Line::from(Span::styled(
                    format!("●{}", i + 1),
                    Style::default().fg(theme.now),
                ))
            };
            (x, y, line)
        })
        .collect();
    // The selected run is printed last so it stays on top.
    let order: Vec<usize> = (0..labels.len())
        .filter(|&k| points[k].0 != selected)
        .chain((0..labels.len()).filter(|&k| points[k].0 == selected))
        .collect();
    let canvas = Canvas::default()
        .block(block)
        .marker(Marker::Braille)
        .x_bounds(xs)
        .y_bounds(ys)
        .paint(move |ctx| {
            ctx.draw(&CanvasLine {
                x1: xs[0],
                y1: 0.0,
                x2: xs[1],
                y2: 0.0,
                color: axis,
            });
            ctx.draw(&CanvasLine {
                x1: 0.0,
                y1: ys[0],
                x2: 0.0,
                y2: ys[1],
                color: axis,
            });
            for &k in &order {
                let (x, y, line) = &labels[k];
                ctx.print(*x, *y, line.clone());
            }
        });
    frame.render_widget(canvas, area);
}
