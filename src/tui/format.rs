//! Text formatting of the workbench: numbers, probabilities, rates, durations, times and bytes as
//! short strings, and fitting text to a width in terminal cells. Pure; NaN and infinities come
//! out as [`MISSING`].

use ratatui::text::Span;

use super::series::finite;

pub use crate::util::format::human_bytes;

/// Placeholder for a missing value.
pub const MISSING: &str = "–";

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

/// Up to three significant digits (`123`, `12.3`, `1.23`), or [`MISSING`] when not finite.
pub fn fmt_compact(v: f64) -> String {
    if !v.is_finite() {
        return MISSING.into();
    }
    match v.abs() {
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 10.0 => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
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

/// Control characters of a message made visible on one line.
pub fn escape_line(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' => '⏎',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}
