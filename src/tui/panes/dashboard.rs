//! The live dashboard of one run: loss and learning rate with progress, the token-distribution
//! histogram (base vs now), numeric mass over steps, the held-out score table and per-layer
//! drift. Pure rendering of a [`RunSnapshot`]; it never panics on missing or non-finite data.
//!
//! Layout: at 120×30 and larger all five panels share the area (loss | scores on top,
//! histogram | numeric mass | layer drift below). Smaller areas show loss on top and
//! histogram | scores below (histogram only when narrower than 60 columns), with a numeric-mass
//! summary line in the histogram panel and a `z: zoom` hint naming the hidden panels; under 14
//! rows only the loss panel is drawn. `zoom` draws one panel over the whole area.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Axis, BorderType, Cell, Chart, Dataset, Gauge, GraphType, Row, Sparkline, Table,
};
use ratatui::Frame;

use super::widgets::{bar, delta_style, put_line, render_message, state_style, titled_block};
use crate::eval::tasks::{TaskRole, TaskScore};
use crate::run::reader::RunSnapshot;
use crate::tui::format::{
    escape_line, escape_token, fmt_compact, fmt_duration, fmt_lr, fmt_num, fmt_prob, fmt_rate,
    fmt_signed, fmt_value, pad, pad_left, text_width, truncate,
};
use crate::tui::series::{bounds, finite, finite_max, finite_points, last_finite, resample};
use crate::tui::theme::Theme;

/// One panel of the dashboard (the unit of zoom).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DashPanel {
    Loss,
    Histogram,
    NumericMass,
    Scores,
    LayerDrift,
}

impl DashPanel {
    /// Every panel, in zoom-cycling order.
    pub const ALL: [DashPanel; 5] = [
        DashPanel::Loss,
        DashPanel::Histogram,
        DashPanel::NumericMass,
        DashPanel::Scores,
        DashPanel::LayerDrift,
    ];

    /// The next panel in [`DashPanel::ALL`], wrapping around.
    pub fn next(self) -> Self {
        let i = Self::ALL.iter().position(|p| *p == self).unwrap_or(0);
        Self::ALL[(i + 1) % Self::ALL.len()]
    }

    /// The previous panel in [`DashPanel::ALL`], wrapping around.
    pub fn prev(self) -> Self {
        let i = Self::ALL.iter().position(|p| *p == self).unwrap_or(0);
        Self::ALL[(i + Self::ALL.len() - 1) % Self::ALL.len()]
    }

    /// Short name, as used in hints.
    pub fn label(self) -> &'static str {
        match self {
            DashPanel::Loss => "loss",
            DashPanel::Histogram => "histogram",
            DashPanel::NumericMass => "mass",
            DashPanel::Scores => "scores",
            DashPanel::LayerDrift => "drift",
        }
    }
}

/// Where each visible panel goes, for an area of this size.
pub fn dashboard_layout(area: Rect) -> Vec<(DashPanel, Rect)> {
    if area.is_empty() {
        return Vec::new();
    }
    if area.width >= 120 && area.height >= 30 {
        let [top, bottom] =
            Layout::vertical([Constraint::Percentage(45), Constraint::Fill(1)]).areas(area);
        let [loss, scores] =
            Layout::horizontal([Constraint::Percentage(55), Constraint::Fill(1)]).areas(top);
        let [hist, mass, drift] = Layout::horizontal([
            Constraint::Percentage(42),
            Constraint::Percentage(33),
            Constraint::Fill(1),
        ])
        .areas(bottom);
        return vec![
            (DashPanel::Loss, loss),
            (DashPanel::Scores, scores),
            (DashPanel::Histogram, hist),
            (DashPanel::NumericMass, mass),
            (DashPanel::LayerDrift, drift),
        ];
    }
    if area.height < 14 {
        return vec![(DashPanel::Loss, area)];
    }
    let top_height = (area.height * 2 / 5).clamp(7, 12);
    let [top, bottom] =
        Layout::vertical([Constraint::Length(top_height), Constraint::Fill(1)]).areas(area);
    if area.width < 60 {
        return vec![(DashPanel::Loss, top), (DashPanel::Histogram, bottom)];
    }
    let [hist, scores] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Fill(1)]).areas(bottom);
    vec![
        (DashPanel::Loss, top),
        (DashPanel::Histogram, hist),
        (DashPanel::Scores, scores),
    ]
}

/// Draws the dashboard of `snap` into `area`; `title` names the run, `zoom` shows one panel only.
pub fn render_dashboard(
    frame: &mut Frame,
    area: Rect,
    snap: &RunSnapshot,
    title: &str,
    theme: &Theme,
    zoom: Option<DashPanel>,
) {
    render_dashboard_focused(frame, area, snap, title, theme, zoom, None);
}

/// [`render_dashboard`] with the `focus` panel's border and title emphasised (the panel `z` zooms).
pub fn render_dashboard_focused(
    frame: &mut Frame,
    area: Rect,
    snap: &RunSnapshot,
    title: &str,
    theme: &Theme,
    zoom: Option<DashPanel>,
    focus: Option<DashPanel>,
) {
    let area = area.intersection(frame.area());
    if area.is_empty() {
        return;
    }
    if let Some(panel) = zoom {
        let ctx = PanelCtx {
            title,
            hint: "z: back · n: next".to_string(),
            zoomed: true,
            compact: false,
            focused: false,
        };
        render_panel(frame, area, snap, theme, panel, &ctx);
        return;
    }
    let placed = dashboard_layout(area);
    let hidden: Vec<&str> = DashPanel::ALL
        .iter()
        .filter(|p| !placed.iter().any(|(q, _)| q == *p))
        .map(|p| p.label())
        .collect();
    let hint = if hidden.is_empty() {
        "z: zoom".to_string()
    } else {
        format!("z: zoom · +{}", hidden.join(", "))
    };
    let compact = hidden.contains(&DashPanel::NumericMass.label());
    for (panel, rect) in placed {
        let ctx = PanelCtx {
            title,
            hint: if panel == DashPanel::Loss {
                hint.clone()
            } else {
                String::new()
            },
            zoomed: false,
            compact,
            focused: focus == Some(panel),
        };
        render_panel(frame, rect, snap, theme, panel, &ctx);
    }
}

struct PanelCtx<'a> {
    /// The run's name.
    title: &'a str,
    /// Right-aligned hint in the panel's border.
    hint: String,
    zoomed: bool,
    /// Other panels are hidden: fold their essentials in.
    compact: bool,
    /// Emphasise the border.
    focused: bool,
}

fn render_panel(
    frame: &mut Frame,
    area: Rect,
    snap: &RunSnapshot,
    theme: &Theme,
    panel: DashPanel,
    ctx: &PanelCtx,
) {
    if area.is_empty() {
        return;
    }
    let name = match panel {
        DashPanel::Loss => "loss · lr".to_string(),
        DashPanel::Histogram => match snap.histogram_step {
            Some(step) => format!("token distribution · probe step {step}"),
            None => "token distribution · no probe yet".to_string(),
        },
        DashPanel::NumericMass => "numeric mass · held-out / target".to_string(),
        DashPanel::Scores => match snap.eval_step {
            Some(step) => format!("held-out scores · eval step {step}"),
            None => "held-out scores".to_string(),
        },
        DashPanel::LayerDrift => "layer drift · attn / mlp".to_string(),
    };
    let show_run = !ctx.title.is_empty() && (ctx.zoomed || panel == DashPanel::Loss);
    let title = if show_run {
        format!(" {} · {name} ", escape_line(ctx.title))
    } else {
        format!(" {name} ")
    };
    let mut block = titled_block(
        truncate(&title, area.width.saturating_sub(2) as usize),
        theme,
    );
    if !ctx.hint.is_empty() {
        let room = (area.width as usize).saturating_sub(text_width(&title) + 4);
        if room >= 9 {
            block = block.title_top(
                Line::from(format!(" {} ", truncate(&ctx.hint, room - 2)))
                    .right_aligned()
                    .style(theme.muted()),
            );
        }
    }
    if ctx.focused {
        block = block
            .border_style(Style::default().fg(theme.accent))
            .border_type(BorderType::Thick);
    }
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if inner.is_empty() {
        return;
    }
    match panel {
        DashPanel::Loss => render_loss(frame, inner, snap, theme),
        DashPanel::Histogram => render_histogram(frame, inner, snap, theme, ctx.compact),
        DashPanel::NumericMass => render_mass(frame, inner, snap, theme),
        DashPanel::Scores => render_scores(frame, inner, snap, theme),
        DashPanel::LayerDrift => render_drift(frame, inner, snap, theme),
    }
}

// ---------------------------------------------------------------------------------------------
// (a) loss, learning rate, progress

fn render_loss(frame: &mut Frame, area: Rect, snap: &RunSnapshot, theme: &Theme) {
    let status = snap.status.as_ref();
    let state = status.map_or("waiting", |s| s.state.as_str());
    let (step, total) = status.map_or((None, None), |s| (Some(s.step), Some(s.total_steps)));
    let step_text = match (step, total) {
        (Some(s), Some(t)) => format!("{s}/{t}"),
        _ => "–/–".to_string(),
    };
    let sep = || Span::styled("  ", theme.muted());
    let stats = Line::from(vec![
        Span::styled(
            state.to_string(),
            state_style(state, theme).add_modifier(Modifier::BOLD),
        ),
        sep(),
        Span::styled("step ", theme.muted()),
        Span::styled(step_text.clone(), theme.text()),
        sep(),
        Span::styled("loss ", theme.muted()),
        Span::styled(
            fmt_value(last_finite(&snap.loss)),
            Style::default().fg(theme.now),
        ),
        sep(),
        Span::styled(
            match finite(snap.tokens_per_s) {
                Some(rate) => fmt_rate(Some(rate)),
                None => "– tok/s".to_string(),
            },
            theme.text(),
        ),
        sep(),
        Span::styled("ETA ", theme.muted()),
        Span::styled(fmt_duration(snap.eta_seconds()), theme.text()),
        sep(),
        Span::styled("elapsed ", theme.muted()),
        Span::styled(fmt_duration(snap.elapsed), theme.text()),
    ]);
    let mut y = area.y;
    put_line(frame.buffer_mut(), area, y, &stats);
    y += 1;
    if y >= area.bottom() {
        return;
    }
    // Progress gauge.
    let ratio = match (step, total) {
        (Some(s), Some(t)) if t > 0 => (s as f64 / t as f64).clamp(0.0, 1.0),
        _ => 0.0,
    };
    let label = format!("{step_text} · {:.0}%", ratio * 100.0);
    let gauge = Gauge::default()
        .ratio(ratio)
        .label(Span::styled(
            label,
            theme.text().add_modifier(Modifier::BOLD),
        ))
        .gauge_style(Style::default().fg(theme.accent).bg(theme.background))
        .use_unicode(true);
    frame.render_widget(gauge, Rect::new(area.x, y, area.width, 1));
    y += 1;
    // Newest noteworthy message: error, guard, or event.
    let rest = area.bottom().saturating_sub(y);
    if rest >= 6 {
        let message = status
            .and_then(|s| s.last_error.clone())
            .map(|e| (format!("error: {e}"), theme.bad()))
            .or_else(|| {
                snap.guard_messages
                    .last()
                    .map(|g| (format!("guard: {g}"), theme.warn()))
            })
            .or_else(|| snap.last_event.clone().map(|e| (e, theme.muted())));
        if let Some((text, style)) = message {
            let text = escape_line(&text);
            put_line(frame.buffer_mut(), area, y, &Line::styled(text, style));
            y += 1;
        }
    }
    let rest = Rect::new(area.x, y, area.width, area.bottom().saturating_sub(y));
    if rest.is_empty() {
        return;
    }
    let loss = finite_points(&snap.loss);
    let lr = finite_points(&snap.lr);
    if loss.is_empty() {
        render_message(
            frame.buffer_mut(),
            rest,
            "waiting for the first training step…",
            theme,
        );
        return;
    }
    // Learning rate as a one-row sparkline under the chart when there is room.
    let (chart_area, lr_area) = if !lr.is_empty() && rest.height >= 6 {
        let [c, l] = Layout::vertical([Constraint::Fill(1), Constraint::Length(1)]).areas(rest);
        (c, Some(l))
    } else {
        (rest, None)
    };
    if chart_area.height >= 5 && chart_area.width >= 24 {
        render_series_chart(
            frame,
            chart_area,
            &[("loss", &loss, Style::default().fg(theme.now))],
            theme,
            fmt_value,
        );
    } else {
        let values: Vec<f64> = loss.iter().map(|(_, y)| *y).collect();
        render_sparkline(
            frame,
            chart_area,
            "loss ",
            &values,
            Style::default().fg(theme.now),
            theme,
        );
    }
    if let Some(lr_area) = lr_area {
        let values: Vec<f64> = lr.iter().map(|(_, y)| *y).collect();
        let label = format!("lr {} ", fmt_lr(values.last().copied()));
        render_sparkline(frame, lr_area, &label, &values, theme.muted(), theme);
    }
}

/// A labelled one-row-or-more sparkline of `values` (resampled to the width, scaled to the max).
fn render_sparkline(
    frame: &mut Frame,
    area: Rect,
    label: &str,
    values: &[f64],
    style: Style,
    theme: &Theme,
) {
    if area.is_empty() {
        return;
    }
    let label_width = (text_width(label) as u16).min(area.width / 2);
    put_line(
        frame.buffer_mut(),
        Rect::new(area.x, area.y, label_width, 1),
        area.y,
        &Line::styled(truncate(label, label_width as usize), theme.muted()),
    );
    let spark = Rect::new(
        area.x + label_width,
        area.y,
        area.width - label_width,
        area.height,
    );
    if spark.is_empty() {
        return;
    }
    let samples = resample(values, spark.width as usize);
    let [lo, hi] = bounds(samples.iter().copied(), 0.0);
    let data: Vec<u64> = samples
        .iter()
        .map(|v| {
            if v.is_finite() {
                (((v - lo) / (hi - lo)).clamp(0.0, 1.0) * 99.0) as u64 + 1
            } else {
                0
            }
        })
        .collect();
    frame.render_widget(
        Sparkline::default().data(&data).max(100).style(style),
        spark,
    );
}

/// A named, styled series of (x, y) points.
type Series<'a> = (&'a str, &'a [(f64, f64)], Style);

/// A braille line chart of finite series with 2–3 labels per axis.
fn render_series_chart(
    frame: &mut Frame,
    area: Rect,
    series: &[Series],
    theme: &Theme,
    fmt_y: fn(Option<f64>) -> String,
) {
    let xs = bounds(
        series
            .iter()
            .flat_map(|(_, pts, _)| pts.iter().map(|p| p.0)),
        0.0,
    );
    let ys = bounds(
        series
            .iter()
            .flat_map(|(_, pts, _)| pts.iter().map(|p| p.1)),
        0.05,
    );
    chart_with_bounds(frame, area, series, theme, xs, ys, fmt_y);
}

fn chart_with_bounds(
    frame: &mut Frame,
    area: Rect,
    series: &[Series],
    theme: &Theme,
    xs: [f64; 2],
    ys: [f64; 2],
    fmt_y: fn(Option<f64>) -> String,
) {
    let datasets: Vec<Dataset> = series
        .iter()
        .map(|(name, pts, style)| {
            Dataset::default()
                .name(name.to_string())
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(*style)
                .data(pts)
        })
        .collect();
    let x_labels = vec![
        Span::styled(format!("{:.0}", xs[0]), theme.muted()),
        Span::styled(format!("{:.0}", xs[1]), theme.muted()),
    ];
    let mid = (ys[0] + ys[1]) / 2.0;
    let y_labels: Vec<Span> = if area.height >= 7 {
        vec![ys[0], mid, ys[1]]
    } else {
        vec![ys[0], ys[1]]
    }
    .into_iter()
    .map(|v| Span::styled(fmt_y(Some(v)), theme.muted()))
    .collect();
    let chart = Chart::new(datasets)
        .legend_position(None)
        .x_axis(
            Axis::default()
                .bounds(xs)
                .labels(x_labels)
                .style(theme.border()),
        )
        .y_axis(
            Axis::default()
                .bounds(ys)
                .labels(y_labels)
                .style(theme.border()),
        );
    frame.render_widget(chart, area);
}

// ---------------------------------------------------------------------------------------------
// (b) token-distribution histogram

fn render_histogram(
    frame: &mut Frame,
    area: Rect,
    snap: &RunSnapshot,
    theme: &Theme,
    with_mass: bool,
) {
    let mut y = area.y;
    if with_mass && area.height >= 4 {
        let last = snap.probes.last();
        let line = Line::from(vec![
            Span::styled("numeric mass ", theme.muted()),
            Span::styled(
                fmt_prob(last.and_then(|p| p.heldout_base_mass)),
                Style::default().fg(theme.base),
            ),
            Span::styled(" → ", theme.muted()),
            Span::styled(fmt_prob(last.and_then(|p| p.heldout_mass)), theme.numeric()),
            Span::styled("  KL ", theme.muted()),
            Span::styled(fmt_num(last.and_then(|p| p.kl), 4), theme.text()),
        ]);
        put_line(frame.buffer_mut(), area, y, &line);
        y += 1;
    }
    let entries = &snap.histogram;
    if entries.is_empty() {
        let rest = Rect::new(area.x, y, area.width, area.bottom().saturating_sub(y));
        render_message(frame.buffer_mut(), rest, "no probe snapshot yet", theme);
        return;
    }
    let w = area.width as usize;
    // Columns: marker (2) · token · gap · base bar [value] · sep · now bar [value].
    let token_w = (w / 5).clamp(3, 14).min(w.saturating_sub(2));
    let rest_w = w.saturating_sub(2 + token_w + 1);
    let values = rest_w >= 34;
    let value_w = if values { 7 } else { 0 };
    let sep_w = if rest_w >= 8 { 3 } else { 1 };
    let bar_w = rest_w.saturating_sub(2 * value_w + sep_w) / 2;
    let max = finite_max(entries.iter().flat_map(|e| [e.base as f64, e.now as f64]));
    let rows_left = area.bottom().saturating_sub(y) as usize;
    if rows_left >= 3 {
        let header = Line::from(vec![
            Span::styled(pad("# token", 2 + token_w + 1), theme.muted()),
            Span::styled(
                pad("base", bar_w + value_w),
                Style::default().fg(theme.base).add_modifier(Modifier::BOLD),
            ),
            Span::raw(" ".repeat(sep_w)),
            Span::styled(
                pad("now", bar_w + value_w),
                Style::default().fg(theme.now).add_modifier(Modifier::BOLD),
            ),
        ]);
        put_line(frame.buffer_mut(), area, y, &header);
        y += 1;
    }
    let rows_left = area.bottom().saturating_sub(y) as usize;
    let shown = if entries.len() > rows_left {
        rows_left.saturating_sub(1)
    } else {
        entries.len()
    };
    let sep = if sep_w == 3 { " │ " } else { " " };
    for e in entries.iter().take(shown) {
        let token_style = if e.numeric {
            theme.numeric()
        } else {
            theme.text()
        };
        let marker = if e.numeric {
            Span::styled("# ", theme.numeric())
        } else {
            Span::raw("  ")
        };
        let value = |v: f32| pad_left(&fmt_prob(Some(v as f64)), value_w);
        let mut spans = vec![
            marker,
            Span::styled(pad(&escape_token(&e.token, token_w), token_w), token_style),
            Span::raw(" "),
            Span::styled(
                pad(&bar(e.base as f64, max, bar_w), bar_w),
                Style::default().fg(theme.base),
            ),
        ];
        if values {
            spans.push(Span::styled(value(e.base), theme.muted()));
        }
        spans.push(Span::styled(sep, theme.border()));
        spans.push(Span::styled(
            pad(&bar(e.now as f64, max, bar_w), bar_w),
            Style::default().fg(theme.now),
        ));
        if values {
            let changed = (e.now - e.base).abs() as f64 > 0.1 * max;
            spans.push(Span::styled(
                value(e.now),
                if changed { theme.warn() } else { theme.text() },
            ));
        }
        put_line(frame.buffer_mut(), area, y, &Line::from(spans));
        y += 1;
    }
    if shown < entries.len() && y < area.bottom() {
        let more = format!("  +{} more tokens", entries.len() - shown);
        put_line(
            frame.buffer_mut(),
            area,
            y,
            &Line::styled(more, theme.muted()),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// (c) numeric mass over steps

fn render_mass(frame: &mut Frame, area: Rect, snap: &RunSnapshot, theme: &Theme) {
    let last = snap.probes.last();
    let base_of = |get: fn(&crate::run::reader::ProbePoint) -> Option<f64>| {
        snap.probes.iter().rev().find_map(|p| finite(get(p)))
    };
    let heldout_base = base_of(|p| p.heldout_base_mass);
    let target_base = base_of(|p| p.target_base_mass);
    let heldout_style = Style::default().fg(theme.now);
    let target_style = Style::default().fg(theme.numeric);
    let base_style = Style::default().fg(theme.base);
    let heldout_spans = vec![
        Span::styled("━ held-out ", heldout_style),
        Span::styled(
            fmt_prob(last.and_then(|p| p.heldout_mass)),
            theme.text().add_modifier(Modifier::BOLD),
        ),
        Span::styled(" base ", theme.muted()),
        Span::styled(fmt_prob(heldout_base), base_style),
    ];
    let target_spans = vec![
        Span::styled("━ target ", target_style),
        Span::styled(
            fmt_prob(last.and_then(|p| p.target_mass)),
            theme.text().add_modifier(Modifier::BOLD),
        ),
        Span::styled(" base ", theme.muted()),
        Span::styled(fmt_prob(target_base), base_style),
    ];
    let divergence = Line::from(vec![
        Span::styled("KL ", theme.muted()),
        Span::styled(fmt_num(last.and_then(|p| p.kl), 4), theme.text()),
        Span::styled("  entropy ", theme.muted()),
        Span::styled(fmt_num(last.and_then(|p| p.entropy), 3), theme.text()),
        Span::styled("  1st-token numeric ", theme.muted()),
        Span::styled(
            fmt_prob(last.and_then(|p| p.first_token_numeric)),
            theme.text(),
        ),
    ]);
    let both: Line = [
        heldout_spans.clone(),
        vec![Span::raw("   ")],
        target_spans.clone(),
    ]
    .concat()
    .into();
    let lines = if both.width() <= area.width as usize || area.height < 9 {
        vec![both, divergence]
    } else {
        vec![heldout_spans.into(), target_spans.into(), divergence]
    };
    let mut y = area.y;
    for line in &lines {
        put_line(frame.buffer_mut(), area, y, line);
        y += 1;
    }
    let rest = Rect::new(
        area.x,
        y.min(area.bottom()),
        area.width,
        area.bottom().saturating_sub(y),
    );
    if rest.is_empty() {
        return;
    }
    let series = |get: fn(&crate::run::reader::ProbePoint) -> Option<f64>| -> Vec<(f64, f64)> {
        snap.probes
            .iter()
            .filter_map(|p| Some((p.step, finite(get(p))?)))
            .filter(|(x, _)| x.is_finite())
            .collect()
    };
    let heldout = series(|p| p.heldout_mass);
    let target = series(|p| p.target_mass);
    if heldout.is_empty() && target.is_empty() {
        render_message(frame.buffer_mut(), rest, "no probe yet", theme);
        return;
    }
    if rest.height < 5 || rest.width < 24 {
        let values: Vec<f64> = heldout.iter().map(|p| p.1).collect();
        render_sparkline(frame, rest, "held-out ", &values, heldout_style, theme);
        return;
    }
    let xs = bounds(heldout.iter().chain(&target).map(|p| p.0), 0.0);
    let all_y = heldout
        .iter()
        .chain(&target)
        .map(|p| p.1)
        .chain(heldout_base)
        .chain(target_base);
    let [lo, hi] = bounds(all_y, 0.1);
    let ys = [lo.max(0.0), hi.max(lo.max(0.0) + 1e-6)];
    let reference = |v: Option<f64>| v.map(|b| vec![(xs[0], b), (xs[1], b)]).unwrap_or_default();
    let (hb, tb) = (reference(heldout_base), reference(target_base));
    let series = [
        ("held-out base", hb.as_slice(), base_style),
        (
            "target base",
            tb.as_slice(),
            base_style.add_modifier(Modifier::DIM),
        ),
        ("target", target.as_slice(), target_style),
        ("held-out", heldout.as_slice(), heldout_style),
    ];
    chart_with_bounds(frame, rest, &series, theme, xs, ys, fmt_prob);
}

// ---------------------------------------------------------------------------------------------
// (d) held-out score table

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

fn render_scores(frame: &mut Frame, area: Rect, snap: &RunSnapshot, theme: &Theme) {
    let dl = finite(snap.delta_learning);
    let dh = finite(snap.delta_heldout);
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
    let rows = score_rows(snap);
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

// ---------------------------------------------------------------------------------------------
// (e) per-layer drift

fn render_drift(frame: &mut Frame, area: Rect, snap: &RunSnapshot, theme: &Theme) {
    let layers = &snap.layer_drift;
    if layers.is_empty() {
        render_message(frame.buffer_mut(), area, "no layer drift yet", theme);
        return;
    }
    let attn_style = Style::default().fg(theme.accent);
    let mlp_style = Style::default().fg(theme.warn);
    let mut y = area.y;
    let with_header = area.height >= 3;
    let rows_available = (area.height - u16::from(with_header)) as usize;
    // Fold neighbouring layers together (max of each block) when they do not all fit.
    let per_row = layers.len().div_ceil(rows_available.max(1)).max(1);
    let groups: Vec<(String, f64, f64)> = layers
        .chunks(per_row)
        .map(|chunk| {
            let (first, last) = (chunk[0].layer, chunk[chunk.len() - 1].layer);
            let label = if first == last {
                format!("L{first}")
            } else {
                format!("L{first}-{last}")
            };
            // NaN when the group has no finite value: no bar, "–".
            let group_max = |values: Vec<f64>| {
                values
                    .into_iter()
                    .filter(|v| v.is_finite())
                    .reduce(f64::max)
                    .unwrap_or(f64::NAN)
            };
            let attn = group_max(chunk.iter().map(|l| l.attn).collect());
            let mlp = group_max(chunk.iter().map(|l| l.mlp).collect());
            (label, attn, mlp)
        })
        .collect();
    let max = finite_max(groups.iter().flat_map(|g| [g.1, g.2]));
    let w = area.width as usize;
    let label_w = groups
        .iter()
        .map(|g| text_width(&g.0))
        .max()
        .unwrap_or(2)
        .min(w / 3)
        .max(1);
    let rest_w = w.saturating_sub(label_w + 1);
    let values = rest_w >= 24;
    let value_w = if values { 6 } else { 0 };
    let bar_w = rest_w.saturating_sub(2 * value_w + 1) / 2;
    if with_header {
        let header = Line::from(vec![
            Span::styled(
                pad(if label_w >= 5 { "layer" } else { "" }, label_w + 1),
                theme.muted(),
            ),
            Span::styled(
                pad("attn", bar_w + value_w + 1),
                attn_style.add_modifier(Modifier::BOLD),
            ),
            Span::styled(
                pad("mlp", bar_w + value_w),
                mlp_style.add_modifier(Modifier::BOLD),
            ),
        ]);
        put_line(frame.buffer_mut(), area, y, &header);
        y += 1;
    }
    for (label, attn, mlp) in groups {
        if y >= area.bottom() {
            break;
        }
        let mut spans = vec![
            Span::styled(pad(&label, label_w), theme.muted()),
            Span::raw(" "),
            Span::styled(pad(&bar(attn, max, bar_w), bar_w), attn_style),
        ];
        if values {
            spans.push(Span::styled(
                pad_left(&fmt_compact(attn), value_w),
                theme.text(),
            ));
        }
        spans.push(Span::raw(" "));
        spans.push(Span::styled(pad(&bar(mlp, max, bar_w), bar_w), mlp_style));
        if values {
            spans.push(Span::styled(
                pad_left(&fmt_compact(mlp), value_w),
                theme.text(),
            ));
        }
        put_line(frame.buffer_mut(), area, y, &Line::from(spans));
        y += 1;
    }
}
