//! WiSE-FT along a finished run: the trained tensors moved from the base (α 0) to the tuned
//! values (α 1), `(1 − α)·base + α·tuned`, each point probed and scored exactly as the run's own
//! monitor does, and cached in the run directory so a point is computed once.
//!
//! ```text
//! RUN/interpolation/alpha-0.500/   records of the point (probe, layer drift, eval), step 1
//! RUN/interpolation/alpha-0.500/point.json   its summary (AlphaPoint), written last
//! ```

mod point;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Tensor;

pub use point::{best_alpha, AlphaPoint};

use crate::model::{Decoder, Model};
use crate::recipe::Recipe;
use crate::run::{RunDir, RunState};
use crate::train::monitor::Monitor;
use crate::util::device::{parse_device, parse_dtype};

/// A finished run opened for interpolation: the base and tuned values of its trained tensors,
/// the decoder whose trainable tensors are set to each point, and the monitor with its base
/// references computed once.
pub struct Interpolation {
    run: RunDir,
    model: Model,
    decoder: Decoder,
    monitor: Monitor,
    base: HashMap<String, Tensor>,
    tuned: HashMap<String, Tensor>,
}

impl Interpolation {
    /// Opens `run`, which must have finished and have a final checkpoint; computes the base
    /// model's probe references and task scores (the slow part).
    pub fn open(run_dir: &Path) -> Result<Self> {
        let run = RunDir::open(run_dir)?;
        let status = run.read_status()?;
        if status.state != RunState::Finished {
            bail!(
                "{} is {}: interpolation needs a finished run",
                run_dir.display(),
                status.state.as_str()
            );
        }
        let recipe: Recipe = run.read_recipe()?;
        if recipe.lora.is_some() {
            bail!(
                "{} trained LoRA adapters: interpolate its folded model with the base instead \
                 (`tunescope merge BASE {} --alpha A --out DIR`)",
                run_dir.display(),
                run_dir.display()
            );
        }
        let step = run.latest_checkpoint().with_context(|| {
            format!("{} has no checkpoint to interpolate to", run_dir.display())
        })?;
        let device = parse_device(&recipe.device)?;
        let dtype = parse_dtype(&recipe.dtype)?;
        let model = Model::open(&recipe.model_spec()?)?;
        let selection = crate::select::resolve(&recipe.trainable, &model.module_map())?;
        let decoder = model.decoder(&selection.to_hash_set(), dtype, &device)?;
        let mut base = HashMap::new();
        for (name, var) in decoder.vars() {
            // A copy: setting the var later writes into its storage, which `to_dtype` to the
            // same dtype would share.
            let value = var.as_tensor().to_dtype(candle_core::DType::F32)?.copy()?;
            base.insert(name.clone(), value);
        }
        let checkpoint = run.load_checkpoint(step, &device)?;
        let mut tuned = HashMap::new();
        for name in base.keys() {
            let t = checkpoint.trained.get(name).with_context(|| {
                format!(
                    "checkpoint step-{step} of {} lacks {name}",
                    run_dir.display()
                )
            })?;
            tuned.insert(name.clone(), t.to_dtype(candle_core::DType::F32)?);
        }
        let monitor = Monitor::new(&recipe, decoder.frozen_snapshot()?, &model.tokenizer)?
            .with_context(|| {
                format!(
                    "the recipe of {} has neither `probe` nor `eval`: nothing to score along α",
                    run_dir.display()
                )
            })?;
        Ok(Self {
            run,
            model,
            decoder,
            monitor,
            base,
            tuned,
        })
    }

    /// The run interpolated.
    pub fn run(&self) -> &RunDir {
        &self.run
    }

    /// Where the point at `alpha` is cached.
    pub fn point_dir(&self, alpha: f64) -> PathBuf {
        point_dir(self.run.path(), alpha)
    }

    /// The trained tensors at `alpha`: exactly the base at 0 and exactly the tuned values at 1.
    pub fn tensors_at(&self, alpha: f64) -> Result<HashMap<String, Tensor>> {
        check_alpha(alpha)?;
        self.base
            .iter()
            .map(|(name, base)| {
                let tuned = &self.tuned[name];
                Ok((name.clone(), crate::merge::blend(base, tuned, alpha)?))
            })
            .collect()
    }

    /// Probes and scores the point at `alpha`, or reads it from the cache.
    pub fn score(&mut self, alpha: f64) -> Result<AlphaPoint> {
        if let Some(point) = cached(self.run.path(), alpha)? {
            return Ok(point);
        }
        let tensors = self.tensors_at(alpha)?;
        for (name, var) in self.decoder.vars() {
            var.set(&tensors[name].to_dtype(var.dtype())?)?;
        }
        let dir = self.point_dir(alpha);
        if dir.exists() {
            // A point cut short (no point.json): computed again from scratch.
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot remove {}", dir.display()))?;
        }
        let point_run = RunDir::open_or_init(&dir)?;
        let report = self.monitor.run(1, 1, &self.decoder, &point_run)?;
        let point = AlphaPoint::from_records(alpha, &report, &point_run.read_records()?.records);
        crate::util::fs::write_json_atomic(&dir.join("point.json"), &point)?;
        Ok(point)
    }

    /// Writes the model at `alpha` to `out` (atomically, like a run's `final/`).
    pub fn write_model(&self, alpha: f64, out: &Path) -> Result<()> {
        crate::run::export_model(&self.model, &self.tensors_at(alpha)?, out)
    }
}

fn check_alpha(alpha: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&alpha) {
        bail!("α must lie in [0, 1] (0 = base, 1 = tuned), got {alpha}");
    }
    Ok(())
}

fn point_dir(run: &Path, alpha: f64) -> PathBuf {
    run.join("interpolation").join(format!("alpha-{alpha:.3}"))
}

/// The cached point at `alpha` under `run`, if it was finished.
pub fn cached(run: &Path, alpha: f64) -> Result<Option<AlphaPoint>> {
    let path = point_dir(run, alpha).join("point.json");
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let point = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a point summary; delete it", path.display()))?;
    Ok(Some(point))
}

/// Parses `0,0.25,1` or `0:1:0.1` (start:end:step, end included).
pub fn parse_alphas(text: &str) -> Result<Vec<f64>> {
    let parse = |s: &str| -> Result<f64> {
        s.trim()
            .parse::<f64>()
            .with_context(|| format!("`{s}` is not a number (alphas: `0,0.5,1` or `0:1:0.1`)"))
    };
    let alphas: Vec<f64> = if let [start, end, step] = text.split(':').collect::<Vec<_>>()[..] {
        let (start, end, step) = (parse(start)?, parse(end)?, parse(step)?);
        if step <= 0.0 || end < start {
            bail!("alphas `{text}`: need start ≤ end and a positive step");
        }
        let n = ((end - start) / step + 1e-9).floor() as usize;
        (0..=n).map(|i| start + step * i as f64).collect()
    } else {
        text.split(',').map(parse).collect::<Result<_>>()?
    };
    for &a in &alphas {
        check_alpha(a)?;
    }
    Ok(alphas)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alphas_parse_as_lists_and_ranges() {
        assert_eq!(parse_alphas("0,0.5,1").unwrap(), vec![0.0, 0.5, 1.0]);
        let r = parse_alphas("0:1:0.25").unwrap();
        assert_eq!(r, vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(parse_alphas("0:1:0.1").unwrap().len(), 11);
        assert!(parse_alphas("1.5").is_err());
        assert!(parse_alphas("x").is_err());
    }

    #[test]
    fn interpolation_ends_are_exact() {
        let dev = candle_core::Device::Cpu;
        let a = Tensor::new(&[0.1f32, -3.7, 1e-8, 12345.678], &dev).unwrap();
        let b = Tensor::new(&[0.3f32, 2.2, -1e-7, -0.001], &dev).unwrap();
        let at = |x| {
            crate::merge::blend(&a, &b, x)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        assert_eq!(at(0.0), a.to_vec1::<f32>().unwrap());
        assert_eq!(at(1.0), b.to_vec1::<f32>().unwrap());
        let mid = at(0.5);
        assert!((mid[0] - 0.2).abs() < 1e-7);
    }
}
