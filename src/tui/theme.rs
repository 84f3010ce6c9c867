//! Named colour themes with semantic slots, read from `themes/*.yaml` (built-in copies are
//! embedded so the binary works from any directory). `NO_COLOR` turns colour off.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use ratatui::style::{Color, Modifier, Style};
use serde::Deserialize;

/// Built-in themes: (name, YAML).
pub const BUILTIN: [(&str, &str); 4] = [
    ("dark", include_str!("../../themes/dark.yaml")),
    ("light", include_str!("../../themes/light.yaml")),
    (
        "high-contrast",
        include_str!("../../themes/high-contrast.yaml"),
    ),
    ("colorblind", include_str!("../../themes/colorblind.yaml")),
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ThemeFile {
    name: String,
    background: String,
    text: String,
    muted: String,
    accent: String,
    numeric: String,
    good: String,
    warn: String,
    bad: String,
    border: String,
    selection: String,
    base: String,
    now: String,
}

/// Semantic colours used by every pane.
#[derive(Debug, Clone, PartialEq)]
pub struct Theme {
    pub name: String,
    pub background: Color,
    pub text: Color,
    pub muted: Color,
    pub accent: Color,
    /// Numeric tokens in histograms.
    pub numeric: Color,
    pub good: Color,
    pub warn: Color,
    pub bad: Color,
    pub border: Color,
    /// Background of the selected row or cell.
    pub selection: Color,
    /// Base-model bars and series.
    pub base: Color,
    /// Current-model bars and series.
    pub now: Color,
    /// True when colours are suppressed (NO_COLOR).
    pub monochrome: bool,
}

fn parse_color(text: &str, key: &str) -> Result<Color> {
    text.parse::<Color>().map_err(|_| {
        anyhow::anyhow!("`{key}: {text}` is not a colour (use a name like `cyan` or `#rrggbb`)")
    })
}

impl Theme {
    /// Parses a theme file's YAML.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self> {
        let f: ThemeFile = serde_yaml::from_str(text).with_context(|| format!("theme {origin}"))?;
        Ok(Self {
            name: f.name,
            background: parse_color(&f.background, "background")?,
            text: parse_color(&f.text, "text")?,
            muted: parse_color(&f.muted, "muted")?,
            accent: parse_color(&f.accent, "accent")?,
            numeric: parse_color(&f.numeric, "numeric")?,
            good: parse_color(&f.good, "good")?,
            warn: parse_color(&f.warn, "warn")?,
            bad: parse_color(&f.bad, "bad")?,
            border: parse_color(&f.border, "border")?,
            selection: parse_color(&f.selection, "selection")?,
            base: parse_color(&f.base, "base")?,
            now: parse_color(&f.now, "now")?,
            monochrome: false,
        })
    }

    /// The built-in dark theme.
    pub fn dark() -> Self {
        Self::from_yaml(BUILTIN[0].1, "dark").expect("built-in theme parses")
    }

    /// All themes: built-ins, overridden or extended by `dir/*.yaml` files when `dir` exists.
    pub fn load_all(dir: Option<&Path>) -> Result<BTreeMap<String, Theme>> {
        let mut themes = BTreeMap::new();
        for (name, text) in BUILTIN {
            themes.insert(name.to_string(), Self::from_yaml(text, name)?);
        }
        if let Some(dir) = dir.filter(|d| d.is_dir()) {
            for entry in std::fs::read_dir(dir)?.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "yaml") {
                    let text = std::fs::read_to_string(&path)?;
                    let theme = Self::from_yaml(&text, &path.display().to_string())?;
                    themes.insert(theme.name.clone(), theme);
                }
            }
        }
        Ok(themes)
    }

    /// Looks a theme up by name.
    pub fn named(name: &str, dir: Option<&Path>) -> Result<Self> {
        let themes = Self::load_all(dir)?;
        match themes.get(name) {
            Some(t) => Ok(t.clone()),
            None => bail!(
                "unknown theme `{name}`; available: {}",
                themes.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        }
    }

    /// The same theme with colour removed (for `NO_COLOR`): emphasis by modifiers only.
    pub fn monochrome(mut self) -> Self {
        for c in [
            &mut self.background,
            &mut self.text,
            &mut self.muted,
            &mut self.accent,
            &mut self.numeric,
            &mut self.good,
            &mut self.warn,
            &mut self.bad,
            &mut self.border,
            &mut self.selection,
            &mut self.base,
            &mut self.now,
        ] {
            *c = Color::Reset;
        }
        self.monochrome = true;
        self
    }

    pub fn text(&self) -> Style {
        Style::default().fg(self.text)
    }

    pub fn muted(&self) -> Style {
        Style::default().fg(self.muted)
    }

    pub fn accent(&self) -> Style {
        Style::default()
            .fg(self.accent)
            .add_modifier(Modifier::BOLD)
    }

    /// Numeric tokens: colour, plus bold so they stand out without colour too.
    pub fn numeric(&self) -> Style {
        Style::default()
            .fg(self.numeric)
            .add_modifier(Modifier::BOLD)
    }

    pub fn good(&self) -> Style {
        Style::default().fg(self.good)
    }

    pub fn warn(&self) -> Style {
        Style::default().fg(self.warn)
    }

    pub fn bad(&self) -> Style {
        Style::default().fg(self.bad)
    }

    pub fn border(&self) -> Style {
        Style::default().fg(self.border)
    }

    /// The selected row or cell: background colour, or reversed video without colour.
    pub fn selected(&self) -> Style {
        if self.monochrome {
            Style::default().add_modifier(Modifier::REVERSED)
        } else {
            Style::default()
                .bg(self.selection)
                .add_modifier(Modifier::BOLD)
        }
    }
}
