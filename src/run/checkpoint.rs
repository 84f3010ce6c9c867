//! Checkpoints hold only what training changed: the trained tensors, the optimizer state and
//! the data position. They are written into a temporary directory renamed into place, so an
//! I/O error never damages the previous checkpoint.

use std::collections::HashMap;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::RunDir;
use crate::util::fs::write_json_atomic;

/// Training position saved with a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Optimizer updates completed.
    pub step: usize,
    /// Micro-batches consumed (data position: epoch and batch follow from it).
    pub micro_batches: usize,
    pub seed: u64,
    /// Loss of every completed step, so a resumed run reports the same curve.
    pub losses: Vec<f64>,
}

/// A checkpoint read back from disk.
pub struct LoadedCheckpoint {
    pub state: CheckpointState,
    pub trained: HashMap<String, Tensor>,
    pub optimizer: HashMap<String, Tensor>,
}

impl RunDir {
    /// Writes `checkpoints/step-N/` atomically and prunes old ones down to `keep`.
    pub fn save_checkpoint(
        &self,
        state: &CheckpointState,
        trained: &HashMap<String, Tensor>,
        optimizer: &HashMap<String, Tensor>,
        keep: usize,
    ) -> Result<()> {
        let final_dir = self.checkpoint_dir(state.step);
        let tmp = self
            .checkpoints_dir()
            .join(format!(".step-{}.tmp", state.step));
        let write = || -> Result<()> {
            if tmp.exists() {
                std::fs::remove_dir_all(&tmp)?;
            }
            std::fs::create_dir_all(&tmp)
                .with_context(|| format!("cannot create {}", tmp.display()))?;
            candle_core::safetensors::save(trained, tmp.join("trainable.safetensors"))?;
            candle_core::safetensors::save(optimizer, tmp.join("optimizer.safetensors"))?;
            write_json_atomic(&tmp.join("state.json"), state)?;
            if final_dir.exists() {
                std::fs::remove_dir_all(&final_dir)?;
            }
            std::fs::rename(&tmp, &final_dir)
                .with_context(|| format!("cannot move checkpoint into {}", final_dir.display()))?;
            Ok(())
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e).with_context(|| {
                format!(
                    "checkpoint at step {} was not written; the previous one is intact",
                    state.step
                )
            });
        }
        let steps = self.checkpoint_steps();
        if keep > 0 && steps.len() > keep {
            for old in &steps[..steps.len() - keep] {
                let _ = std::fs::remove_dir_all(self.checkpoint_dir(*old));
            }
        }
        Ok(())
    }

    /// Reads the checkpoint after `step` updates.
    pub fn load_checkpoint(&self, step: usize, device: &Device) -> Result<LoadedCheckpoint> {
        let dir = self.checkpoint_dir(step);
        let read = |name: &str| -> Result<HashMap<String, Tensor>> {
            let path = dir.join(name);
            candle_core::safetensors::load(&path, device)
                .with_context(|| format!("cannot read {}", path.display()))
        };
        let state_path = dir.join("state.json");
        let state: CheckpointState = serde_json::from_str(
            &std::fs::read_to_string(&state_path)
                .with_context(|| format!("cannot read {}", state_path.display()))?,
        )
        .with_context(|| format!("{} is not a valid checkpoint state", state_path.display()))?;
        Ok(LoadedCheckpoint {
            state,
            trained: read("trainable.safetensors")?,
            optimizer: read("optimizer.safetensors")?,
        })
    }
}
