//! Small shared helpers of the panes: number, duration and token formatting, bar glyphs, a titled
//! block and safe chart bounds. Everything here is pure and tolerates NaN, infinities and zero
//! widths.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders};

use crate::tui::theme::Theme;

/// Placeholder for a missing value.
pub const MISSING: &str = "–";

/// `Some(v)` when `v` is finite.
pub fn finite(v: Option<f64>) -> Option<f64> {
    v.filter(|x| x.is_finite())
}

/// A bordered block with a title, in the theme's border and accent styles.
pub fn titled_block<'a>(title: impl Into<Line<'a>>, theme: &Theme) -> Block<'a> {
    Block::default()
        .borders(Borders::ALL)
        .border_style(theme.border())
        .title(title.into().style(theme.accent()))
}

/// `v` with `decimals` decimals, or [`MISSING`].
pub fn fmt_num(v: Option<f64>, decimals: usize) -> String {
    match finite(v) {
        Some(x) => format!("{x:.decimals$}"),
        None => MISSING.into(),
    }
}

/// `v` with an explicit sign (`+12.5`, `-3.0`, `0.0`), or [`MISSING`].
pub fn fmt_signed(v: Option<f64>, decimals: usize) -> String {
    match finite(v) {
        Some(x) => {
            let text = format!("{x:.decimals$}");
            // A value that rounds to zero gets no sign ("-0.0" reads as a loss).
            if text
                .trim_start_matches(['-', '+'])
                .chars()
                .all(|c| c == '0' || c == '.')
            {
                text.trim_start_matches('-').to_string()
            } else if x > 0.0 {
                format!("+{text}")
            } else {
                text
            }
        }
        None => MISSING.into(),
    }
}

/// A probability (0..1) as a percentage: `12.3%`, `0.42%` below one percent.
pub fn fmt_prob(v: Option<f64>) -> String {
    match finite(v) {
        Some(p) if (p * 100.0).abs() < 1.0 && p != 0.0 => format!("{:.2}%", p * 100.0),
        Some(p) => format!("{:.1}%", p * 100.0),
        None => MISSING.into(),
    }
}

/// A loss-like value: 4 significant-ish decimals, scientific when tiny or huge.
pub fn fmt_value(v: Option<f64>) -> String {
    match finite(v) {
        Some(x) if x != 0.0 && (x.abs() < 1e-3 || x.abs() >= 1e5) => format!("{x:.2e}"),
        Some(x) => format!("{x:.4}"),
        None => MISSING.into(),
    }
}

/// A learning rate: `2.0e-4`.
pub fn fmt_lr(v: Option<f64>) -> String {
    match finite(v) {
        Some(x) => format!("{x:.1e}"),
        None => MISSING.into(),
    }
}

/// Throughput: `830 tok/s`, `12.4k tok/s`.
pub fn fmt_rate(v: Option<f64>) -> String {
    match finite(v) {
        Some(x) if x.abs() >= 1e6 => format!("{:.1}M tok/s", x / 1e6),
        Some(x) if x.abs() >= 1e4 => format!("{:.0}k tok/s", x / 1e3),
        Some(x) if x.abs() >= 1e3 => format!("{:.1}k tok/s", x / 1e3),
        Some(x) => format!("{x:.0} tok/s"),
        None => MISSING.into(),
    }
}

/// A duration: `42s`, `3m05s`, `1h02m`, `2d03h`.
pub fn fmt_duration(v: Option<f64>) -> String {
    let Some(secs) = finite(v).filter(|s| *s >= 0.0) else {
        return MISSING.into();
    };
    let s = secs.round().min(u64::MAX as f64) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// Display width of `text` in terminal cells.
pub fn text_width(text: &str) -> usize {
    Span::raw(text).width()
}

/// `text` cut to at most `width` cells, ending in `…` when cut.
pub fn truncate(text: &str, width: usize) -> String {
    if text_width(text) <= width {
        return text.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = text_width(c.encode_utf8(&mut [0; 4]));
        if used + w > width - 1 {
            break;
        }
        out.push(c);
        used += w;
    }
    out.push('…');
    out
}

/// `text` padded with spaces (or cut) to exactly `width` cells.
pub fn pad(text: &str, width: usize) -> String {
    let cut = truncate(text, width);
    let fill = width.saturating_sub(text_width(&cut));
    format!("{cut}{}", " ".repeat(fill))
}

/// `text` right-aligned in `width` cells (cut when longer).
pub fn pad_left(text: &str, width: usize) -> String {
    let cut = truncate(text, width);
    let fill = width.saturating_sub(text_width(&cut));
    format!("{}{cut}", " ".repeat(fill))
}

/// A token made visible: newline `⏎`, tab `⇥`, carriage return `␍`, space `␣`, other control
/// characters as their control pictures (`␀`…`␟`, `␡`) or `�`; empty tokens as `∅`. Cut to `width`.
pub fn escape_token(token: &str, width: usize) -> String {
    let mut out = String::new();
    for c in token.chars() {
        match c {
            '\n' => out.push('⏎'),
            '\t' => out.push('⇥'),
            '\r' => out.push('␍'),
            ' ' => out.push('␣'),
            '\u{7f}' => out.push('␡'),
            c if (c as u32) < 0x20 => out.push(char::from_u32(0x2400 + c as u32).unwrap_or('�')),
            c if c.is_control() => out.push('�'),
            c => out.push(c),
        }
    }
    if out.is_empty() {
        out.push('∅');
    }
    truncate(&out, width)
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

/// The largest finite value of `values` (0 when there is none).
pub fn finite_max(values: impl IntoIterator<Item = f64>) -> f64 {
    values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
}

/// Finite points only.
pub fn finite_points(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect()
}

/// Bounds `[lo, hi]` covering `values` with a little padding; never empty, never NaN.
pub fn bounds(values: impl IntoIterator<Item = f64>, pad_fraction: f64) -> [f64; 2] {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.into_iter().filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !(lo.is_finite() && hi.is_finite()) {
        return [0.0, 1.0];
    }
    let span = hi - lo;
    let pad = if span > 0.0 {
        span * pad_fraction
    } else {
        lo.abs().max(1.0) * 0.5
    };
    for out in [[lo - pad, hi + pad], [lo, hi]] {
        if out[0].is_finite() && out[1].is_finite() && out[1] > out[0] {
            return out;
        }
    }
    [0.0, 1.0]
}

/// `values` averaged into `n` buckets (or returned as is when there are at most `n`).
pub fn resample(values: &[f64], n: usize) -> Vec<f64> {
    if n == 0 {
        return Vec::new();
    }
    if values.len() <= n {
        return values.to_vec();
    }
    (0..n)
        .map(|i| {
            let (a, b) = (
                i * values.len() / n,
                ((i + 1) * values.len() / n).max(i * values.len() / n + 1),
            );
            let chunk: Vec<f64> = values[a..b]
                .iter()
                .copied()
                .filter(|v| v.is_finite())
                .collect();
            if chunk.is_empty() {
                f64::NAN
            } else {
                chunk.iter().sum::<f64>() / chunk.len() as f64
            }
        })
        .collect()
}

/// An RFC 3339 time shortened for tables: `2024-05-01T12:34:56+02:00` → `2024-05-01 12:34:56`.
pub fn short_time(text: &str) -> String {
    let t = text.replacen('T', " ", 1);
    // Drop a trailing zone offset or `Z` after the seconds.
    match t
        .char_indices()
        .skip(19)
        .find(|(_, c)| matches!(c, '+' | '-' | 'Z' | '.'))
    {
        Some((i, _)) if t.len() >= 19 => t[..i].to_string(),
        _ => t,
    }
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
