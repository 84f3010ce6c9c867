//! The live dashboard of one run: loss and learning rate with progress, the token-distribution
//! histogram (base vs now), numeric mass over steps, the held-out score table and per-layer
//! drift. Pure rendering of a [`RunSnapshot`]; it never panics on missing or non-finite data.
//!
//! Each panel has its own module: a view built from the snapshot (everything it shows is computed
//! there, up front) whose `render` only lays it out. This module places the panels and draws
//! their borders, titles and hints.
//!
//! Layout: at 120×30 and larger all five panels share the area (loss | scores on top,
//! histogram | numeric mass | layer drift below). Smaller areas show loss on top and
//! histogram | scores below (histogram only when narrower than 60 columns), with a numeric-mass
//! summary line in the histogram panel and a `z: zoom` hint naming the hidden panels; under 14
//! rows only the loss panel is drawn. `zoom` draws one panel over the whole area.

mod drift;
mod histogram;
mod loss;
mod mass;
mod scores;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::Line;
use ratatui::widgets::BorderType;
use ratatui::Frame;

pub use drift::DriftView;
pub use histogram::HistogramView;
pub use loss::LossView;
pub use mass::MassView;
pub use scores::ScoresView;

use crate::run::reader::RunSnapshot;
use crate::tui::format::{escape_line, text_width, truncate};
use crate::tui::panes::widgets::titled_block;
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
        DashPanel::Loss => LossView::new(snap, theme).render(frame, inner),
        DashPanel::Histogram => HistogramView::new(snap, theme, ctx.compact).render(frame, inner),
        DashPanel::NumericMass => MassView::new(snap, theme).render(frame, inner),
        DashPanel::Scores => ScoresView::new(snap, theme).render(frame, inner),
        DashPanel::LayerDrift => DriftView::new(snap, theme).render(frame, inner),
    }
}
