//! Reading a PEFT adapter from disk and folding it into the base weights.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};

use super::{parse_config, AdapterConfig, CONFIG_FILE, PREFIX, WEIGHTS_FILE};
use crate::model::weights::WeightStore;

/// An adapter read from disk: its config and each module's `(A, B)` in f32 on the CPU.
#[derive(Debug, Clone)]
pub struct LoadedAdapter {
    pub dir: PathBuf,
    pub config: AdapterConfig,
    pub modules: BTreeMap<String, (Tensor, Tensor)>,
}

/// Reads the adapter in `dir`; tensors other than LoRA `A`/`B` pairs are refused by name.
pub fn read_adapter(dir: &Path) -> Result<LoadedAdapter> {
    let config_path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("cannot read {}", config_path.display()))?;
    let config = parse_config(&text, &config_path.display().to_string())?;
    let weights = dir.join(WEIGHTS_FILE);
    if !weights.is_file() {
        bail!(
            "{} is missing (tunescope reads safetensors adapters only)",
            weights.display()
        );
    }
    let tensors = candle_core::safetensors::load(&weights, &Device::Cpu)
        .with_context(|| format!("{} is not a valid safetensors file", weights.display()))?;
    let mut halves: BTreeMap<String, (Option<Tensor>, Option<Tensor>)> = BTreeMap::new();
    for (name, t) in tensors {
        let bare = name.strip_prefix(PREFIX).unwrap_or(&name);
        let (module, a) = if let Some(m) = bare.strip_suffix(".lora_A.weight") {
            (m, true)
        } else if let Some(m) = bare.strip_suffix(".lora_B.weight") {
            (m, false)
        } else {
            bail!(
                "{}: tensor {name} is not a LoRA A/B weight; only plain LoRA adapters are supported",
                weights.display()
            );
        };
        let slot = halves.entry(module.to_string()).or_default();
        let t = t.to_dtype(DType::F32)?;
        if a {
            slot.0 = Some(t);
        } else {
            slot.1 = Some(t);
        }
    }
    let r = config.settings.r;
    let mut modules = BTreeMap::new();
    for (module, pair) in halves {
        let (Some(a), Some(b)) = pair else {
            bail!(
                "{}: module {module} lacks its lora_A or lora_B tensor",
                weights.display()
            );
        };
        if a.dim(0)? != r || b.dim(1)? != r {
            bail!(
                "{}: {module} has A {:?} and B {:?}, which do not match r = {r}",
                weights.display(),
                a.dims(),
                b.dims()
            );
        }
        if !config.target_modules.matches(&module)? {
            bail!(
                "{}: module {module} has adapter tensors but target_modules does not name it",
                weights.display()
            );
        }
        modules.insert(module, (a, b));
    }
    if modules.is_empty() {
        bail!("{} holds no adapter tensors", weights.display());
    }
    Ok(LoadedAdapter {
        dir: dir.to_path_buf(),
        config,
        modules,
    })
}

/// The folded weights `W + scale·B·A` of every adapted module, computed in f32 and cast back
/// to the dtype `W` has in `store`, by tensor name.
pub fn fold(store: &WeightStore, adapter: &LoadedAdapter) -> Result<BTreeMap<String, Tensor>> {
    let scale = adapter.config.settings.scale();
    let mut out = BTreeMap::new();
    for (module, (a, b)) in &adapter.modules {
        let name = format!("{module}.weight");
        let info = store.info(&name).with_context(|| {
            format!(
                "the adapter in {} adapts {module} but the base model has no tensor {name}",
                adapter.dir.display()
            )
        })?;
        let expected = [b.dim(0)?, a.dim(1)?];
        if info.shape != expected {
            bail!(
                "adapter module {module} is {expected:?} (out, in) but the base's {name} is {:?}",
                info.shape
            );
        }
        let dtype = crate::model::weights::file_dtype(&info.dtype)
            .with_context(|| format!("{name} is stored as {}, not a float", info.dtype))?;
        let w = store.load(&name, &info.shape, DType::F32, &Device::Cpu)?;
        let folded = (w + (b.matmul(a)? * scale)?)?.to_dtype(dtype)?;
        out.insert(name, folded);
    }
    Ok(out)
}
