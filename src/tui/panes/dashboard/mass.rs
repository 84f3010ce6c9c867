//! Panel (c): numeric mass over probe steps, held-out and target against their base-model
//! levels, with KL, entropy and the first token's numeric share of the newest probe.

use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::Frame;

use crate::run::reader::{ProbePoint, RunSnapshot};
use crate::tui::format::{fmt_num, fmt_prob};
use crate::tui::panes::widgets::{chart_with_bounds, put_line, render_message, render_sparkline};
use crate::tui::series::{bounds, finite};
use crate::tui::theme::Theme;

/// What the numeric-mass panel shows, taken from a run snapshot.
pub struct MassView<'a> {
    theme: &'a Theme,
    /// The newest probe reading.
    last: Option<ProbePoint>,
    /// Newest finite base-model masses.
    heldout_base: Option<f64>,
    target_base: Option<f64>,
    /// Finite (step, mass) points.
    heldout: Vec<(f64, f64)>,
    target: Vec<(f64, f64)>,
}

impl<'a> MassView<'a> {
    /// The numeric-mass panel of `snap`.
    pub fn new(snap: &RunSnapshot, theme: &'a Theme) -> Self {
        let base_of = |get: fn(&ProbePoint) -> Option<f64>| {
            snap.probes.iter().rev().find_map(|p| finite(get(p)))
        };
        let series = |get: fn(&ProbePoint) -> Option<f64>| -> Vec<(f64, f64)> {
            snap.probes
                .iter()
                .filter_map(|p| Some((p.step, finite(get(p))?)))
                .filter(|(x, _)| x.is_finite())
                .collect()
        };
        Self {
            theme,
            last: snap.probes.last().cloned(),
            heldout_base: base_of(|p| p.heldout_base_mass),
            target_base: base_of(|p| p.target_base_mass),
            heldout: series(|p| p.heldout_mass),
            target: series(|p| p.target_mass),
        }
    }

    /// Draws the panel into `area` (inside its border).
    pub fn render(&self, frame: &mut Frame, area: Rect) {
        let theme = self.theme;
        let last = self.last.as_ref();
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
            Span::styled(fmt_prob(self.heldout_base), base_style),
        ];
        let target_spans = vec![
            Span::styled("━ target ", target_style),
            Span::styled(
                fmt_prob(last.and_then(|p| p.target_mass)),
                theme.text().add_modifier(Modifier::BOLD),
            ),
            Span::styled(" base ", theme.muted()),
            Span::styled(fmt_prob(self.target_base), base_style),
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
        if self.heldout.is_empty() && self.target.is_empty() {
            render_message(frame.buffer_mut(), rest, "no probe yet", theme);
            return;
        }
        if rest.height < 5 || rest.width < 24 {
            let values: Vec<f64> = self.heldout.iter().map(|p| p.1).collect();
            render_sparkline(frame, rest, "held-out ", &values, heldout_style, theme);
            return;
        }
        let xs = bounds(self.heldout.iter().chain(&self.target).map(|p| p.0), 0.0);
        let all_y = self
            .heldout
            .iter()
            .chain(&self.target)
            .map(|p| p.1)
            .chain(self.heldout_base)
            .chain(self.target_base);
        let [lo, hi] = bounds(all_y, 0.1);
        let ys = [lo.max(0.0), hi.max(lo.max(0.0) + 1e-6)];
        let reference =
            |v: Option<f64>| v.map(|b| vec![(xs[0], b), (xs[1], b)]).unwrap_or_default();
        let (hb, tb) = (reference(self.heldout_base), reference(self.target_base));
        let series = [
            ("held-out base", hb.as_slice(), base_style),
            (
                "target base",
                tb.as_slice(),
                base_style.add_modifier(Modifier::DIM),
            ),
            ("target", self.target.as_slice(), target_style),
            ("held-out", self.heldout.as_slice(), heldout_style),
        ];
        chart_with_bounds(frame, rest, &series, theme, xs, ys, fmt_prob);
    }
}
