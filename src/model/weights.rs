//! Memory-mapped safetensors weights (single file or shards), indexed by tensor name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

/// Shape and storage type of one tensor in the weight files.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub shape: Vec<usize>,
    /// Storage dtype as written in the file (`F32`, `BF16`, ...).
    pub dtype: String,
    /// Index into [`WeightStore::files`].
    pub file: usize,
}

impl TensorInfo {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// All tensors of a model's weight files, memory-mapped.
pub struct WeightStore {
    files: Vec<PathBuf>,
    maps: Vec<MmapedSafetensors>,
    infos: BTreeMap<String, TensorInfo>,
    /// Tensors that replace the files' values (a folded LoRA adapter), in the file's dtype.
    overrides: BTreeMap<String, Tensor>,
}

impl WeightStore {
    /// Memory-maps every file and reads the headers; a corrupt file is named in the error.
    pub fn open(files: &[PathBuf]) -> Result<Self> {
        let mut maps = Vec::with_capacity(files.len());
        let mut infos = BTreeMap::new();
        for (index, path) in files.iter().enumerate() {
            // SAFETY: the file is mapped read-only; tunescope never writes to a file it has mapped
            // (exports go to a temporary file renamed into place).
            let map = unsafe { MmapedSafetensors::new(path) }.map_err(|e| {
                anyhow::anyhow!(
                    "{} is not a valid safetensors file ({e}); re-download or re-export it",
                    path.display()
                )
            })?;
            for (name, view) in map.tensors() {
                let info = TensorInfo {
                    name: name.clone(),
                    shape: view.shape().to_vec(),
                    dtype: format!("{:?}", view.dtype()),
                    file: index,
                };
                if let Some(previous) = infos.insert(name.clone(), info) {
                    bail!(
                        "tensor {name} appears in both {} and {}",
                        files[previous.file].display(),
                        path.display()
                    );
                }
            }
            maps.push(map);
        }
        Ok(Self {
            files: files.to_vec(),
            maps,
            infos,
            overrides: BTreeMap::new(),
        })
    }

    /// The weight files, in index order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Every tensor, sorted by name.
    pub fn infos(&self) -> impl Iterator<Item = &TensorInfo> {
        self.infos.values()
    }

    /// Looks up one tensor's header.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.infos.get(name)
    }

    /// Describes where tensors live, for error messages.
    pub fn location(&self) -> String {
        match self.files.as_slice() {
            [one] => one.display().to_string(),
            many => format!(
                "{} shards in {}",
                many.len(),
                many[0].parent().unwrap_or(Path::new(".")).display()
            ),
        }
    }

    /// Replaces the value of an existing tensor of the same shape (the weights stay mapped;
    /// every later [`WeightStore::load`] sees `value`).
    pub fn set_override(&mut self, name: &str, value: Tensor) -> Result<()> {
        let info = self.infos.get(name).with_context(|| {
            format!(
                "cannot replace tensor {name}: it is not in {}",
                self.location()
            )
        })?;
        if info.shape != value.dims() {
            bail!(
                "cannot replace tensor {name} of shape {:?} by one of shape {:?}",
                info.shape,
                value.dims()
            );
        }
        self.overrides.insert(name.to_string(), value);
        Ok(())
    }

    /// Names of the tensors replaced in memory (see [`WeightStore::set_override`]).
    pub fn overridden(&self) -> impl Iterator<Item = &str> {
        self.overrides.keys().map(String::as_str)
    }

    /// Loads a tensor in its stored dtype on the CPU (overrides included).
    pub fn load_native(&self, name: &str) -> Result<Tensor> {
        if let Some(t) = self.overrides.get(name) {
            return Ok(t.clone());
        }
        let info = self
            .infos
            .get(name)
            .with_context(|| format!("tensor {name} is missing from {}", self.location()))?;
        self.maps[info.file]
            .load(name, &Device::Cpu)
            .with_context(|| {
                format!(
                    "cannot read tensor {name} from {}",
                    self.files[info.file].display()
                )
            })
    }

    /// Loads a tensor, checking its shape, converted to `dtype` on `device`.
    pub fn load(
        &self,
        name: &str,
        shape: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let info = self.infos.get(name).with_context(|| {
            format!(
                "tensor {name} (expected shape {shape:?}) is missing from {}; the weights do not match config.json",
                self.location()
            )
        })?;
        if info.shape != shape {
            bail!(
                "tensor {name} in {} has shape {:?} but config.json implies {shape:?}",
                self.files[info.file].display(),
                info.shape
            );
        }
        if let Some(t) = self.overrides.get(name) {
            return Ok(t.to_dtype(dtype)?.to_device(device)?);
        }
        let tensor = self.maps[info.file]
            .load(name, device)
            .and_then(|t| t.to_dtype(dtype))
            .with_context(|| {
                format!(
                    "cannot read tensor {name} from {}",
                    self.files[info.file].display()
                )
            })?;
        Ok(tensor)
    }
}

/// The candle dtype of a safetensors dtype name (floats only).
pub fn file_dtype(name: &str) -> Option<DType> {
    match name {
        "F32" => Some(DType::F32),
        "F16" => Some(DType::F16),
        "BF16" => Some(DType::BF16),
        "F64" => Some(DType::F64),
        _ => None,
    }
}
