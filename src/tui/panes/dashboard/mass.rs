//! Panel (c): numeric mass over probe steps, held-out and target each on its own scale against
//! its base-model level, with KL, entropy and the first token's numeric share of the newest probe.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::Frame;

use crate::run::reader::{ProbePoint, RunSnapshot};
use crate::tui::format::{fmt_num, fmt_prob, text_width};
use crate::tui::panes::widgets::{
    line_chart, put_line, render_message, render_sparkline, y_axis_labels, ChartAxes,
};
use crate::tui::series::{bounds, finite};
use crate::tui::theme::Theme;

/// One mass series with its base-model level, on its own y scale.
struct Track {
    name: &'static str,
    /// Finite (step, mass) points.
    points: Vec<(f64, f64)>,
    /// Newest finite base-model mass, drawn as a reference line.
    base: Option<f64>,
    /// Y bounds covering the points and the base, never below zero.
    ys: [f64; 2],
    style: Style,
    base_style: Style,
}

impl Track {
    fn new(
        name: &'static str,
        points: Vec<(f64, f64)>,
        base: Option<f64>,
        style: Style,
        base_style: Style,
    ) -> Self {
        let [lo, hi] = bounds(points.iter().map(|p| p.1).chain(base), 0.1);
        let ys = [lo.max(0.0), hi.max(lo.max(0.0) + 1e-6)];
        Self {
            name,
            points,
            base,
            ys,
            style,
            base_style,
        }
    }
}

/// What the numeric-mass panel shows, taken from a run snapshot.
///
/// Held-out and target mass get a y scale each, as two stacked charts over the same steps:
/// the held-out mass is the signal (a rise from 0.01% to 0.04% is numbers leaking where they
/// should not) but sits orders of magnitude under a target near 50%, so on a shared axis it is
/// a flat line at zero. Stacked linear charts read better in a terminal than one log axis: each
/// rise fills its own chart's height, the axis labels are plain percentages, and braille rows
/// are too few for a log scale's decades to resolve a fourfold change well.
pub struct MassView<'a> {
    theme: &'a Theme,
    /// The newest probe reading.
    last: Option<ProbePoint>,
    heldout: Track,
    target: Track,
    /// Steps covered by either series.
    xs: [f64; 2],
    /// The forgetting forecast: final Δ held-out, ± error, runs.
    forecast: Option<(f64, f64, usize)>,
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
        let base_style = Style::default().fg(theme.base);
        let heldout = Track::new(
            "held-out",
            series(|p| p.heldout_mass),
            base_of(|p| p.heldout_base_mass),
            Style::default().fg(theme.now),
            base_style,
        );
        let target = Track::new(
            "target",
            series(|p| p.target_mass),
            base_of(|p| p.target_base_mass),
            Style::default().fg(theme.numeric),
            base_style.add_modifier(Modifier::DIM),
        );
        let xs = bounds(
            heldout.points.iter().chain(&target.points).map(|p| p.0),
            0.0,
        );
        Self {
            theme,
            last: snap.probes.last().cloned(),
            heldout,
            target,
            xs,
            forecast: snap.forecast,
        }
    }

    /// Draws the panel into `area` (inside its border).
    pub fn render(&self, frame: &mut Frame, area: Rect) {
        let theme = self.theme;
        let last = self.last.as_ref();
        let heldout_style = self.heldout.style;
        let target_style = self.target.style;
        let base_style = Style::default().fg(theme.base);
        let heldout_spans = vec![
            Span::styled("━ held-out ", heldout_style),
            Span::styled(
                fmt_prob(last.and_then(|p| p.heldout_mass)),
                theme.text().add_modifier(Modifier::BOLD),
            ),
            Span::styled(" base ", theme.muted()),
            Span::styled(fmt_prob(self.heldout.base), base_style),
        ];
        let target_spans = vec![
            Span::styled("━ target ", target_style),
            Span::styled(
                fmt_prob(last.and_then(|p| p.target_mass)),
                theme.text().add_modifier(Modifier::BOLD),
            ),
            Span::styled(" base ", theme.muted()),
            Span::styled(fmt_prob(self.target.base), base_style),
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
        let mut lines = if both.width() <= area.width as usize || area.height < 9 {
            vec![both, divergence]
        } else {
            vec![heldout_spans.into(), target_spans.into(), divergence]
        };
        if let Some(line) = self.shape_line().filter(|_| area.height >= 8) {
            lines.push(line);
        }
        if let Some((delta, error, runs)) = self.forecast.filter(|_| area.height >= 9) {
            lines.push(Line::from(vec![
                Span::styled("forecast final Δ held-out ", theme.muted()),
                Span::styled(
                    format!("{delta:+.1} ± {error:.1} pp"),
                    theme.text().add_modifier(Modifier::BOLD),
                ),
                Span::styled(format!(" (from {runs} runs)"), theme.muted()),
            ]));
        }
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
        self.render_charts(frame, rest);
    }

    /// Held-out answer vocabulary and answer shape against base: the signs of a trained answer
    /// format bleeding into held-out prompts (`None` for runs that did not record them).
    fn shape_line(&self) -> Option<Line<'static>> {
        let theme = self.theme;
        let last = self.last.as_ref()?;
        let mut spans = Vec::new();
        let pair = |spans: &mut Vec<Span<'static>>, label: String, now: String, base: String| {
            spans.push(Span::styled(label, theme.muted()));
            spans.push(Span::styled(now, theme.text()));
            spans.push(Span::styled(" base ", theme.muted()));
            spans.push(Span::styled(base, Style::default().fg(theme.base)));
        };
        if let Some((now, base)) = last.heldout_answer_mass {
            pair(
                &mut spans,
                "answer-class ".into(),
                fmt_prob(Some(now)),
                fmt_prob(Some(base)),
            );
        }
        if let Some(shape) = last.heldout_shape {
            let (now, base) = shape.first_stop_prob;
            pair(
                &mut spans,
                "  ends at once ".into(),
                fmt_prob(Some(now)),
                fmt_prob(Some(base)),
            );
            let (now, base) = shape.ends_within;
            pair(
                &mut spans,
                format!("  ≤{} tok ", shape.short_answer_tokens),
                fmt_prob(Some(now)),
                fmt_prob(Some(base)),
            );
            let (now, base) = shape.mean_length;
            pair(
                &mut spans,
                "  len ".into(),
                format!("{now:.1}"),
                format!("{base:.1}"),
            );
        }
        (!spans.is_empty()).then(|| spans.into())
    }

    /// The charts under the summary lines: held-out over target, each on its own scale, when
    /// both fit; else held-out's chart over a target sparkline, or one chart, or a sparkline.
    fn render_charts(&self, frame: &mut Frame, rest: Rect) {
        let theme = self.theme;
        let tracks: Vec<&Track> = [&self.heldout, &self.target]
            .into_iter()
            .filter(|t| !t.points.is_empty())
            .collect();
        if tracks.is_empty() {
            render_message(frame.buffer_mut(), rest, "no probe yet", theme);
            return;
        }
        let spark = |frame: &mut Frame, area: Rect, track: &Track| {
            let values: Vec<f64> = track.points.iter().map(|p| p.1).collect();
            let label = format!("{} ", track.name);
            render_sparkline(frame, area, &label, &values, track.style, theme);
        };
        if rest.height < 5 || rest.width < 24 {
            spark(frame, rest, &self.heldout);
            return;
        }
        match tracks[..] {
            [heldout, target] if rest.height >= 10 => {
                // Plot rows split evenly; the lower chart also carries the x axis (2 rows).
                let top_height = (rest.height - 2) / 2;
                let [top, bottom] =
                    Layout::vertical([Constraint::Length(top_height), Constraint::Fill(1)])
                        .areas(rest);
                let label_width = [(heldout, top), (target, bottom)]
                    .iter()
                    .flat_map(|(t, a)| y_axis_labels(t.ys, a.height, fmt_prob))
                    .map(|l| text_width(&l))
                    .max()
                    .unwrap_or(0);
                self.render_track(frame, top, heldout, false, label_width);
                self.render_track(frame, bottom, target, true, label_width);
            }
            [heldout, target] if rest.height >= 6 => {
                let [chart, line] =
                    Layout::vertical([Constraint::Fill(1), Constraint::Length(1)]).areas(rest);
                self.render_track(frame, chart, heldout, true, 0);
                spark(frame, line, target);
            }
            _ => self.render_track(frame, rest, tracks[0], true, 0),
        }
    }

    /// One track's chart: its series over its base line, on its own y scale.
    fn render_track(
        &self,
        frame: &mut Frame,
        area: Rect,
        track: &Track,
        x_labels: bool,
        y_label_width: usize,
    ) {
        let xs = self.xs;
        let base: Vec<(f64, f64)> = track
            .base
            .map(|b| vec![(xs[0], b), (xs[1], b)])
            .unwrap_or_default();
        let series = [
            ("base", base.as_slice(), track.base_style),
            (track.name, track.points.as_slice(), track.style),
        ];
        let axes = ChartAxes {
            x_labels,
            y_title: Some(Span::styled(track.name, track.style)),
            y_label_width,
            ..ChartAxes::new(xs, track.ys, fmt_prob)
        };
        line_chart(frame, area, &series, self.theme, axes);
    }
}
