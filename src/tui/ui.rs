//! Draws the whole workbench: tabs, the active pane, the context line, and overlays (help
//! generated from the keymap, dialogs).

use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Tabs, Wrap};
use ratatui::Frame;

use super::app::{run_name, App, Dialog, Level, Tab};
use super::keymap::{context_hints, BINDINGS};
use super::panes::compare::render_compare;
use super::panes::dashboard::render_dashboard_focused;
use super::panes::interpolation::render_interpolation;
use super::panes::model::render_model;
use super::panes::recipe::render_recipe;
use super::panes::runs::render_runs;

/// Draws one frame.
pub fn draw(frame: &mut Frame, app: &App) {
    let theme = app.theme().clone();
    let [tabs_area, main, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let titles: Vec<Line> = Tab::ALL
        .iter()
        .enumerate()
        .map(|(i, t)| Line::from(format!("{} {}", i + 1, t.title())))
        .collect();
    let selected = Tab::ALL.iter().position(|t| *t == app.tab).unwrap_or(0);
    frame.render_widget(
        Tabs::new(titles)
            .select(selected)
            .style(theme.muted())
            .highlight_style(theme.accent())
            .divider("│"),
        tabs_area,
    );
    match app.tab {
        Tab::Model => render_model(frame, main, app.model.as_ref(), app.model_error.as_deref(), &theme),
        Tab::Recipe => {
            let path = app.recipe_path.as_ref().map(|p| p.display().to_string());
            render_recipe(frame, main, &app.recipe, path.as_deref(), app.recipe_dirty, app.field, &theme)
        }
        Tab::Runs => render_runs(frame, main, &app.run_rows(), app.run_cursor, &theme),
        Tab::Dashboard => match &app.attached {
            Some(_) if app.interpolation.is_some() => {
                if let Some(view) = &app.interpolation {
                    render_interpolation(frame, main, view, &theme);
                }
            }
            Some(reader) => {
                let title = run_name(reader.run().path());
                render_dashboard_focused(frame, main, reader.snapshot(), &title, &theme, app.dash_zoom, Some(app.dash_focus))
            }
            None => frame.render_widget(
                Paragraph::new("No run attached. Launch one with L (Model or Recipe tab) or pick one on the Runs tab.")
                    .style(theme.muted())
                    .wrap(Wrap { trim: true })
                    .block(Block::default().borders(Borders::ALL).title(" Dashboard ")),
                main,
            ),
        },
        Tab::Compare => render_compare(frame, main, &app.compare_rows(), app.compare_cursor, &theme),
    }
    let status_line = match &app.message {
        Some((text, level)) => Line::from(Span::styled(
            text.clone(),
            match level {
                Level::Info => theme.accent(),
                Level::Warn => theme.warn(),
                Level::Error => theme.bad(),
            },
        )),
        None => {
            let context = app.context();
            let mut spans = Vec::new();
            if let Some(note) = &app.follow_note {
                spans.push(Span::styled(format!("[{note}]  "), theme.warn()));
            }
            if let Some(activity) = &app.activity {
                spans.push(Span::styled(activity.clone(), theme.accent()));
            } else {
                for (keys, what) in context_hints(context) {
                    spans.push(Span::styled(keys.to_string(), theme.accent()));
                    spans.push(Span::styled(format!(" {what}  "), theme.muted()));
                }
            }
            Line::from(spans)
        }
    };
    frame.render_widget(Paragraph::new(status_line), status);
    if app.help {
        draw_help(frame, &theme);
    }
    if let Some(dialog) = &app.dialog {
        draw_dialog(frame, dialog, &theme);
    }
}

fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let [row] = Layout::vertical([Constraint::Length(height.min(area.height))])
        .flex(Flex::Center)
        .areas(area);
    let [cell] = Layout::horizontal([Constraint::Length(width.min(area.width))])
        .flex(Flex::Center)
        .areas(row);
    cell
}

fn draw_help(frame: &mut Frame, theme: &super::theme::Theme) {
    let mut lines = Vec::new();
    let mut context = None;
    for binding in BINDINGS {
        if context != Some(binding.context) {
            context = Some(binding.context);
            lines.push(Line::from(Span::styled(
                binding.context.title().to_string(),
                theme.accent(),
            )));
        }
        lines.push(Line::from(vec![
            Span::styled(format!("  {:<16}", binding.keys), theme.text()),
            Span::styled(binding.description.to_string(), theme.muted()),
        ]));
    }
    let area = centered(frame.area(), 76, lines.len() as u16 + 2);
    frame.render_widget(Clear, area);
    frame.render_widget(
        Paragraph::new(lines).block(
            Block::default()
                .borders(Borders::ALL)
                .border_style(theme.border())
                .title(" keys (Esc or ? closes) "),
        ),
        area,
    );
}

fn draw_dialog(frame: &mut Frame, dialog: &Dialog, theme: &super::theme::Theme) {
    match dialog {
        Dialog::Confirm { message, .. } => {
            let area = centered(frame.area(), 64, 5);
            frame.render_widget(Clear, area);
            frame.render_widget(
                Paragraph::new(message.clone())
                    .wrap(Wrap { trim: true })
                    .style(theme.text())
                    .block(
                        Block::default()
                            .borders(Borders::ALL)
                            .border_style(theme.warn())
                            .title(" confirm "),
                    ),
                area,
            );
        }
        Dialog::Input {
            title, text, error, ..
        } => {
            let height = if error.is_some() { 7 } else { 3 };
            let area = centered(frame.area(), 72, height);
            frame.render_widget(Clear, area);
            let mut lines = vec![Line::from(vec![
                Span::styled(text.clone(), theme.text()),
                Span::styled("▏", theme.accent()),
            ])];
            if let Some(error) = error {
                lines.push(Line::from(Span::styled(error.clone(), theme.bad())));
            }
            frame.render_widget(
                Paragraph::new(lines).wrap(Wrap { trim: false }).block(
                    Block::default()
                        .borders(Borders::ALL)
                        .border_style(theme.accent())
                        .title(format!(" {title} (Enter accept, Esc cancel) ")),
                ),
                area,
            );
        }
        Dialog::Picker {
            title,
            items,
            selected,
        } => {
            let area = centered(frame.area(), 60, items.len() as u16 + 2);
            frame.render_widget(Clear, area);
            let lines: Vec<Line> = items
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    Line::from(Span::styled(
                        p.display().to_string(),
                        if i == *selected {
                            theme.selected()
                        } else {
                            theme.text()
                        },
                    ))
                })
                .collect();
            frame.render_widget(
                Paragraph::new(lines).block(
                    Block::default()
                        .borders(Borders::ALL)
                        .border_style(theme.accent())
                        .title(format!(" {title} ")),
                ),
                area,
            );
        }
    }
}
