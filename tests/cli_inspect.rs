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

    let text = ok_stdout(&["inspect", dir.to_str().unwrap()]);
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
