//! Merging models: folding a LoRA adapter into its base, and WiSE-FT weight interpolation
//! `(1 − α)·A + α·B` of two models of the same architecture. Every output is a full model
//! directory written atomically (a temporary directory renamed into place).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};

use crate::model::lora::peft::is_adapter_dir;
use crate::model::Model;

/// Every tensor of `model` in its stored dtype on the CPU (a folded adapter included).
pub fn load_tensors(model: &Model) -> Result<BTreeMap<String, Tensor>> {
    model
        .weights
        .infos()
        .map(|info| Ok((info.name.clone(), model.weights.load_native(&info.name)?)))
        .collect()
}

/// `(1 − alpha)·a + alpha·b` for every tensor, computed in f32 and cast back to the stored
/// dtype. At `alpha` 0 the result is `a` and at 1 it is `b`, bit for bit. Tensors whose names,
/// shapes or dtypes differ are an error naming them; non-float tensors must be equal.
pub fn interpolate(
    a: &BTreeMap<String, Tensor>,
    b: &BTreeMap<String, Tensor>,
    alpha: f64,
) -> Result<BTreeMap<String, Tensor>> {
    if !alpha.is_finite() {
        bail!("alpha must be a finite number, got {alpha}");
    }
    let only_a: Vec<&str> = a
        .keys()
        .filter(|k| !b.contains_key(*k))
        .map(String::as_str)
        .collect();
    let only_b: Vec<&str> = b
        .keys()
        .filter(|k| !a.contains_key(*k))
        .map(String::as_str)
        .collect();
    if !only_a.is_empty() || !only_b.is_empty() {
        bail!(
            "the two models hold different tensors: only in A: [{}]; only in B: [{}]",
            only_a.join(", "),
            only_b.join(", ")
        );
    }
    let mut out = BTreeMap::new();
    for (name, ta) in a {
        let tb = &b[name];
        if ta.dims() != tb.dims() {
            bail!(
                "tensor {name} has shape {:?} in A but {:?} in B",
                ta.dims(),
                tb.dims()
            );
        }
        if ta.dtype() != tb.dtype() {
            bail!(
                "tensor {name} is {:?} in A but {:?} in B; convert one model first",
                ta.dtype(),
                tb.dtype()
            );
        }
        let value = if ta.dtype().is_float() {
            blend(ta, tb, alpha)?
        } else if tensors_equal(ta, tb)? {
            ta.clone()
        } else {
            bail!("tensor {name} is not a float tensor and differs between A and B");
        };
        out.insert(name.clone(), value);
    }
    Ok(out)
}

/// `(1 − alpha)·a + alpha·b` of two float tensors of one shape and dtype, computed in f32 and
/// cast back: `a` itself at α 0 and `b` itself at α 1, bit for bit.
pub fn blend(a: &Tensor, b: &Tensor, alpha: f64) -> Result<Tensor> {
    if a.dims() != b.dims() {
        bail!("shapes differ: {:?} and {:?}", a.dims(), b.dims());
    }
    if alpha == 0.0 {
        return Ok(a.clone());
    }
    if alpha == 1.0 {
        return Ok(b.clone());
    }
    let (fa, fb) = (a.to_dtype(DType::F32)?, b.to_dtype(DType::F32)?);
    Ok(((fa * (1.0 - alpha))? + (fb * alpha)?)?.to_dtype(a.dtype())?)
}

fn tensors_equal(a: &Tensor, b: &Tensor) -> Result<bool> {
    let a = a.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let b = b.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    Ok(a == b)
}

/// A model named on the command line: a model directory or hub id, a PEFT adapter directory,
/// or a run directory (its `final/`).
pub fn resolve_spec(spec: &str) -> PathBuf {
    let path = Path::new(spec);
    let fin = path.join("final");
    if path.join("status.json").is_file() && fin.is_dir() {
        return fin;
    }
    path.to_path_buf()
}

/// Opens `spec` (see [`resolve_spec`]); an adapter is folded into `base` or its own base.
pub fn open(spec: &str, base: Option<&str>) -> Result<Model> {
    let path = resolve_spec(spec);
    if is_adapter_dir(&path) {
        return Model::open_adapter(&path, base);
    }
    if base.is_some() {
        bail!("--base applies to a LoRA adapter, but {spec} is a full model");
    }
    Model::open(&path.to_string_lossy())
}

/// Writes `model` with `tensors` replacing its own into `out` (config, tokenizer and chat
/// template files copied from the model's directory), atomically.
pub fn write_model(model: &Model, tensors: &BTreeMap<String, Tensor>, out: &Path) -> Result<()> {
    // Non-float tensors are equal in both models (checked) and copied from the files.
    let replaced: HashMap<String, Tensor> = tensors
        .iter()
        .filter(|(_, t)| t.dtype().is_float())
        .map(|(n, t)| (n.clone(), t.clone()))
        .collect();
    crate::run::export_model(model, &replaced, out)
}

/// Folds the adapter `spec` (a PEFT adapter directory or a LoRA run) into its base (or `base`)
/// and writes the full model to `out`.
pub fn fold_to(spec: &str, base: Option<&str>, out: &Path) -> Result<Model> {
    let path = resolve_spec(spec);
    if !is_adapter_dir(&path) {
        bail!(
            "{} is not a LoRA adapter (no adapter_config.json); to interpolate two models give both and --alpha",
            path.display()
        );
    }
    let model = Model::open_adapter(&path, base)?;
    let folded: BTreeMap<String, Tensor> = model
        .weights
        .overridden()
        .map(|n| Ok((n.to_string(), model.weights.load_native(n)?)))
        .collect::<Result<_>>()?;
    write_model(&model, &folded, out)?;
    Ok(model)
}

/// Writes `(1 − alpha)·A + alpha·B` to `out`, with A's config and tokenizer files.
pub fn interpolate_to(a: &str, b: &str, alpha: f64, out: &Path) -> Result<()> {
    let model_a = open(a, None)?;
    let model_b = open(b, None)?;
    if model_a.config.architecture != model_b.config.architecture {
        bail!(
            "A is {:?} but B is {:?}: only models of one architecture interpolate",
            model_a.config.architecture,
            model_b.config.architecture
        );
    }
    let ta = load_tensors(&model_a).with_context(|| format!("reading {a}"))?;
    let tb = load_tensors(&model_b).with_context(|| format!("reading {b}"))?;
    let merged = interpolate(&ta, &tb, alpha)?;
    write_model(&model_a, &merged, out)
}
