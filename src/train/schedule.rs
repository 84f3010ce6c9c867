//! Learning-rate schedules: linear warmup, then cosine, linear or constant.

use crate::recipe::{ScheduleKind, ScheduleSpec};

/// Learning rate as a function of the optimizer step.
#[derive(Debug, Clone)]
pub struct LrSchedule {
    base: f64,
    warmup: usize,
    total: usize,
    kind: ScheduleKind,
}

impl LrSchedule {
    /// Warmup steps are `warmup_steps`, else `ceil(warmup_ratio · total)` (as transformers does).
    pub fn new(spec: &ScheduleSpec, base_lr: f64, total_steps: usize) -> Self {
        let warmup = spec
            .warmup_steps
            .unwrap_or_else(|| (spec.warmup_ratio * total_steps as f64).ceil() as usize)
            .min(total_steps);
        Self {
            base: base_lr,
            warmup,
            total: total_steps,
            kind: spec.kind,
        }
    }

    /// Warmup length in steps.
    pub fn warmup_steps(&self) -> usize {
        self.warmup
    }

    /// Learning rate used for the update of 0-based step `step`.
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.base * step as f64 / self.warmup.max(1) as f64;
        }
        let span = self.total.saturating_sub(self.warmup).max(1) as f64;
        let progress = ((step - self.warmup) as f64 / span).min(1.0);
        match self.kind {
            ScheduleKind::Constant => self.base,
            ScheduleKind::Linear => self.base * (1.0 - progress),
            ScheduleKind::Cosine => {
                self.base * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine_matches_hand_values() {
        let spec = ScheduleSpec {
            kind: ScheduleKind::Cosine,
            warmup_ratio: 0.1,
            warmup_steps: None,
        };
        let s = LrSchedule::new(&spec, 1.0, 100);
        assert_eq!(s.warmup_steps(), 10);
        assert_eq!(s.lr(0), 0.0);
        assert!((s.lr(5) - 0.5).abs() < 1e-12);
        assert!((s.lr(10) - 1.0).abs() < 1e-12);
        assert!((s.lr(55) - 0.5).abs() < 1e-12);
        assert!(s.lr(99) > 0.0 && s.lr(99) < 0.001);
    }

    #[test]
    fn linear_and_constant() {
        let lin = LrSchedule::new(
            &ScheduleSpec {
                kind: ScheduleKind::Linear,
                warmup_ratio: 0.0,
                warmup_steps: None,
            },
            2.0,
            10,
        );
        assert!((lin.lr(5) - 1.0).abs() < 1e-12);
        let constant = LrSchedule::new(
            &ScheduleSpec {
                kind: ScheduleKind::Constant,
                warmup_ratio: 0.0,
                warmup_steps: Some(2),
            },
            3.0,
            10,
        );
        assert!((constant.lr(1) - 1.5).abs() < 1e-12);
        assert_eq!(constant.lr(9), 3.0);
    }
}
