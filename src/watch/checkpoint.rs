//! Checkpoint folders another trainer writes (`checkpoint-N/` in Hugging Face layout), and
//! whether one is complete. Everything here only reads: files are opened read-only and nothing
//! is created in the watched directory.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};

const WEIGHTS_SINGLE: &str = "model.safetensors";
const WEIGHTS_INDEX: &str = "model.safetensors.index.json";
/// Headers larger than this are treated as corrupt (safetensors itself caps them at 100 MB).
const MAX_HEADER: u64 = 100 * 1024 * 1024;

/// One `checkpoint-N` folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointDir {
    pub step: usize,
    pub path: PathBuf,
}

/// The weight files of a complete checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompleteCheckpoint {
    pub config: PathBuf,
    pub weights: Vec<PathBuf>,
    pub index: Option<PathBuf>,
}

/// The step of a folder named `checkpoint-N` (N without sign or leading `+`).
pub fn parse_step(name: &str) -> Option<usize> {
    let digits = name.strip_prefix("checkpoint-")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The `checkpoint-N` folders directly under `dir`, by ascending step.
pub fn scan(dir: &Path) -> Result<Vec<CheckpointDir>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list the watched directory {}", dir.display()))?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(step) = name.to_str().and_then(parse_step) else {
            continue;
        };
        if entry.path().is_dir() {
            out.push(CheckpointDir {
                step,
                path: entry.path(),
            });
        }
    }
    out.sort_by_key(|c| c.step);
    Ok(out)
}

/// Reads and checks a safetensors file's header without mapping the data: the header parses as
/// a JSON object and the file is exactly as long as its tensors say (a file still being written
/// is shorter). Returns the tensor names.
pub fn check_safetensors(path: &Path) -> Result<BTreeSet<String>> {
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = file.metadata()?.len();
    let mut size = [0u8; 8];
    file.read_exact(&mut size)
        .with_context(|| format!("{} is shorter than a safetensors header", path.display()))?;
    let header_len = u64::from_le_bytes(size);
    ensure!(
        header_len <= MAX_HEADER && 8 + header_len <= len,
        "{} has a header of {header_len} bytes but the file holds {len}",
        path.display()
    );
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header)
        .with_context(|| format!("cannot read the header of {}", path.display()))?;
    let value: serde_json::Value = serde_json::from_slice(&header)
        .with_context(|| format!("the header of {} is not valid JSON", path.display()))?;
    let Some(tensors) = value.as_object() else {
        bail!("the header of {} is not a JSON object", path.display());
    };
    let mut end = 0u64;
    let mut names = BTreeSet::new();
    for (name, info) in tensors {
        if name == "__metadata__" {
            continue;
        }
        let offsets = info
            .get("data_offsets")
            .and_then(|o| o.as_array())
            .filter(|o| o.len() == 2)
            .with_context(|| format!("{}: tensor {name} has no data_offsets", path.display()))?;
        let stop = offsets[1]
            .as_u64()
            .with_context(|| format!("{}: tensor {name} has a bad offset", path.display()))?;
        end = end.max(stop);
        names.insert(name.clone());
    }
    ensure!(
        8 + header_len + end == len,
        "{} is {len} bytes but its header describes {} (still being written?)",
        path.display(),
        8 + header_len + end
    );
    Ok(names)
}

/// Whether `dir` holds a complete checkpoint: config.json parses, and every weight file (one
/// `model.safetensors`, or the shards named by `model.safetensors.index.json`) exists with a
/// header that parses and a length that matches it. The error says what is missing.
pub fn check_complete(dir: &Path) -> Result<CompleteCheckpoint> {
    let config = dir.join("config.json");
    let text = std::fs::read(&config).with_context(|| format!("no {}", config.display()))?;
    serde_json::from_slice::<serde_json::Value>(&text)
        .with_context(|| format!("{} is not valid JSON yet", config.display()))?;
    let index = dir.join(WEIGHTS_INDEX);
    let single = dir.join(WEIGHTS_SINGLE);
    if index.is_file() {
        let value: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&index).with_context(|| format!("cannot read {}", index.display()))?,
        )
        .with_context(|| format!("{} is not valid JSON yet", index.display()))?;
        let map = value
            .get("weight_map")
            .and_then(|m| m.as_object())
            .with_context(|| format!("{} has no weight_map", index.display()))?;
        let mut shards: BTreeSet<&str> = BTreeSet::new();
        for file in map.values() {
            shards.insert(file.as_str().with_context(|| {
                format!("{}: weight_map values must be file names", index.display())
            })?);
        }
        ensure!(
            !shards.is_empty(),
            "{} lists no weight files",
            index.display()
        );
        let mut weights = Vec::new();
        let mut found: BTreeSet<String> = BTreeSet::new();
        for shard in shards {
            let path = dir.join(shard);
            ensure!(path.is_file(), "shard {} is missing", path.display());
            found.extend(check_safetensors(&path)?);
            weights.push(path);
        }
        if let Some(missing) = map.keys().find(|k| !found.contains(*k)) {
            bail!(
                "tensor {missing} named in {} is in no shard yet",
                index.display()
            );
        }
        return Ok(CompleteCheckpoint {
            config,
            weights,
            index: Some(index),
        });
    }
    ensure!(
        single.is_file(),
        "no weights in {} yet ({WEIGHTS_SINGLE} or {WEIGHTS_INDEX})",
        dir.display()
    );
    check_safetensors(&single)?;
    Ok(CompleteCheckpoint {
        config,
        weights: vec![single],
        index: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_names() {
        assert_eq!(parse_step("checkpoint-500"), Some(500));
        assert_eq!(parse_step("checkpoint-0"), Some(0));
        for bad in [
            "checkpoint-",
            "checkpoint-+5",
            "checkpoint-5a",
            "tmp-checkpoint-5",
            "ckpt-5",
        ] {
            assert_eq!(parse_step(bad), None, "{bad}");
        }
    }

    #[test]
    fn truncated_files_are_incomplete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let t =
            candle_core::Tensor::zeros((4, 4), candle_core::DType::F32, &candle_core::Device::Cpu)
                .unwrap();
        candle_core::safetensors::save(
            &std::collections::HashMap::from([("w".to_string(), t)]),
            &path,
        )
        .unwrap();
        assert_eq!(check_safetensors(&path).unwrap().len(), 1);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        assert!(check_safetensors(&path).is_err());
        std::fs::write(&path, &bytes[..5]).unwrap();
        assert!(check_safetensors(&path).is_err());
        std::fs::write(dir.path().join("config.json"), "{\"a\": ").unwrap();
        std::fs::write(&path, &bytes).unwrap();
        assert!(check_complete(dir.path()).is_err());
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        assert!(check_complete(dir.path()).is_ok());
    }
}
