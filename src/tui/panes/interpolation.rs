//! The interpolation view: a table of the α grid (Δ target, Δ held-out, numeric mass, KL) with
//! the cursor and the best α marked, beside two curves along α: learning against forgetting, and
//! the held-out numeric mass.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::Line;
use ratatui::widgets::{Cell, Paragraph, Row, Table};
use ratatui::Frame;

use super::widgets::{delta_style, render_series_chart, titled_block, Series};
use crate::tui::app::run_name;
use crate::tui::format::{fmt_num, fmt_prob, fmt_signed};
use crate::tui::interpolation::{alpha_at, grid_index, InterpolationView, ALPHAS};
use crate::tui::theme::Theme;

/// Draws the view of `view` in `area`.
pub fn render_interpolation(
    frame: &mut Frame,
    area: Rect,
    view: &InterpolationView,
    theme: &Theme,
) {
    let state = if let Some(error) = &view.error {
        format!("failed: {error}")
    } else if !view.opened && !view.pending.is_empty() {
        "opening the run (base references)…".to_string()
    } else if !view.pending.is_empty() {
        format!("scoring {} point(s)…", view.pending.len())
    } else {
        "ready".to_string()
    };
    let title = format!(
        " WiSE-FT · {} · α 0 = base, 1 = tuned · {state} ",
        run_name(&view.run)
    );
    let block = titled_block(title, theme);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let [table_area, charts] =
        Layout::horizontal([Constraint::Length(52), Constraint::Min(20)]).areas(inner);
    render_table(frame, table_area, view, theme);
    let [deltas, mass] =
        Layout::vertical([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(charts);
    render_curves(frame, deltas, mass, view, theme);
}

fn render_table(frame: &mut Frame, area: Rect, view: &InterpolationView, theme: &Theme) {
    let best = view.best().map(grid_index);
    let right = |text: String| Cell::from(Line::from(text).right_aligned());
    let rows: Vec<Row> = (0..ALPHAS)
        .map(|i| {
            let point = view.points.get(&i);
            let mark = match (best == Some(i), view.pending.contains(&i)) {
                (true, _) => "★",
                (_, true) => "…",
                _ => " ",
            };
            let row = Row::new(vec![
                Cell::from(mark).style(theme.accent()),
                right(format!("{:.1}", alpha_at(i))).style(theme.text()),
                right(fmt_signed(point.and_then(|p| p.delta_target), 1))
                    .style(delta_style(point.and_then(|p| p.delta_target), theme)),
                right(fmt_signed(point.and_then(|p| p.delta_heldout), 1))
                    .style(delta_style(point.and_then(|p| p.delta_heldout), theme)),
                right(fmt_prob(point.and_then(|p| p.heldout_numeric_mass))).style(theme.numeric()),
                right(fmt_num(point.and_then(|p| p.heldout_kl), 3)).style(theme.text()),
            ]);
            if i == view.cursor {
                row.style(theme.selected())
            } else {
                row
            }
        })
        .collect();
    let header = Row::new(["", "α", "Δ target", "Δ held", "num mass", "KL"]).style(theme.muted());
    let widths = [
        Constraint::Length(1),
        Constraint::Length(4),
        Constraint::Length(9),
        Constraint::Length(8),
        Constraint::Length(9),
        Constraint::Length(7),
    ];
    let [table, help] = Layout::vertical([Constraint::Min(3), Constraint::Length(3)]).areas(area);
    frame.render_widget(Table::new(rows, widths).header(header), table);
    let hint =
        "Enter score α · a all · w write best · Esc close\n★ best: largest Δ target + Δ held-out";
    frame.render_widget(Paragraph::new(hint).style(theme.muted()), help);
}

fn render_curves(
    frame: &mut Frame,
    deltas: Rect,
    mass: Rect,
    view: &InterpolationView,
    theme: &Theme,
) {
    let along = |f: fn(&crate::interpolate::AlphaPoint) -> Option<f64>| -> Vec<(f64, f64)> {
        view.points
            .values()
            .filter_map(|p| Some((p.alpha, f(p).filter(|v| v.is_finite())?)))
            .collect()
    };
    let target = along(|p| p.delta_target);
    let heldout = along(|p| p.delta_heldout);
    let numeric = along(|p| p.heldout_numeric_mass);
    let deltas_series = [
        ("Δ target", target.as_slice(), theme.good()),
        ("Δ held-out", heldout.as_slice(), theme.bad()),
    ];
    let delta_label: fn(Option<f64>) -> String = |v| fmt_signed(v, 1);
    chart_panel(
        frame,
        deltas,
        " Δ target (learning) · Δ held-out, pp ",
        &deltas_series,
        delta_label,
        theme,
    );
    let mass_series = [("numeric mass", numeric.as_slice(), theme.numeric())];
    chart_panel(
        frame,
        mass,
        " held-out numeric mass along α ",
        &mass_series,
        fmt_prob,
        theme,
    );
}

/// A titled block holding a line chart of `series`.
fn chart_panel(
    frame: &mut Frame,
    area: Rect,
    title: &str,
    series: &[Series],
    fmt_y: fn(Option<f64>) -> String,
    theme: &Theme,
) {
    let block = titled_block(title.to_string(), theme);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    render_series_chart(frame, inner, series, theme, fmt_y);
}
