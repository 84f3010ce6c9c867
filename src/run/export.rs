//! Writes a trained model back in Hugging Face layout: the original config and tokenizer files,
//! and one safetensors file with every tensor under its original name and dtype. Frozen tensors
//! are copied unchanged from the source files; the directory appears atomically.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};

use crate::model::Model;

/// Writes `out` as a full model: `trained` tensors replace the originals of the same name.
pub fn export_model(model: &Model, trained: &HashMap<String, Tensor>, out: &Path) -> Result<()> {
    let parent = out.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "final".into());
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> Result<()> {
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        let mut tensors = HashMap::new();
        for info in model.weights.infos() {
            let tensor = match trained.get(&info.name) {
                Some(t) => {
                    let dtype =
                        crate::model::weights::file_dtype(&info.dtype).unwrap_or(DType::F32);
                    t.to_device(&Device::Cpu)?.to_dtype(dtype)?
                }
                None => {
                    let dtype =
                        crate::model::weights::file_dtype(&info.dtype).unwrap_or(DType::F32);
                    model
                        .weights
                        .load(&info.name, &info.shape, dtype, &Device::Cpu)?
                }
            };
            tensors.insert(info.name.clone(), tensor);
        }
        candle_core::safetensors::save(&tensors, tmp.join("model.safetensors"))?;
        for entry in std::fs::read_dir(&model.files.dir)? {
            let entry = entry?;
            let file_name = entry.file_name().to_string_lossy().into_owned();
            let is_weights =
                file_name.ends_with(".safetensors") || file_name == "model.safetensors.index.json";
            let wanted = file_name.ends_with(".json")
                || file_name.ends_with(".model")
                || file_name.ends_with(".txt")
                || file_name.ends_with(".jinja");
            if entry.path().is_file() && wanted && !is_weights {
                std::fs::copy(entry.path(), tmp.join(&file_name))?;
            }
        }
        if out.exists() {
            std::fs::remove_dir_all(out)?;
        }
        std::fs::rename(&tmp, out)?;
        Ok(())
    };
    write()
        .inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&tmp);
        })
        .with_context(|| format!("cannot export the model to {}", out.display()))
}
