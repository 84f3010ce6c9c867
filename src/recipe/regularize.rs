//! The `regularize:` section: a term added to the training loss that holds the model near the
//! one the stage started from. One method so far, Learning without Forgetting (`lwf`).

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// Which regularizer the loss gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegularizeMethod {
    /// Learning without Forgetting: λ·T²·KL(teacher/T ‖ student/T) on the answer positions,
    /// the teacher being the model at the start of the stage.
    Lwf,
}

/// `regularize: {method: lwf, lambda: 1.0, temperature: 2.0}`. `lambda` and `temperature`
/// default to the study's values (1 and 2); the run's recorded recipe shows them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegularizeSpec {
    pub method: RegularizeMethod,
    /// Weight λ of the distillation term (≥ 0; 0 trains as plain training, to float rounding).
    #[serde(default = "default_lambda")]
    pub lambda: f64,
    /// Softmax temperature T (> 0) of both distributions; the term is scaled by T².
    #[serde(default = "default_temperature")]
    pub temperature: f64,
}

fn default_lambda() -> f64 {
    1.0
}

fn default_temperature() -> f64 {
    2.0
}

impl RegularizeSpec {
    /// Rejects values that cannot work, naming the key.
    pub fn validate(&self) -> Result<()> {
        if !(self.lambda.is_finite() && self.lambda >= 0.0) {
            bail!(
                "regularize.lambda must be a number >= 0, got {}",
                self.lambda
            );
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            bail!(
                "regularize.temperature must be a positive number, got {}",
                self.temperature
            );
        }
        Ok(())
    }
}
