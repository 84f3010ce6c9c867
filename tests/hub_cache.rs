//! Hub ids resolve through a fake Hugging Face cache, offline.

use std::path::{Path, PathBuf};

use tunescope::model::source::{hub_cache_dir, resolve};
use tunescope::model::tiny::{make_tiny, TinySpec};
use tunescope::model::{Architecture, Model};

const REV: &str = "0123456789abcdef0123456789abcdef01234567";

/// Lays out `<cache>/models--org--<name>/snapshots/<REV>/` with the tiny model's files and
/// `refs/main` pointing at it; returns the snapshot dir.
fn fake_cache(cache: &Path, name: &str, model: &Path) -> PathBuf {
    let repo = cache.join(format!("models--org--{name}"));
    let snapshot = repo.join("snapshots").join(REV);
    std::fs::create_dir_all(&snapshot).unwrap();
    for entry in std::fs::read_dir(model).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), snapshot.join(entry.file_name())).unwrap();
        }
    }
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs").join("main"), REV).unwrap();
    snapshot
}

fn set(key: &str, value: impl AsRef<std::ffi::OsStr>) {
    // Every env-dependent check runs in the single test below, so nothing races on the env.
    std::env::set_var(key, value);
}

fn unset(key: &str) {
    std::env::remove_var(key);
}

fn err_text<T>(result: anyhow::Result<T>) -> String {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(err) => format!("{err:#}"),
    }
}

#[test]
fn resolves_through_fake_hub_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = tmp.path().join("tiny");
    make_tiny(&TinySpec::new(Architecture::Qwen2, 3), &model_dir).unwrap();

    // Offline first, so no lookup below can reach for the network.
    set("HF_HUB_OFFLINE", "1");

    // --- HF_HUB_CACHE ---
    let cache = tmp.path().join("cache");
    let snapshot = fake_cache(&cache, "tiny", &model_dir);
    set("HF_HUB_CACHE", &cache);
    unset("HF_HOME");
    assert_eq!(hub_cache_dir(), cache);

    let files = resolve("org/tiny").unwrap();
    assert_eq!(files.dir, snapshot);
    assert_eq!(files.config, snapshot.join("config.json"));
    assert_eq!(files.weights, vec![snapshot.join("model.safetensors")]);
    assert_eq!(files.tokenizer, snapshot.join("tokenizer.json"));
    assert_eq!(
        files.tokenizer_config,
        Some(snapshot.join("tokenizer_config.json"))
    );

    // A commit hash as revision finds the snapshot directly.
    let files = resolve(&format!("org/tiny@{REV}")).unwrap();
    assert_eq!(files.dir, snapshot);

    // A named ref (with a trailing newline, as some tools write it) is followed too.
    std::fs::write(cache.join("models--org--tiny/refs/v1"), format!("{REV}\n")).unwrap();
    let files = resolve("org/tiny@v1").unwrap();
    assert_eq!(files.dir, snapshot);

    // An unknown revision of a cached repo is not silently replaced by main.
    let msg = err_text(resolve("org/tiny@nosuchbranch"));
    assert!(msg.contains("HF_HUB_OFFLINE"), "{msg}");
    assert!(msg.contains("nosuchbranch"), "{msg}");

    let model = Model::open("org/tiny").unwrap();
    assert_eq!(model.files.dir, snapshot);
    assert_eq!(model.config.architecture, Architecture::Qwen2);
    assert_eq!(model.config.num_hidden_layers, 2);
    assert!(model.weights.info("model.embed_tokens.weight").is_some());

    // A repo that is not in the cache, offline: the error names the switch and the cache.
    let msg = err_text(resolve("org/absent"));
    assert!(msg.contains("HF_HUB_OFFLINE"), "{msg}");
    assert!(msg.contains(cache.to_str().unwrap()), "{msg}");
    assert!(msg.contains("org/absent"), "{msg}");
    let msg = err_text(Model::open("org/absent"));
    assert!(msg.contains("HF_HUB_OFFLINE"), "{msg}");

    // A snapshot folder without the model's files is incomplete, not a model.
    let broken = cache.join("models--org--broken");
    std::fs::create_dir_all(broken.join("snapshots").join(REV)).unwrap();
    std::fs::create_dir_all(broken.join("refs")).unwrap();
    std::fs::write(broken.join("refs/main"), REV).unwrap();
    let msg = err_text(resolve("org/broken"));
    assert!(msg.contains("HF_HUB_OFFLINE"), "{msg}");

    // --- HF_HOME (cache at <home>/hub) when HF_HUB_CACHE is unset ---
    let home = tmp.path().join("home");
    let home_snapshot = fake_cache(&home.join("hub"), "other", &model_dir);
    unset("HF_HUB_CACHE");
    set("HF_HOME", &home);
    assert_eq!(hub_cache_dir(), home.join("hub"));

    let files = resolve("org/other").unwrap();
    assert_eq!(files.dir, home_snapshot);
    let model = Model::open(&format!("org/other@{REV}")).unwrap();
    assert_eq!(model.files.dir, home_snapshot);

    // `org/tiny` lives only in the HF_HUB_CACHE folder, which no longer applies.
    let msg = err_text(resolve("org/tiny"));
    assert!(msg.contains("HF_HUB_OFFLINE"), "{msg}");
    assert!(msg.contains(home.join("hub").to_str().unwrap()), "{msg}");

    // HF_HUB_CACHE wins over HF_HOME when both are set.
    set("HF_HUB_CACHE", &cache);
    assert_eq!(hub_cache_dir(), cache);
    assert_eq!(resolve("org/tiny").unwrap().dir, snapshot);
    assert!(resolve("org/other").is_err());

    unset("HF_HUB_CACHE");
    unset("HF_HOME");
    unset("HF_HUB_OFFLINE");
}
