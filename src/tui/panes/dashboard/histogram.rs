//! Panel (b): the token-distribution histogram of the newest probe, base against now, numeric
//! tokens coloured and marked `#`; with the other panels hidden it folds in a numeric-mass line.

use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::Frame;

use crate::eval::probe::HistogramEntry;
use crate::run::reader::RunSnapshot;
use crate::tui::format::{escape_token, fmt_num, fmt_prob, pad, pad_left};
use crate::tui::panes::widgets::{bar, put_line, render_message};
use crate::tui::series::finite_max;
use crate::tui::theme::Theme;

/// What the histogram panel shows, taken from a run snapshot.
pub struct HistogramView<'a> {
    theme: &'a Theme,
    entries: &'a [HistogramEntry],
    /// The numeric-mass summary line (held-out base, held-out now, KL) when it is folded in.
    mass: Option<[Option<f64>; 3]>,
}

impl<'a> HistogramView<'a> {
    /// The histogram panel of `snap`; `with_mass` folds in the numeric-mass summary line.
    pub fn new(snap: &'a RunSnapshot, theme: &'a Theme, with_mass: bool) -> Self {
        let last = snap.probes.last();
        Self {
            theme,
            entries: &snap.histogram,
            mass: with_mass.then(|| {
                [
                    last.and_then(|p| p.heldout_base_mass),
                    last.and_then(|p| p.heldout_mass),
                    last.and_then(|p| p.kl),
                ]
            }),
        }
    }

    /// Draws the panel into `area` (inside its border).
    pub fn render(&self, frame: &mut Frame, area: Rect) {
        let theme = self.theme;
        let mut y = area.y;
        if let Some([base, now, kl]) = self.mass.filter(|_| area.height >= 4) {
            let line = Line::from(vec![
                Span::styled("numeric mass ", theme.muted()),
                Span::styled(fmt_prob(base), Style::default().fg(theme.base)),
                Span::styled(" → ", theme.muted()),
                Span::styled(fmt_prob(now), theme.numeric()),
                Span::styled("  KL ", theme.muted()),
                Span::styled(fmt_num(kl, 4), theme.text()),
            ]);
            put_line(frame.buffer_mut(), area, y, &line);
            y += 1;
        }
        let entries = self.entries;
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
}
