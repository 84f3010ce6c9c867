//! `tunescope bench` on a tiny model: the work count, one recipe in-process, and the command
//! running each recipe in its own child process (table and JSON).

mod common;

use std::process::Command;

use common::TinyModel;
use tunescope::bench::{self, BenchConfig, MatmulParams};
use tunescope::model::{Architecture, Model};

fn small_config(model: &str) -> BenchConfig {
    BenchConfig {
        batch: 2,
        seq: 12,
        steps: 2,
        warmup: 1,
        probe_prompts: 2,
        probe_prompt_len: 5,
        probe_new_tokens: 3,
        ..BenchConfig::new(model)
    }
}

#[test]
fn matmul_counts_follow_the_recipe() {
    // Default tiny llama: 2 layers, hidden 64, 4 heads over 2 KV heads (head_dim 16),
    // MLP 128, vocabulary ~512, untied lm_head.
    let tiny = TinyModel::new(Architecture::Llama, 3);
    let model = Model::open(&tiny.spec_str()).unwrap();
    let c = &model.config;
    let map = model.module_map();
    let (h, i) = (c.hidden_size, c.intermediate_size);
    let attn = h * c.q_dim() * 2 + h * c.kv_dim() * 2;
    let mlp = 3 * h * i;
    let lm_head = c.vocab_size * h;
    let layers = c.num_hidden_layers;
    let count = |recipe: &str| {
        MatmulParams::count(c, &map, &bench::preset_selection(recipe, &map).unwrap())
    };
    let total = layers * (attn + mlp) + lm_head;

    let sa = count("sa-proj");
    assert_eq!(sa.total, total);
    assert_eq!(sa.above_lowest, total);
    assert_eq!(sa.trainable, layers * attn);

    let gate_up = count("mlp-gate-up");
    assert_eq!(gate_up.trainable, layers * 2 * h * i);

    // Untied: full-llm trains the lm_head matmul (the embedding gradient is no matmul).
    let full = count("full-llm");
    assert_eq!(full.trainable, total);
    assert_eq!(full.above_lowest, total);

    let flops = sa.flops(100);
    assert_eq!(flops.forward, 2.0 * total as f64 * 100.0);
    assert_eq!(flops.backward_weights, 2.0 * (layers * attn) as f64 * 100.0);
    assert_eq!(
        flops.total(),
        flops.forward + flops.backward_activations + flops.backward_weights
    );
}

#[test]
fn tied_embeddings_count_once_as_lm_head() {
    let tiny = TinyModel::new(Architecture::Qwen2, 4);
    let model = Model::open(&tiny.spec_str()).unwrap();
    let c = &model.config;
    assert!(c.tie_word_embeddings);
    let map = model.module_map();
    let full = MatmulParams::count(c, &map, &bench::preset_selection("full-llm", &map).unwrap());
    let mlp = MatmulParams::count(c, &map, &bench::preset_selection("mlp", &map).unwrap());
    assert_eq!(full.trainable, full.total);
    assert_eq!(
        mlp.trainable
            + c.num_hidden_layers * c.hidden_size * (2 * c.q_dim() + 2 * c.kv_dim())
            + c.vocab_size * c.hidden_size,
        full.total
    );
}

#[test]
fn one_recipe_in_process_reports_sane_numbers() {
    let tiny = TinyModel::new(Architecture::Qwen2, 5);
    let result = bench::run_single(&small_config(&tiny.spec_str()), "sa-proj").unwrap();
    assert_eq!(result.recipe, "sa-proj");
    assert_eq!(result.tokens_per_step, 24);
    assert!(result.times.step > 0.0);
    assert!(result.times.forward > 0.0 && result.times.backward > 0.0);
    assert!(result.times.optimizer >= 0.0);
    assert!(result.tokens_per_s > 0.0 && result.gflops_per_s > 0.0);
    assert!(result.mean_loss.is_finite() && result.mean_loss > 0.0);
    assert!(result.trainable_params > 0 && result.trainable_params < result.total_params);
    let probe = result.probe.unwrap();
    assert_eq!(probe.prompts, 2);
    assert!(probe.generated_tokens_per_s > 0.0);
    assert!(probe.decode_tokens_per_s > 0.0 && probe.decode_tokens_per_s.is_finite());
    assert!(probe.prefill_seconds > 0.0);
    if cfg!(target_os = "linux") {
        assert!(result.peak_rss_bytes.unwrap() > 1 << 20);
    }
    assert!(bench::run_single(&small_config(&tiny.spec_str()), "no-such-recipe").is_err());
}

#[test]
fn the_command_runs_each_recipe_in_a_child_and_prints_table_and_json() {
    let tiny = TinyModel::new(Architecture::Llama, 6);
    let exe = env!("CARGO_BIN_EXE_tunescope");
    let common = [
        "--batch",
        "2",
        "--seq",
        "10",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--probe-prompts",
        "2",
        "--probe-new-tokens",
        "2",
    ];
    let out = Command::new(exe)
        .args([
            "bench",
            &tiny.spec_str(),
            "--recipes",
            "sa-proj,full-llm",
            "--json",
        ])
        .args(common)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["recipe"], "sa-proj");
    assert_eq!(results[1]["recipe"], "full-llm");
    for r in results {
        assert!(r["times"]["step"].as_f64().unwrap() > 0.0);
        assert!(r["tokens_per_s"].as_f64().unwrap() > 0.0);
        assert!(r["flops_per_step"]["forward"].as_f64().unwrap() > 0.0);
    }
    // full-llm trains more than sa-proj.
    assert!(
        results[1]["trainable_params"].as_u64().unwrap()
            > results[0]["trainable_params"].as_u64().unwrap()
    );

    let out = Command::new(exe)
        .args(["bench", &tiny.spec_str(), "--recipes", "mlp", "--composed"])
        .args(common)
        .output()
        .unwrap();
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("| recipe |"), "{table}");
    assert!(table.contains("| mlp |"), "{table}");
    assert!(table.contains("composed ops"), "{table}");

    let out = Command::new(exe)
        .args(["bench", &tiny.spec_str(), "--recipes", "nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown recipe"));
}

#[test]
fn pytorch_figures_give_the_ratio_and_a_wrong_shape_is_refused() {
    let tiny = TinyModel::new(Architecture::Llama, 6);
    let exe = env!("CARGO_BIN_EXE_tunescope");
    let dir = tempfile::tempdir().unwrap();
    let figures = dir.path().join("pytorch.json");
    // A PyTorch figure for sa-proj only, as scripts/bench-pytorch.py writes them.
    std::fs::write(
        &figures,
        r#"{"torch": "2.15.0", "threads": 2, "batch": 2, "seq": 10, "steps": 2, "warmup": 1,
            "recipes": {"sa-proj": {"tokens_per_s": 10.0, "step_s": 2.0,
            "peak_rss_bytes": 1073741824, "trainable": 1}}}"#,
    )
    .unwrap();
    let args = |shape_seq: &str| {
        let mut c = Command::new(exe);
        c.args(["bench", &tiny.spec_str(), "--recipes", "sa-proj,mlp"])
            .args(["--batch", "2", "--seq", shape_seq, "--steps", "1"])
            .args(["--warmup", "0", "--probe-prompts", "0", "--pytorch"])
            .arg(&figures);
        c
    };
    let out = args("10").arg("--json").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["pytorch"]["recipes"]["sa-proj"]["tokens_per_s"],
        10.0
    );
    let ours = report["results"][0]["tokens_per_s"].as_f64().unwrap();

    let out = args("10").output().unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("against PyTorch 2.15.0"), "{table}");
    // The ratio is ours over theirs, to two decimals (the run differs from the JSON run, so
    // only the form and the unmeasured recipe are checked here).
    let row = table
        .lines()
        .find(|l| l.starts_with("| sa-proj |") && l.contains("×"))
        .unwrap_or_else(|| panic!("no ratio row: {table}"));
    assert!(row.contains("| 10 |") && row.contains("1.00 GiB"), "{row}");
    assert!(
        table.contains("| mlp |") && table.contains("not measured"),
        "{table}"
    );
    assert!(ours > 0.0);

    // Measured at another shape: refused before anything runs, naming both shapes.
    let out = args("12").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("batch 2 × seq 10") && err.contains("2 × 12"),
        "{err}"
    );
}
