//! A forgetting forecast: from the runs of a runs folder, how the first probe readings after the
//! base (KL, numeric and answer-class mass, stop probability) relate to the run's final Δ
//! held-out score; judged by leave-one-run-out error against predicting the mean.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::Serialize;

use crate::run::{Record, RunDir};

/// The early readings a forecast uses, in this order.
pub const FEATURES: [&str; 4] = [
    "KL(base ‖ now)",
    "numeric mass Δ",
    "answer-class mass Δ",
    "stop probability Δ",
];

/// One run's early readings and, when it finished with an evaluation, its final Δ held-out.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunReadings {
    pub run: PathBuf,
    /// The step of the first probe after the base.
    pub early_step: usize,
    pub features: [f64; 4],
    /// Mean held-out score minus base at the last evaluation, in points.
    pub final_heldout_delta: Option<f64>,
}

/// The readings a forecast uses, from a held-out probe summary (see [`FEATURES`]).
pub fn features_of(heldout: &crate::run::record::ProbeSetSummary) -> [f64; 4] {
    let class =
        |s: &crate::eval::probe::GreedyStats| s.class_mass.get("answer").map_or(0.0, |m| m.mean);
    let h = heldout;
    [
        h.divergence.kl.mean,
        h.numeric_mass_delta,
        class(&h.now) - class(&h.base),
        h.now.shape.first_stop_prob.mean - h.base.shape.first_stop_prob.mean,
    ]
}

/// The forecast for a run whose held-out probe now reads `heldout`, fitted on the other
/// finished runs beside it under `root`; `None` when there are too few or the fit does no
/// better than the mean.
pub fn forecast_for(
    root: &Path,
    this_run: &Path,
    heldout: &crate::run::record::ProbeSetSummary,
) -> Option<(f64, f64, usize)> {
    let others: Vec<RunReadings> = readings_under(root)
        .ok()?
        .into_iter()
        .filter(|r| r.run != this_run)
        .collect();
    let forecast = fit(&others).ok().filter(Forecast::is_useful)?;
    let (value, error) = forecast.predict(&features_of(heldout));
    Some((value, error, forecast.runs))
}

/// The early readings of the run in `dir`; `None` when it has no probe after step 0. The final
/// Δ held-out is only read from a finished run.
pub fn readings(dir: &Path) -> Result<Option<RunReadings>> {
    let run = RunDir::open(dir)?;
    let finished = run
        .read_status()
        .is_ok_and(|s| s.state == crate::run::RunState::Finished);
    let log = run.read_records()?;
    let mut early = None;
    let mut last_eval = None;
    for record in &log.records {
        match record {
            Record::Probe(p) if p.step > 0 && early.is_none() => {
                let Some(h) = p.heldout.as_ref() else {
                    continue;
                };
                let class = |s: &crate::eval::probe::GreedyStats| {
                    s.class_mass.get("answer").map_or(0.0, |m| m.mean)
                };
                early = Some((
                    p.step,
                    [
                        h.divergence.kl.mean,
                        h.numeric_mass_delta,
                        class(&h.now) - class(&h.base),
                        h.now.shape.first_stop_prob.mean - h.base.shape.first_stop_prob.mean,
                    ],
                ));
            }
            Record::Eval(e) if e.delta_heldout.is_some() => last_eval = e.delta_heldout,
            _ => {}
        }
    }
    Ok(early.map(|(early_step, features)| RunReadings {
        run: dir.to_path_buf(),
        early_step,
        features,
        final_heldout_delta: last_eval.filter(|_| finished),
    }))
}

/// Ridge regression on standardised features: weights, intercept and the scaling.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fit {
    pub intercept: f64,
    pub weights: Vec<f64>,
    means: Vec<f64>,
    scales: Vec<f64>,
    /// The outcomes seen: forecasts stay within them (no history supports a value beyond).
    range: (f64, f64),
}

impl Fit {
    /// Least squares with an L2 penalty `lambda` on the standardised weights.
    pub fn new(xs: &[Vec<f64>], ys: &[f64], lambda: f64) -> Self {
        let n = xs.len().max(1) as f64;
        let d = xs.first().map_or(0, Vec::len);
        let means: Vec<f64> = (0..d)
            .map(|j| xs.iter().map(|x| x[j]).sum::<f64>() / n)
            .collect();
        let scales: Vec<f64> = (0..d)
            .map(|j| {
                let var = xs.iter().map(|x| (x[j] - means[j]).powi(2)).sum::<f64>() / n;
                if var > 1e-24 {
                    var.sqrt()
                } else {
                    1.0
                }
            })
            .collect();
        let z: Vec<Vec<f64>> = xs
            .iter()
            .map(|x| (0..d).map(|j| (x[j] - means[j]) / scales[j]).collect())
            .collect();
        let y_mean = ys.iter().sum::<f64>() / n;
        // (ZᵀZ + λI) w = Zᵀ(y − ȳ)
        let mut a = vec![vec![0f64; d]; d];
        let mut b = vec![0f64; d];
        for (zi, &yi) in z.iter().zip(ys) {
            for j in 0..d {
                b[j] += zi[j] * (yi - y_mean);
                for k in 0..d {
                    a[j][k] += zi[j] * zi[k];
                }
            }
        }
        for (j, row) in a.iter_mut().enumerate() {
            row[j] += lambda;
        }
        let weights = solve(a, b);
        let range = ys
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &y| {
                (lo.min(y), hi.max(y))
            });
        Self {
            intercept: y_mean,
            weights,
            means,
            scales,
            range,
        }
    }

    /// The prediction for readings `x`, within the range of the outcomes fitted.
    pub fn predict(&self, x: &[f64]) -> f64 {
        let linear = self.intercept
            + x.iter()
                .zip(&self.weights)
                .enumerate()
                .map(|(j, (v, w))| w * (v - self.means[j]) / self.scales[j])
                .sum::<f64>();
        linear.clamp(self.range.0, self.range.1)
    }
}

/// Gaussian elimination with partial pivoting; a singular system gives zero weights.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let d = b.len();
    for col in 0..d {
        let pivot = (col..d)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .unwrap_or(col);
        if a[pivot][col].abs() < 1e-12 {
            return vec![0.0; d];
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let (top, rest) = a.split_at_mut(col + 1);
        let pivot_row = &top[col];
        for (i, row) in rest.iter_mut().enumerate() {
            let f = row[col] / pivot_row[col];
            for (x, p) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                *x -= f * p;
            }
            b[col + 1 + i] -= f * b[col];
        }
    }
    let mut x = vec![0f64; d];
    for row in (0..d).rev() {
        let rest: f64 = (row + 1..d).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - rest) / a[row][row];
    }
    x
}

/// A forecast judged by leaving each run out in turn.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Forecast {
    /// Runs with early readings and a final Δ held-out.
    pub runs: usize,
    /// The fit on every run.
    pub fit: Fit,
    /// Mean absolute leave-one-out error of the forecast, in points.
    pub loo_error: f64,
    /// ... and of predicting the other runs' mean.
    pub mean_error: f64,
    /// Each run's final Δ held-out and its leave-one-out forecast.
    pub predictions: Vec<(PathBuf, f64, f64)>,
}

impl Forecast {
    /// Whether the forecast beats predicting the mean.
    pub fn is_useful(&self) -> bool {
        self.loo_error < self.mean_error
    }

    /// The forecast for early readings `x`, with an interval of ± the leave-one-out error.
    pub fn predict(&self, x: &[f64]) -> (f64, f64) {
        (self.fit.predict(x), self.loo_error)
    }
}

/// Ridge penalty on the standardised weights: the runs are few.
const LAMBDA: f64 = 1.0;

/// Fits the forecast on `readings` (those with a final Δ held-out); at least 4 runs.
pub fn fit(readings: &[RunReadings]) -> Result<Forecast> {
    let usable: Vec<&RunReadings> = readings
        .iter()
        .filter(|r| r.final_heldout_delta.is_some_and(f64::is_finite))
        .filter(|r| r.features.iter().all(|f| f.is_finite()))
        .collect();
    if usable.len() < 4 {
        bail!(
            "a forecast needs at least 4 finished runs with probe and evaluation records; found {}",
            usable.len()
        );
    }
    let xs: Vec<Vec<f64>> = usable.iter().map(|r| r.features.to_vec()).collect();
    let ys: Vec<f64> = usable
        .iter()
        .map(|r| r.final_heldout_delta.unwrap_or(0.0))
        .collect();
    let mut predictions = Vec::with_capacity(usable.len());
    let (mut loo, mut mean) = (0.0, 0.0);
    for i in 0..usable.len() {
        let rest_x: Vec<Vec<f64>> = (0..xs.len())
            .filter(|&j| j != i)
            .map(|j| xs[j].clone())
            .collect();
        let rest_y: Vec<f64> = (0..ys.len()).filter(|&j| j != i).map(|j| ys[j]).collect();
        let guess = Fit::new(&rest_x, &rest_y, LAMBDA).predict(&xs[i]);
        let rest_mean = rest_y.iter().sum::<f64>() / rest_y.len() as f64;
        loo += (guess - ys[i]).abs();
        mean += (rest_mean - ys[i]).abs();
        predictions.push((usable[i].run.clone(), ys[i], guess));
    }
    let n = usable.len() as f64;
    Ok(Forecast {
        runs: usable.len(),
        fit: Fit::new(&xs, &ys, LAMBDA),
        loo_error: loo / n,
        mean_error: mean / n,
        predictions,
    })
}

/// The early readings of every run directory directly under `root`.
pub fn readings_under(root: &Path) -> Result<Vec<RunReadings>> {
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(|e| anyhow::anyhow!("cannot read runs folder {}: {e}", root.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("metrics.jsonl").is_file() && p.join("recipe.yaml").is_file())
        .collect();
    dirs.sort();
    for dir in dirs {
        // One unreadable run does not stop the others from being read.
        match readings(&dir) {
            Ok(Some(r)) => out.push(r),
            Ok(None) => {}
            Err(e) => tracing::warn!("forecast: skipping {}: {e:#}", dir.display()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ridge_recovers_a_linear_relation_and_solves_exactly() {
        let xs: Vec<Vec<f64>> = (0..10)
            .map(|i| vec![i as f64, (i * i % 7) as f64])
            .collect();
        let ys: Vec<f64> = xs.iter().map(|x| 2.0 - 3.0 * x[0] + 0.5 * x[1]).collect();
        let fit = Fit::new(&xs, &ys, 1e-9);
        for (x, y) in xs.iter().zip(&ys) {
            assert!((fit.predict(x) - y).abs() < 1e-6);
        }
        let x = solve(vec![vec![2.0, 1.0], vec![1.0, 3.0]], vec![3.0, 5.0]);
        assert!(
            (x[0] - 0.8).abs() < 1e-12 && (x[1] - 1.4).abs() < 1e-12,
            "{x:?}"
        );
    }

    fn reading(i: usize, kl: f64, delta: f64) -> RunReadings {
        RunReadings {
            run: PathBuf::from(format!("run-{i}")),
            early_step: 10,
            features: [kl, 0.0, 0.0, 0.0],
            final_heldout_delta: Some(delta),
        }
    }

    #[test]
    fn leave_one_out_tells_a_forecast_from_the_mean() {
        // Final Δ held-out follows the early KL: the forecast beats the mean.
        let related: Vec<RunReadings> = (0..8)
            .map(|i| {
                reading(
                    i,
                    i as f64 * 0.1,
                    -20.0 * i as f64 * 0.1 + [0.3, -0.2][i % 2],
                )
            })
            .collect();
        let f = fit(&related).unwrap();
        assert!(f.is_useful() && f.loo_error < 0.5 * f.mean_error, "{f:?}");
        // Final Δ held-out unrelated to the readings: no better than the mean.
        let unrelated: Vec<RunReadings> = (0..8)
            .map(|i| {
                reading(
                    i,
                    i as f64 * 0.1,
                    [3.0, -4.0, 1.0, -2.0, 5.0, -1.0, 0.0, 2.0][i],
                )
            })
            .collect();
        let f = fit(&unrelated).unwrap();
        assert!(!f.is_useful(), "{f:?}");
        // Too few runs is an error that says how many there are.
        let err = fit(&related[..3]).unwrap_err().to_string();
        assert!(err.contains("found 3"), "{err}");
    }
}
