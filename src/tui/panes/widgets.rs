//! Small drawing pieces shared by the panes: a titled block, bar glyphs, state and delta
//! styles, a line or a centred message written into a buffer, a labelled sparkline and a braille
//! line chart. Formatting lives in
//! [`crate::tui::format`], series maths in [`crate::tui::series`].

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Block, Borders, Chart, Dataset, GraphType, Sparkline};
use ratatui::Frame;

use crate::tui::format::{fmt_signed, pad_left, text_width, truncate};
use crate::tui::series::{bounds, finite, resample};
use crate::tui::theme::Theme;

/// A bordered block with a title, in the theme's border and accent styles.
pub fn titled_block<'a>(title: impl Into<Line<'a>>, theme: &Theme) -> Block<'a> {
    Block::default()
        .borders(Borders::ALL)
        .border_style(theme.border())
        .title(title.into().style(theme.accent()))
}

const EIGHTHS: [&str; 8] = ["", "▏", "▎", "▍", "▌", "▋", "▊", "▉"];

/// A horizontal bar of `value / max` of `width` cells, in eighths of a cell; empty for missing or
/// non-positive values. A positive value always shows at least a sliver.
pub fn bar(value: f64, max: f64, width: usize) -> String {
    if !(value.is_finite() && max.is_finite()) || value <= 0.0 || max <= 0.0 || width == 0 {
        return String::new();
    }
    let eighths = ((value / max).min(1.0) * width as f64 * 8.0)
        .round()
        .max(1.0) as usize;
    let eighths = eighths.min(width * 8);
    let mut out = "█".repeat(eighths / 8);
    out.push_str(EIGHTHS[eighths % 8]);
    out
}

/// Style of a signed change: good when positive, bad when negative, muted otherwise.
pub fn delta_style(v: Option<f64>, theme: &Theme) -> Style {
    match finite(v) {
        Some(x) if x > 0.0 && fmt_signed(Some(x), 1).starts_with('+') => theme.good(),
        Some(x) if x < 0.0 && fmt_signed(Some(x), 1).starts_with('-') => theme.bad(),
        _ => theme.muted(),
    }
}

/// Writes `line` into row `y` of `area` (nothing when `y` is outside it).
pub fn put_line(buf: &mut Buffer, area: Rect, y: u16, line: &Line) {
    if area.width == 0 || y < area.top() || y >= area.bottom() {
        return;
    }
    buf.set_line(area.x, y, line, area.width);
}

/// A centred muted message in `area`.
pub fn render_message(buf: &mut Buffer, area: Rect, text: &str, theme: &Theme) {
    if area.is_empty() {
        return;
    }
    let text = truncate(text, area.width as usize);
    let x = area.x + (area.width.saturating_sub(text_width(&text) as u16)) / 2;
    let y = area.y + area.height.saturating_sub(1) / 2;
    buf.set_string(x, y, text, theme.muted());
}

/// Style of a run state: running accent, finished good, failed (or dead) bad, stopped warn,
/// anything else muted.
pub fn state_style(state: &str, theme: &Theme) -> Style {
    match state {
        "running" => theme.accent(),
        "finished" => theme.good(),
        "failed" | "dead" => theme.bad(),
        "stopped" => theme.warn(),
        _ => theme.muted(),
    }
}

/// A labelled one-row-or-more sparkline of `values` (resampled to the width, scaled to the max).
pub fn render_sparkline(
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
pub type Series<'a> = (&'a str, &'a [(f64, f64)], Style);

/// A braille line chart of finite series with 2–3 labels per axis.
pub fn render_series_chart(
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
    line_chart(frame, area, series, theme, ChartAxes::new(xs, ys, fmt_y));
}

/// Axes of a [`line_chart`].
pub struct ChartAxes<'a> {
    pub xs: [f64; 2],
    pub ys: [f64; 2],
    /// Formats a y label.
    pub fmt_y: fn(Option<f64>) -> String,
    /// Draw the x axis with its two labels (stacked charts leave it to the lowest one).
    pub x_labels: bool,
    /// Drawn in the plot's top-left corner, naming what the y axis measures.
    pub y_title: Option<Span<'a>>,
    /// The y labels are right-aligned to at least this many cells, so stacked charts line up.
    pub y_label_width: usize,
}

impl ChartAxes<'_> {
    /// Plain axes over `xs` × `ys` with labels on both.
    pub fn new(xs: [f64; 2], ys: [f64; 2], fmt_y: fn(Option<f64>) -> String) -> Self {
        Self {
            xs,
            ys,
            fmt_y,
            x_labels: true,
            y_title: None,
            y_label_width: 0,
        }
    }
}

/// The y labels of a chart `height` rows tall: bottom, middle (from 7 rows) and top.
pub fn y_axis_labels(ys: [f64; 2], height: u16, fmt_y: fn(Option<f64>) -> String) -> Vec<String> {
    let mid = (ys[0] + ys[1]) / 2.0;
    let values = if height >= 7 {
        vec![ys[0], mid, ys[1]]
    } else {
        vec![ys[0], ys[1]]
    };
    values.into_iter().map(|v| fmt_y(Some(v))).collect()
}

/// A braille line chart of `series` on `axes`, 2–3 labels per axis.
pub fn line_chart(
    frame: &mut Frame,
    area: Rect,
    series: &[Series],
    theme: &Theme,
    axes: ChartAxes,
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
    let xs = axes.xs;
    let x_labels = if axes.x_labels {
        vec![
            Span::styled(format!("{:.0}", xs[0]), theme.muted()),
            Span::styled(format!("{:.0}", xs[1]), theme.muted()),
        ]
    } else {
        Vec::new()
    };
    let y_labels: Vec<Span> = y_axis_labels(axes.ys, area.height, axes.fmt_y)
        .into_iter()
        .map(|label| {
            let width = axes.y_label_width.max(text_width(&label));
            Span::styled(pad_left(&label, width), theme.muted())
        })
        .collect();
    let mut y_axis = Axis::default()
        .bounds(axes.ys)
        .labels(y_labels)
        .style(theme.border());
    if let Some(title) = axes.y_title {
        y_axis = y_axis.title(title);
    }
    let chart = Chart::new(datasets)
        .legend_position(None)
        .x_axis(
            Axis::default()
                .bounds(xs)
                .labels(x_labels)
                .style(theme.border()),
        )
        .y_axis(y_axis);
    frame.render_widget(chart, area);
}
