//! Opening a PEFT adapter directory as a model: its base model, with the adapter folded into the
//! weights in memory, so every tool that opens a model reads the adapted one.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::peft::{fold, read_adapter};
use super::LoraSettings;
use crate::model::Model;

/// The adapter a model was opened from.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterInfo {
    pub dir: PathBuf,
    /// The base model it was folded into, as opened.
    pub base: String,
    pub settings: LoraSettings,
    /// Adapted module names.
    pub modules: Vec<String>,
}

impl Model {
    /// Opens the LoRA adapter in `dir` on `base` (default: its config's
    /// `base_model_name_or_path`, a path relative to the working directory or to the adapter,
    /// or a hub id) and folds it in: `W + scale·B·A` in f32, cast back to `W`'s dtype.
    pub fn open_adapter(dir: &Path, base: Option<&str>) -> Result<Model> {
        let adapter = read_adapter(dir)?;
        let base = match base {
            Some(b) => b.to_string(),
            None => resolve_base(dir, adapter.config.base.as_deref())?,
        };
        let mut model = Model::open(&base).with_context(|| {
            format!(
                "cannot open the base model of the adapter in {}",
                dir.display()
            )
        })?;
        for (name, value) in fold(&model.weights, &adapter)? {
            model.weights.set_override(&name, value)?;
        }
        model.adapter = Some(AdapterInfo {
            dir: dir.to_path_buf(),
            base,
            settings: adapter.config.settings.clone(),
            modules: adapter.modules.keys().cloned().collect(),
        });
        Ok(model)
    }
}

/// Where `base_model_name_or_path` points: an existing directory (as written, else relative to
/// the adapter's directory), else the text itself (a hub id).
fn resolve_base(dir: &Path, named: Option<&str>) -> Result<String> {
    let named = named.with_context(|| {
        format!(
            "{} names no base_model_name_or_path; pass the base model explicitly (tunescope merge --base)",
            dir.join(super::peft::CONFIG_FILE).display()
        )
    })?;
    let path = Path::new(named);
    if path.is_dir() {
        return Ok(named.to_string());
    }
    let beside = dir.join(path);
    if path.is_relative() && beside.is_dir() {
        return Ok(beside.to_string_lossy().into_owned());
    }
    Ok(named.to_string())
}
