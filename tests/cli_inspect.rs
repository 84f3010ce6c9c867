//! The real binary: `make-tiny` then `inspect`, in text and JSON.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use candle_core::Device;

fn tunescope(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tunescope"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("the tunescope binary runs")
}

fn ok_stdout(args: &[&str]) -> String {
    let out = tunescope(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tunescope {args:?} failed: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    String::from_utf8(out.stdout).unwrap()
}

fn make_tiny(arch: &str, dir: &Path) {
    let stdout = ok_stdout(&["make-tiny", "--arch", arch, "--out", dir.to_str().unwrap()]);
    assert!(stdout.contains(arch), "{stdout}");
    assert!(dir.join("model.safetensors").is_file());
}

/// Element counts of every tensor in the model's single weight file, by name.
fn numels(dir: &Path) -> BTreeMap<String, usize> {
    candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|(name, t)| (name, t.elem_count()))
        .collect()
}

/// `1234567` as `1,234,567`, written independently of the crate's helper.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut groups: Vec<&str> = Vec::new();
    let mut end = digits.len();
    while end > 3 {
        groups.push(&digits[end - 3..end]);
        end -= 3;
    }
    groups.push(&digits[..end]);
    groups.reverse();
    groups.join(",")
}

const PROJECTIONS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

#[test]
fn thousands_helper() {
    assert_eq!(thousands(7), "7");
    assert_eq!(thousands(999), "999");
    assert_eq!(thousands(1000), "1,000");
    assert_eq!(thousands(107_072), "107,072");
    assert_eq!(thousands(1_234_567), "1,234,567");
}

#[test]
fn qwen2_inspect_text_and_json() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("qwen");
    make_tiny("qwen2", &dir);
    let dir_s = dir.to_str().unwrap();
    let sizes = numels(&dir);
    let total: usize = sizes.values().sum();
    assert!(total >= 1000, "grouping should matter for the tiny model");

    // --- text ---
    let text = ok_stdout(&["inspect", dir_s]);
    for proj in PROJECTIONS {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(proj)),
            "no line for {proj} in:\n{text}"
        );
    }
    let first = text.lines().next().unwrap();
    let expected = format!("{} parameters", thousands(total));
    assert!(
        first.contains(&expected),
        "expected `{expected}` in `{first}`"
    );
    assert!(
        first.contains(&format!("in {} tensors", sizes.len())),
        "{first}"
    );
    assert!(first.contains("2 layers"), "{first}");
    // qwen2: q/k/v carry biases; the head is tied, so there is no lm_head tensor.
    assert!(text.contains("bias-of-q"), "{text}");
    assert!(!text.contains("lm_head"), "{text}");

    // --- JSON ---
    let json_text = ok_stdout(&["inspect", dir_s, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json_text).expect("inspect --json is JSON");
    assert_eq!(v["total"].as_u64(), Some(total as u64));

    let q_sum: usize = sizes
        .iter()
        .filter(|(name, _)| name.contains(".self_attn.q_proj."))
        .map(|(_, n)| n)
        .sum();
    let q_bias: usize = sizes
        .iter()
        .filter(|(name, _)| name.ends_with("q_proj.bias"))
        .map(|(_, n)| n)
        .sum();
    assert!(q_bias > 0, "qwen2 q_proj biases are present");
    assert_eq!(v["totals_by_kind"]["q"].as_u64(), Some(q_sum as u64));
    let kinds_sum: u64 = v["totals_by_kind"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(kinds_sum, total as u64);

    let by_layer = v["totals_by_layer"]
        .as_object()
        .expect("totals_by_layer object");
    assert_eq!(by_layer.len(), 2, "{by_layer:?}");
    for layer in 0..2 {
        let prefix = format!("model.layers.{layer}.");
        let expected: usize = sizes
            .iter()
            .filter(|(name, _)| name.starts_with(&prefix))
            .map(|(_, n)| n)
            .sum();
        assert!(expected > 0);
        assert_eq!(
            by_layer[&layer.to_string()].as_u64(),
            Some(expected as u64),
            "layer {layer}"
        );
    }

    assert_eq!(v["tree"]["numel"].as_u64(), Some(total as u64));
    assert_eq!(v["tree"]["param_count"].as_u64(), Some(sizes.len() as u64));
    assert_eq!(v["params"].as_array().unwrap().len(), sizes.len());
    assert_eq!(v["config"]["architecture"], "qwen2");
}

#[test]
fn llama_inspect_shows_untied_head_and_no_biases() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("llama");
    make_tiny("llama", &dir);
    let sizes = numels(&dir);
    assert!(sizes.contains_key("lm_head.weight"));
    let total: usize = sizes.values().sum();

    let full = ok_stdout(&["inspect", dir.to_str().unwrap()]);
    // The module map, before the config section (which names `attention_bias`).
    let text = full.split("\nconfig (").next().unwrap();
    assert!(
        text.lines().any(|l| l.trim_start().starts_with("lm_head")),
        "no lm_head line in:\n{text}"
    );
    assert!(
        !text.contains("bias"),
        "llama tiny model has no biases:\n{text}"
    );
    for proj in PROJECTIONS {
        assert!(text.contains(proj), "no {proj} in:\n{text}");
    }
    let expected = format!("{} parameters", thousands(total));
    assert!(text.lines().next().unwrap().contains(&expected), "{text}");
}

#[test]
fn inspect_nonexistent_fails_cleanly() {
    let out = tunescope(&["inspect", "/nonexistent"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_ne!(
        out.status.code(),
        Some(101),
        "exit code 101 means a panic: {stderr}"
    );
    assert!(stderr.contains("error"), "{stderr}");
    assert!(stderr.contains("/nonexistent"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.stdout.is_empty());
}

/// `inspect` shows where each config value came from: a transformers 5 config's rope base from
/// `rope_parameters`, defaults marked, the chat template's file, and unknown keys as warnings.
#[test]
fn inspect_shows_value_sources_defaults_and_unknown_keys() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/conformance");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixtures.join("models/llama/model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let mut config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures.join("models/llama/config.json")).unwrap(),
    )
    .unwrap();
    config.as_object_mut().unwrap().remove("rms_norm_eps");
    config["made_up_key"] = serde_json::json!(7);
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    for name in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(fixtures.join("tokenizer").join(name), dir.path().join(name)).unwrap();
    }
    std::fs::write(
        dir.path().join("chat_template.jinja"),
        "{{ messages[0].content }}",
    )
    .unwrap();
    let out = tunescope(&["inspect", dir.path().to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start_matches([' ', '*']).starts_with(name))
            .unwrap_or_else(|| panic!("no `{name}` line in:\n{stdout}"))
            .to_string()
    };
    let theta = line("rope theta");
    assert!(
        theta.contains("100000") && theta.contains("rope_parameters.rope_theta"),
        "{theta}"
    );
    let eps = line("rms_norm_eps");
    assert!(
        eps.starts_with(" *") && eps.contains("default of transformers' LlamaConfig"),
        "{eps}"
    );
    assert!(line("saved dtype").contains("`dtype`"));
    assert!(line("chat template").contains("chat_template.jinja"));
    assert!(
        stdout.contains("warning: config.json key `made_up_key` is unknown"),
        "{stdout}"
    );
    assert!(
        stderr.contains("made_up_key"),
        "the warning is logged too: {stderr}"
    );
}

/// `make-tiny` writes every family; each opens with no unknown key, Gemma 2 with its softcaps.
#[test]
fn make_tiny_writes_every_family() {
    let tmp = tempfile::tempdir().unwrap();
    for arch in [
        "llama",
        "qwen2",
        "qwen3",
        "smollm3",
        "gemma2",
        "gemma3",
        "phi3",
        "llava",
        "llava-next",
        "llava-onevision",
        "qwen2_5_vl",
    ] {
        let dir = tmp.path().join(arch);
        make_tiny(arch, &dir);
        let out = tunescope(&["inspect", dir.to_str().unwrap()]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{arch}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!stdout.contains("warning:"), "{arch}: {stdout}");
        if arch == "gemma2" {
            assert!(
                stdout.contains("attn_logit_softcapping") && stdout.contains("config (gemma2)"),
                "{stdout}"
            );
        }
        if arch.starts_with("llava") || arch.starts_with("qwen2_5") {
            assert!(stdout.contains("tensor layout"), "{arch}: {stdout}");
        }
        if arch == "llava-onevision" {
            assert!(stdout.contains("config (qwen2)"), "{stdout}");
        }
    }
}
