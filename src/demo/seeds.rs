//! Figures over several seeds: each recipe's rows (one per seed) reduced to mean ± standard
//! deviation, as a table, as JSON and as a plot in the terminal.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::report::{align, ReportRow};

/// Mean and sample standard deviation (n − 1) of one figure over seeds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub mean: f64,
    /// 0 when there is one value.
    pub std: f64,
    /// How many seeds gave a value.
    pub n: usize,
}

impl Spread {
    /// The spread of `values`; `None` when there are none.
    pub fn of(values: &[f64]) -> Option<Self> {
        let n = values.len();
        if n == 0 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let std = if n > 1 {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        Some(Self { mean, std, n })
    }

    /// `+1.2 ± 0.3` with `decimals` places.
    pub fn signed(&self, decimals: usize) -> String {
        format!("{:+.decimals$} ± {:.decimals$}", self.mean, self.std)
    }

    /// `1.2 ± 0.3` with `decimals` places.
    pub fn plain(&self, decimals: usize) -> String {
        format!("{:.decimals$} ± {:.decimals$}", self.mean, self.std)
    }
}

/// One recipe (or baseline) over its seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeededRow {
    pub recipe: String,
    pub seeds: Vec<u64>,
    pub trainable_percent: f64,
    pub delta_target: Option<Spread>,
    pub delta_heldout: Option<Spread>,
    pub numeric_mass_base: Option<Spread>,
    pub numeric_mass_end: Option<Spread>,
    pub wall_seconds: Option<Spread>,
    /// The rows it was computed from, one per seed.
    pub runs: Vec<ReportRow>,
}

/// Groups `rows` (each tagged with its seed) by recipe, keeping the order in which recipes first
/// appear, and reduces each group.
pub fn aggregate(rows: &[(u64, ReportRow)]) -> Vec<SeededRow> {
    let mut order: Vec<String> = Vec::new();
    let mut groups: BTreeMap<String, Vec<(u64, ReportRow)>> = BTreeMap::new();
    for (seed, row) in rows {
        if !groups.contains_key(&row.recipe) {
            order.push(row.recipe.clone());
        }
        groups
            .entry(row.recipe.clone())
            .or_default()
            .push((*seed, row.clone()));
    }
    order
        .into_iter()
        .map(|recipe| {
            let group = &groups[&recipe];
            let spread = |f: fn(&ReportRow) -> Option<f64>| {
                Spread::of(&group.iter().filter_map(|(_, r)| f(r)).collect::<Vec<_>>())
            };
            SeededRow {
                recipe,
                seeds: group.iter().map(|(s, _)| *s).collect(),
                trainable_percent: group[0].1.trainable_percent,
                delta_target: spread(|r| r.delta_target),
                delta_heldout: spread(|r| r.delta_heldout),
                numeric_mass_base: spread(|r| r.numeric_mass_base),
                numeric_mass_end: spread(|r| r.numeric_mass_end),
                wall_seconds: spread(|r| r.wall_seconds),
                runs: group.iter().map(|(_, r)| r.clone()).collect(),
            }
        })
        .collect()
}

fn cell(v: Option<Spread>, f: impl Fn(&Spread) -> String) -> String {
    v.as_ref().map_or_else(|| "n/a".to_string(), f)
}

/// The rows as an aligned text table: mean ± std over seeds.
pub fn table(rows: &[SeededRow]) -> String {
    let mut lines = vec![[
        "recipe",
        "seeds",
        "trainable",
        "Δ target (pp)",
        "Δ held-out (pp)",
        "held-out numeric mass (end)",
        "wall (s)",
    ]
    .map(String::from)
    .to_vec()];
    for r in rows {
        lines.push(vec![
            r.recipe.clone(),
            r.seeds.len().to_string(),
            format!("{:.1}%", r.trainable_percent),
            cell(r.delta_target, |s| s.signed(1)),
            cell(r.delta_heldout, |s| s.signed(1)),
            cell(r.numeric_mass_end, |s| s.plain(4)),
            cell(r.wall_seconds, |s| s.plain(0)),
        ]);
    }
    align(&lines)
}

/// Picks one measure of a row.
type Measure = fn(&SeededRow) -> Option<Spread>;

/// Width of a plot's axis in characters.
const PLOT_WIDTH: usize = 48;

/// Two dot plots in plain text: Δ target and Δ held-out per recipe, `●` at the mean and `├─┤`
/// spanning ± one standard deviation, on one shared axis per plot that includes zero.
pub fn plot(rows: &[SeededRow]) -> String {
    let mut text = String::new();
    let panels: [(&str, Measure); 2] = [
        ("Δ target (pp), mean ± std over seeds", |r| r.delta_target),
        ("Δ held-out (pp), mean ± std over seeds", |r| {
            r.delta_heldout
        }),
    ];
    let label_width = rows
        .iter()
        .map(|r| r.recipe.chars().count())
        .max()
        .unwrap_or(0);
    for (title, pick) in panels {
        let spreads: Vec<Option<Spread>> = rows.iter().map(pick).collect();
        let (mut lo, mut hi) = (0f64, 0f64);
        for s in spreads.iter().flatten() {
            lo = lo.min(s.mean - s.std);
            hi = hi.max(s.mean + s.std);
        }
        if hi - lo < 1e-9 {
            hi = lo + 1.0;
        }
        let _ = writeln!(text, "{title}");
        let column = |v: f64| -> usize {
            (((v - lo) / (hi - lo)) * (PLOT_WIDTH - 1) as f64)
                .round()
                .clamp(0.0, (PLOT_WIDTH - 1) as f64) as usize
        };
        let zero = column(0.0);
        for (row, spread) in rows.iter().zip(&spreads) {
            let mut axis: Vec<char> = vec![' '; PLOT_WIDTH];
            axis[zero] = '┊';
            if let Some(s) = spread {
                let (a, b) = (column(s.mean - s.std), column(s.mean + s.std));
                for c in axis.iter_mut().take(b + 1).skip(a) {
                    *c = '─';
                }
                axis[a] = '├';
                axis[b] = '┤';
                axis[column(s.mean)] = '●';
            }
            let value = spread.map_or_else(|| "n/a".to_string(), |s| s.signed(1));
            let _ = writeln!(
                text,
                "  {:<label_width$}  {}  {value}",
                row.recipe,
                axis.into_iter().collect::<String>()
            );
        }
        let left = format!("{lo:.1}");
        let right = format!("{hi:.1}");
        let gap = (PLOT_WIDTH).saturating_sub(left.len() + right.len());
        let _ = writeln!(
            text,
            "  {:<label_width$}  {left}{}{right}",
            "",
            " ".repeat(gap)
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_the_sample_standard_deviation() {
        // 2, 4, 4, 4, 5, 5, 7, 9: mean 5, Σ(x − 5)² = 32, sample variance 32/7.
        let s = Spread::of(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap();
        assert_eq!(s.mean, 5.0);
        assert!((s.std - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        assert_eq!(Spread::of(&[3.0]).unwrap().std, 0.0);
        assert!(Spread::of(&[]).is_none());
    }
}
