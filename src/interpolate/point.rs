//! One point along α: what the monitor measured there, in a few numbers.

use serde::{Deserialize, Serialize};

use crate::run::Record;
use crate::train::monitor::MonitorReport;

/// The summary of one interpolation point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlphaPoint {
    /// 0 = base, 1 = tuned.
    pub alpha: f64,
    /// Mean target-task score change against the base, percentage points.
    pub delta_target: Option<f64>,
    /// Mean held-out score change against the base, percentage points.
    pub delta_heldout: Option<f64>,
    /// Held-out probe: mean numeric mass per generated step, and its change against the base.
    pub heldout_numeric_mass: Option<f64>,
    pub heldout_numeric_mass_delta: Option<f64>,
    /// Target probe: mean numeric mass per generated step.
    pub target_numeric_mass: Option<f64>,
    /// Held-out probe: mean KL(base ‖ point), nats.
    pub heldout_kl: Option<f64>,
    /// Seconds the point took to probe and score.
    pub seconds: f64,
}

impl AlphaPoint {
    /// The point at `alpha` from the monitor's report and the records it wrote.
    pub fn from_records(alpha: f64, report: &MonitorReport, records: &[Record]) -> Self {
        let probe = records.iter().rev().find_map(|r| match r {
            Record::Probe(p) => Some(p),
            _ => None,
        });
        let heldout = probe.and_then(|p| p.heldout.as_ref());
        let target = probe.and_then(|p| p.target.as_ref());
        Self {
            alpha,
            delta_target: report.delta_learning,
            delta_heldout: report.delta_heldout,
            heldout_numeric_mass: heldout.map(|h| h.now.numeric_mass.mean),
            heldout_numeric_mass_delta: report.heldout_numeric_mass_delta,
            target_numeric_mass: target.map(|t| t.now.numeric_mass.mean),
            heldout_kl: heldout.map(|h| h.divergence.kl.mean),
            seconds: report.seconds,
        }
    }
}

/// The α whose point keeps the most of the learning without forgetting: the largest
/// Δ target + Δ held-out (ties go to the smaller α, the nearer to the base). `None` when no
/// point has both scores.
pub fn best_alpha(points: &[AlphaPoint]) -> Option<f64> {
    points
        .iter()
        .filter_map(|p| Some((p.alpha, p.delta_target? + p.delta_heldout?)))
        .fold(None, |best: Option<(f64, f64)>, (alpha, gain)| match best {
            Some((_, g)) if g >= gain => best,
            _ => Some((alpha, gain)),
        })
        .map(|(alpha, _)| alpha)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(alpha: f64, target: f64, heldout: f64) -> AlphaPoint {
        AlphaPoint {
            alpha,
            delta_target: Some(target),
            delta_heldout: Some(heldout),
            heldout_numeric_mass: None,
            heldout_numeric_mass_delta: None,
            target_numeric_mass: None,
            heldout_kl: None,
            seconds: 0.0,
        }
    }

    #[test]
    fn the_best_alpha_weighs_learning_against_forgetting() {
        let points = [
            point(0.0, 0.0, 0.0),
            point(0.5, 8.0, -1.0),
            point(0.7, 10.0, -3.0),
            point(1.0, 12.0, -15.0),
        ];
        assert_eq!(best_alpha(&points), Some(0.5));
        // A tie keeps the α nearer to the base.
        let tie = [point(0.3, 5.0, 0.0), point(0.6, 6.0, -1.0)];
        assert_eq!(best_alpha(&tie), Some(0.3));
        assert_eq!(best_alpha(&[]), None);
    }
}
