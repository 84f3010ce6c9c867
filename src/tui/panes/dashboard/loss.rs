//! Panel (a): run state, step, newest loss, throughput, ETA and elapsed time; a progress gauge;
//! the newest noteworthy message; the loss chart (a sparkline when small) over a learning-rate
//! sparkline. A stage of a sequence shows the whole sequence's loss so far, with a vertical
//! marker where each stage starts and a line naming them.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Gauge;
use ratatui::Frame;

use crate::run::reader::RunSnapshot;
use crate::tui::format::{escape_line, fmt_duration, fmt_lr, fmt_rate, fmt_value};
use crate::tui::panes::widgets::{
    put_line, render_message, render_series_chart, render_sparkline, state_style, Series,
};
use crate::tui::series::{bounds, finite, finite_points, last_finite};
use crate::tui::theme::Theme;

/// What the loss panel shows, taken from a run snapshot.
pub struct LossView<'a> {
    theme: &'a Theme,
    /// Run state (`waiting` before the first status).
    state: String,
    /// (step, total steps) once the run reports them.
    progress: Option<(usize, usize)>,
    loss_now: Option<f64>,
    tokens_per_s: Option<f64>,
    eta: Option<f64>,
    elapsed: Option<f64>,
    /// Newest error, guard or event on one line, with its style.
    message: Option<(String, Style)>,
    /// Finite (step, loss) and (step, lr) points.
    loss: Vec<(f64, f64)>,
    lr: Vec<(f64, f64)>,
    /// Stage starts on the loss chart's step axis (a stage of a sequence; else empty).
    boundaries: Vec<f64>,
    /// `stage 2/3 of demo-three: │1 classify │2 counting` for a stage of a sequence.
    stages: Option<String>,
}

impl<'a> LossView<'a> {
    /// The loss panel of `snap`.
    pub fn new(snap: &RunSnapshot, theme: &'a Theme) -> Self {
        let status = snap.status.as_ref();
        let message = status
            .and_then(|s| s.last_error.clone())
            .map(|e| (format!("error: {e}"), theme.bad()))
            .or_else(|| {
                snap.guard_messages
                    .last()
                    .map(|g| (format!("guard: {g}"), theme.warn()))
            })
            .or_else(|| snap.last_event.clone().map(|e| (e, theme.muted())))
            .map(|(text, style)| (escape_line(&text), style));
        let (loss, boundaries, stages) = match &snap.sequence {
            Some(seq) => {
                let offset = seq.offset();
                let loss: Vec<(f64, f64)> = seq
                    .earlier_loss
                    .iter()
                    .copied()
                    .chain(snap.loss.iter().map(|&(x, y)| (x + offset, y)))
                    .collect();
                let names: Vec<String> = seq
                    .boundaries
                    .iter()
                    .map(|(_, label)| format!("│{label}"))
                    .collect();
                let line = format!(
                    "stage {}/{} of {}: {}",
                    seq.stage,
                    seq.record.stages.len(),
                    seq.record.name,
                    names.join(" ")
                );
                let starts = seq.boundaries.iter().map(|b| b.0).skip(1).collect();
                (loss, starts, Some(escape_line(&line)))
            }
            None => (snap.loss.clone(), Vec::new(), None),
        };
        Self {
            theme,
            state: status.map_or("waiting", |s| s.state.as_str()).to_string(),
            progress: status.map(|s| (s.step, s.total_steps)),
            loss_now: last_finite(&snap.loss),
            tokens_per_s: finite(snap.tokens_per_s),
            eta: snap.eta_seconds(),
            elapsed: snap.elapsed,
            message,
            loss: finite_points(&loss),
            lr: finite_points(&snap.lr),
            boundaries,
            stages,
        }
    }

    /// Draws the panel into `area` (inside its border).
    pub fn render(&self, frame: &mut Frame, area: Rect) {
        let theme = self.theme;
        let state = self.state.as_str();
        let step_text = match self.progress {
            Some((s, t)) => format!("{s}/{t}"),
            None => "–/–".to_string(),
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
            Span::styled(fmt_value(self.loss_now), Style::default().fg(theme.now)),
            sep(),
            Span::styled(
                match self.tokens_per_s {
                    Some(rate) => fmt_rate(Some(rate)),
                    None => "– tok/s".to_string(),
                },
                theme.text(),
            ),
            sep(),
            Span::styled("ETA ", theme.muted()),
            Span::styled(fmt_duration(self.eta), theme.text()),
            sep(),
            Span::styled("elapsed ", theme.muted()),
            Span::styled(fmt_duration(self.elapsed), theme.text()),
        ]);
        let mut y = area.y;
        put_line(frame.buffer_mut(), area, y, &stats);
        y += 1;
        if y >= area.bottom() {
            return;
        }
        // Progress gauge.
        let ratio = match self.progress {
            Some((s, t)) if t > 0 => (s as f64 / t as f64).clamp(0.0, 1.0),
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
        // Which stage of which sequence, when it is one.
        if let Some(text) = &self.stages {
            if area.bottom().saturating_sub(y) >= 6 {
                put_line(
                    frame.buffer_mut(),
                    area,
                    y,
                    &Line::styled(text.as_str(), theme.muted()),
                );
                y += 1;
            }
        }
        // Newest noteworthy message: error, guard, or event.
        if area.bottom().saturating_sub(y) >= 6 {
            if let Some((text, style)) = &self.message {
                put_line(
                    frame.buffer_mut(),
                    area,
                    y,
                    &Line::styled(text.as_str(), *style),
                );
                y += 1;
            }
        }
        let rest = Rect::new(area.x, y, area.width, area.bottom().saturating_sub(y));
        if rest.is_empty() {
            return;
        }
        self.render_charts(frame, rest);
    }

    /// The loss chart and the learning-rate sparkline under it.
    fn render_charts(&self, frame: &mut Frame, rest: Rect) {
        let theme = self.theme;
        let (loss, lr) = (&self.loss, &self.lr);
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
            // A vertical marker where each later stage starts, spanning the loss's range.
            let ys = bounds(loss.iter().map(|p| p.1), 0.0);
            let markers: Vec<[(f64, f64); 2]> = self
                .boundaries
                .iter()
                .map(|&x| [(x, ys[0]), (x, ys[1])])
                .collect();
            let mut series: Vec<Series> = markers
                .iter()
                .map(|m| ("stage", &m[..], theme.muted()))
                .collect();
            series.push(("loss", loss, Style::default().fg(theme.now)));
            render_series_chart(frame, chart_area, &series, theme, fmt_value);
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
}
