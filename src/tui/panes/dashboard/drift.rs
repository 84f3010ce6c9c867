//! Panel (e): per-layer drift of the attention and MLP blocks as paired bars, neighbouring layers
//! folded together (max of each block) when they do not all fit.

use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::Frame;

use crate::eval::drift::LayerDrift;
use crate::run::reader::RunSnapshot;
use crate::tui::format::{fmt_compact, pad, pad_left, text_width};
use crate::tui::panes::widgets::{bar, put_line, render_message};
use crate::tui::series::finite_max;
use crate::tui::theme::Theme;

/// What the layer-drift panel shows, taken from a run snapshot.
pub struct DriftView<'a> {
    theme: &'a Theme,
    layers: &'a [LayerDrift],
}

impl<'a> DriftView<'a> {
    /// The layer-drift panel of `snap`.
    pub fn new(snap: &'a RunSnapshot, theme: &'a Theme) -> Self {
        Self {
            theme,
            layers: &snap.layer_drift,
        }
    }

    /// Draws the panel into `area` (inside its border).
    pub fn render(&self, frame: &mut Frame, area: Rect) {
        let theme = self.theme;
        let layers = self.layers;
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
}
