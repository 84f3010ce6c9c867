//! Small drawing pieces shared by the panes: a titled block, bar glyphs, state and delta
//! styles, a line or a centred message written into a buffer. Formatting lives in
//! [`crate::tui::format`], series maths in [`crate::tui::series`].

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders};

use crate::tui::format::{fmt_signed, text_width, truncate};
use crate::tui::series::finite;
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
