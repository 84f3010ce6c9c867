//! Where a model's files come from: a local directory in Hugging Face layout, or a hub id
//! resolved through the local Hugging Face cache (downloading when the network allows).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use hf_hub::{Cache, Repo, RepoType};

use super::progress::{download_progress, fetch, DownloadProgress, FileFetcher, Reporter};

/// The files of one model, all checked to exist.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// Directory holding the files (a snapshot folder for hub models).
    pub dir: PathBuf,
    pub config: PathBuf,
    /// Safetensors files, one or several shards.
    pub weights: Vec<PathBuf>,
    /// `model.safetensors.index.json` when the weights are sharded.
    pub weight_index: Option<PathBuf>,
    pub tokenizer: PathBuf,
    pub tokenizer_config: Option<PathBuf>,
    pub generation_config: Option<PathBuf>,
    /// `preprocessor_config.json` (image preprocessing of vision-language models).
    pub preprocessor_config: Option<PathBuf>,
}

const WEIGHTS_SINGLE: &str = "model.safetensors";
const WEIGHTS_INDEX: &str = "model.safetensors.index.json";

/// Resolves a model name: an existing directory, else a hub id `org/name[@revision]`.
pub fn resolve(spec: &str) -> Result<ModelFiles> {
    let path = Path::new(spec);
    if path.is_dir() {
        return from_dir(path);
    }
    if looks_like_hub_id(spec) {
        return from_hub(spec).with_context(|| {
            format!("`{spec}` is not a directory here, so it was looked up as a hub id")
        });
    }
    bail!("model `{spec}` is neither a directory nor a hub id of the form org/name[@revision]")
}

fn looks_like_hub_id(spec: &str) -> bool {
    let id = spec.split('@').next().unwrap_or(spec);
    let parts: Vec<&str> = id.split('/').collect();
    parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
}

/// Collects the model files found in a directory in Hugging Face layout.
pub fn from_dir(dir: &Path) -> Result<ModelFiles> {
    let config = dir.join("config.json");
    if !config.is_file() {
        bail!(
            "{} is missing: a model directory needs config.json, model.safetensors (or {WEIGHTS_INDEX}) and tokenizer.json",
            config.display()
        );
    }
    let single = dir.join(WEIGHTS_SINGLE);
    let index = dir.join(WEIGHTS_INDEX);
    let (weights, weight_index) = if index.is_file() {
        (shard_files(&index, dir)?, Some(index))
    } else if single.is_file() {
        (vec![single], None)
    } else {
        bail!(
            "no weights in {}: expected {WEIGHTS_SINGLE} or {WEIGHTS_INDEX}",
            dir.display()
        );
    };
    let tokenizer = dir.join("tokenizer.json");
    if !tokenizer.is_file() {
        bail!(
            "{} is missing: tunescope needs the fast tokenizer file (tokenizer.json)",
            tokenizer.display()
        );
    }
    let optional = |name: &str| Some(dir.join(name)).filter(|p| p.is_file());
    Ok(ModelFiles {
        dir: dir.to_path_buf(),
        config,
        weights,
        weight_index,
        tokenizer,
        tokenizer_config: optional("tokenizer_config.json"),
        generation_config: optional("generation_config.json"),
        preprocessor_config: optional("preprocessor_config.json"),
    })
}

/// Reads the shard file names out of a safetensors index and checks that each exists.
fn shard_files(index: &Path, dir: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index)
        .with_context(|| format!("cannot read {}", index.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", index.display()))?;
    let map = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .with_context(|| format!("{} has no `weight_map` object", index.display()))?;
    let mut files: Vec<String> = map
        .values()
        .map(|v| {
            v.as_str().map(str::to_string).with_context(|| {
                format!("{}: weight_map values must be file names", index.display())
            })
        })
        .collect::<Result<_>>()?;
    files.sort();
    files.dedup();
    if files.is_empty() {
        bail!("{} lists no weight files", index.display());
    }
    files
        .into_iter()
        .map(|name| {
            let path = dir.join(&name);
            if path.is_file() {
                Ok(path)
            } else {
                bail!("shard {name} named in {} is missing", index.display())
            }
        })
        .collect()
}

/// The hub cache directory: `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn hub_cache_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("HF_HUB_CACHE") {
        return PathBuf::from(dir);
    }
    Cache::from_env().path().clone()
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| matches!(v.trim(), "1" | "true" | "TRUE" | "yes" | "ON" | "on"))
        .unwrap_or(false)
}

/// Resolves `org/name[@revision]` in the local cache, downloading missing files unless offline.
pub fn from_hub(spec: &str) -> Result<ModelFiles> {
    let (id, revision) = match spec.split_once('@') {
        Some((id, rev)) => (id.to_string(), rev.to_string()),
        None => (spec.to_string(), "main".to_string()),
    };
    let cache_dir = hub_cache_dir();
    let repo = Repo::with_revision(id.clone(), RepoType::Model, revision.clone());
    let cached = CachedRepo::new(&cache_dir, &repo);
    if let Some(dir) = cached.snapshot_dir() {
        if dir.join("config.json").is_file() {
            if let Ok(files) = from_dir(&dir) {
                return Ok(files);
            }
        }
    }
    if offline() {
        bail!(
            "model {id}@{revision} is not complete in the Hugging Face cache {} and HF_HUB_OFFLINE is set; \
             download it first or point at a directory",
            cache_dir.display()
        );
    }
    download(&cache_dir, repo).with_context(|| {
        format!(
            "model {id}@{revision} is not in the Hugging Face cache {} and could not be downloaded",
            cache_dir.display()
        )
    })
}

/// The cache folder of one repository at one revision.
struct CachedRepo {
    folder: PathBuf,
    revision: String,
}

impl CachedRepo {
    fn new(cache_dir: &Path, repo: &Repo) -> Self {
        Self {
            folder: cache_dir.join(repo.folder_name()),
            revision: repo.revision().to_string(),
        }
    }

    /// The snapshot folder for the revision: via `refs/<rev>`, or the revision as a commit hash.
    fn snapshot_dir(&self) -> Option<PathBuf> {
        let by_ref = std::fs::read_to_string(self.folder.join("refs").join(&self.revision))
            .ok()
            .map(|commit| self.folder.join("snapshots").join(commit.trim()));
        let by_hash = Some(self.folder.join("snapshots").join(&self.revision));
        [by_ref, by_hash].into_iter().flatten().find(|p| p.is_dir())
    }
}

fn download(cache_dir: &Path, repo: Repo) -> Result<ModelFiles> {
    let api = hf_hub::api::sync::ApiBuilder::from_cache(Cache::new(cache_dir.to_path_buf()))
        .with_progress(false)
        .build()?;
    let hub = HubFiles {
        cache: Cache::new(cache_dir.to_path_buf()).repo(repo.clone()),
        api: api.repo(repo),
    };
    download_files(&hub, &download_progress())
}

/// A hub repository's files through hf-hub: its cache, else a download.
struct HubFiles {
    cache: hf_hub::CacheRepo,
    api: hf_hub::api::sync::ApiRepo,
}

impl FileFetcher for HubFiles {
    fn cached(&self, name: &str) -> Option<PathBuf> {
        self.cache.get(name)
    }

    fn download(&self, name: &str, progress: Reporter) -> Result<PathBuf> {
        Ok(self.api.download_with_progress(name, progress)?)
    }
}

/// Gets a model's files (config, weights, tokenizer, then the optional ones) from `fetcher`,
/// reporting each download to `sink`.
pub fn download_files(
    fetcher: &dyn FileFetcher,
    sink: &Option<Arc<dyn DownloadProgress>>,
) -> Result<ModelFiles> {
    let config = fetch(fetcher, "config.json", sink)?;
    let dir = config
        .parent()
        .context("downloaded config.json has no parent folder")?
        .to_path_buf();
    match fetch(fetcher, WEIGHTS_INDEX, sink) {
        Ok(index) => {
            for shard in shard_names(&index)? {
                fetch(fetcher, &shard, sink)?;
            }
        }
        Err(_) => {
            fetch(fetcher, WEIGHTS_SINGLE, sink)?;
        }
    }
    fetch(fetcher, "tokenizer.json", sink)?;
    for optional in [
        "tokenizer_config.json",
        super::chat_template::TEMPLATE_FILE,
        super::chat_template::PROCESSOR_TEMPLATE_FILE,
        "generation_config.json",
        "preprocessor_config.json",
    ] {
        let _ = fetch(fetcher, optional, sink);
    }
    from_dir(&dir)
}

fn shard_names(index: &Path) -> Result<Vec<String>> {
    let value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(index)?)?;
    let mut names: Vec<String> = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .map(|m| {
            m.values()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names.dedup();
    Ok(names)
}
