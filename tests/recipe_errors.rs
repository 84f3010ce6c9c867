//! Bad recipes, bad overrides and bad data give clear errors (never panics) that name the key,
//! file or line at fault and say what would fix it — both through `Recipe::load` and through the
//! real `tunescope` binary.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::TinyModel;
use tunescope::model::Architecture;
use tunescope::recipe::Recipe;
use tunescope::run::{RunDir, RunState};

/// A recipe that trains the attention projections for two steps.
const GOOD_RECIPE: &str = "trainable: {kinds: [attn]}\nmax_steps: 2\nbatch_size: 4\n";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// `n` JSONL lines of one prompt/response pair.
fn jsonl(prompt: &str, response: &str, n: usize) -> String {
    let line = serde_json::json!({"prompt": prompt, "response": response}).to_string();
    format!("{line}\n").repeat(n)
}

/// 24 short counting examples.
fn write_data(dir: &Path) -> PathBuf {
    write(
        dir,
        "data.jsonl",
        &jsonl("how many apple : apple apple", "2", 24),
    )
}

/// The error of loading `text` as a recipe file (with `overrides`), context chain included,
/// and the path of the file it was written to.
fn load_err(text: &str, overrides: &[&str]) -> (String, String) {
    let tmp = tempfile::tempdir().unwrap();
    let path = write(tmp.path(), "recipe.yaml", text);
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    match Recipe::load(&path, &overrides) {
        Ok(recipe) => panic!("loading {text:?} with {overrides:?} should fail, got {recipe:?}"),
        Err(err) => (format!("{err:#}"), path.display().to_string()),
    }
}

fn assert_mentions(message: &str, needles: &[&str]) {
    for needle in needles {
        assert!(
            message.contains(needle),
            "expected the error to mention `{needle}`, got: {message}"
        );
    }
}

/// Output of the real binary run in `cwd`.
fn tunescope(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tunescope"))
        .args(args)
        .current_dir(cwd)
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("RUST_LOG")
        .output()
        .expect("run tunescope")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts a clean failure (exit status 1, an `error:` line, no panic); returns stderr.
fn expect_failure(out: &Output) -> String {
    let err = stderr(out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected a clean failure (exit 1), stderr: {err}"
    );
    assert!(err.contains("error: "), "no error line in: {err}");
    assert!(!err.contains("panicked"), "tunescope panicked: {err}");
    err
}

/// Asserts success; returns stderr.
fn expect_success(out: &Output) -> String {
    let err = stderr(out);
    assert!(out.status.success(), "tunescope failed: {err}");
    assert!(!err.contains("panicked"), "tunescope panicked: {err}");
    err
}

/// Run directories directly under `root` (none when `root` does not exist).
fn run_dirs(root: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(root)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// The one run directory printed on stdout by a successful `tunescope train`.
fn printed_run_dir(cwd: &Path, out: &Output) -> PathBuf {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .last()
        .expect("train prints the run directory");
    cwd.join(line.trim())
}

// ---------------------------------------------------------------------------------------------
// Unknown keys

#[test]
fn unknown_top_level_key_gives_location_and_suggestion() {
    let (err, path) = load_err("name: demo\nbatch_size: 2\noptimizr:\n  lr: 0.001\n", &[]);
    assert_mentions(
        &err,
        &[
            &format!("{path}:3:1"),
            "unknown field `optimizr`",
            "did you mean `optimizer`",
        ],
    );

    // `lr` belongs under `optimizer:`; a typo of it at top level points there.
    let (err, path) = load_err("name: demo\nbatch_size: 2\nseed: 1\nlrr: 1\n", &[]);
    assert_mentions(
        &err,
        &[
            &format!("{path}:4:1"),
            "unknown field `lrr`",
            "did you mean `optimizer.lr`",
        ],
    );
    let (err, _) = load_err("lr: 0.00001\n", &[]);
    assert_mentions(&err, &["did you mean `optimizer.lr`"]);
}

#[test]
fn unknown_nested_key_gives_location_and_suggestion() {
    let (err, path) = load_err("name: demo\noptimizer: {lrr: 0.1}\n", &[]);
    assert_mentions(
        &err,
        &[
            &format!("{path}:2:"),
            "optimizer",
            "unknown field `lrr`",
            "did you mean `lr`",
        ],
    );

    let (err, path) = load_err("name: demo\noptimizer:\n  beta1: 0.9\n  lrr: 0.1\n", &[]);
    assert_mentions(&err, &[&format!("{path}:4:3"), "did you mean `lr`"]);

    let (err, path) = load_err("trainable:\n  kindz: [attn]\n", &[]);
    assert_mentions(&err, &[&format!("{path}:2:3"), "did you mean `kinds`"]);

    let (err, _) = load_err("schedule: {warmup_ration: 0.1}\n", &[]);
    assert_mentions(&err, &["did you mean `warmup_ratio`"]);
}

#[test]
fn unknown_key_through_set_names_the_override() {
    let (err, _) = load_err(GOOD_RECIPE, &["optimizer.lrr=1"]);
    assert_mentions(&err, &["--set", "optimizer.lrr=1", "did you mean `lr`"]);
}

// ---------------------------------------------------------------------------------------------
// Wrong types and invalid values

#[test]
fn wrong_type_names_line_and_key() {
    let (err, path) = load_err("name: demo\nseed: 3\nbatch_size: many\n", &[]);
    assert_mentions(
        &err,
        &[&format!("{path}:3:"), "batch_size", "\"many\"", "expected"],
    );

    let (err, path) = load_err("max_steps: -3\n", &[]);
    assert_mentions(&err, &[&format!("{path}:1:"), "max_steps", "-3"]);

    let (err, _) = load_err(GOOD_RECIPE, &["batch_size=many"]);
    assert_mentions(&err, &["--set", "batch_size=many", "\"many\"", "expected"]);
}

#[test]
fn invalid_values_name_the_key_and_the_fix() {
    let cases: [(&str, &[&str]); 8] = [
        (
            "optimizer: {lr: 0}\n",
            &["optimizer.lr", "must be a positive number"],
        ),
        (
            "optimizer: {lr: -0.001}\n",
            &["optimizer.lr", "must be a positive number"],
        ),
        (
            "optimizer: {lr: .nan}\n",
            &["optimizer.lr", "must be a positive number"],
        ),
        ("batch_size: 0\n", &["batch_size", "at least 1"]),
        ("max_steps: 0\n", &["max_steps", "at least 1"]),
        ("grad_accum: 0\n", &["grad_accum", "at least 1"]),
        ("dtype: f64\n", &["dtype", "f64", "f32", "bf16"]),
        ("device: tpu\n", &["device", "tpu", "cpu", "cuda"]),
    ];
    for (text, needles) in cases {
        let (err, _) = load_err(text, &[]);
        assert_mentions(&err, needles);
    }
    // The same checks apply to values given with --set.
    let (err, _) = load_err(GOOD_RECIPE, &["optimizer.lr=-1"]);
    assert_mentions(&err, &["optimizer.lr", "positive"]);
}

#[test]
fn empty_or_missing_recipe_file_is_named() {
    let (err, path) = load_err("  \n", &[]);
    assert_mentions(&err, &[&path, "empty", "model", "data"]);

    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope.yaml");
    let err = format!("{:#}", Recipe::load(&missing, &[]).unwrap_err());
    assert_mentions(
        &err,
        &[&missing.display().to_string(), "cannot read recipe"],
    );
}

// ---------------------------------------------------------------------------------------------
// --set shapes

#[test]
fn set_needs_key_path_equals_value() {
    let (err, _) = load_err(GOOD_RECIPE, &["nokeyvalue"]);
    assert_mentions(&err, &["--set nokeyvalue", "key.path=value"]);

    let (err, _) = load_err(GOOD_RECIPE, &["=3"]);
    assert_mentions(&err, &["--set =3", "key path"]);

    let (err, _) = load_err(GOOD_RECIPE, &["optimizer.lr.x=3"]);
    assert_mentions(&err, &["optimizer.lr", "not a section"]);

    let tmp = tempfile::tempdir().unwrap();
    let path = write(tmp.path(), "recipe.yaml", GOOD_RECIPE);
    let recipe = Recipe::load(
        &path,
        &["optimizer.lr=1e-3".to_string(), "seed=7".to_string()],
    )
    .unwrap();
    assert_eq!(recipe.optimizer.lr, 0.001);
    assert_eq!(recipe.seed, 7);
    // Untouched fields keep the file's values and the defaults.
    assert_eq!(recipe.max_steps, Some(2));
    assert_eq!(
        recipe.optimizer.weight_decay,
        Recipe::default().optimizer.weight_decay
    );
}

#[test]
fn cli_set_lr_is_recorded_in_the_run_recipe() {
    let tiny = TinyModel::new(Architecture::Qwen2, 3);
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "recipe.yaml", GOOD_RECIPE);
    write_data(tmp.path());
    let model = format!("model={}", tiny.spec_str());
    let out = tunescope(
        tmp.path(),
        &[
            "train",
            "recipe.yaml",
            "--set",
            &model,
            "--set",
            "data=data.jsonl",
            "--set",
            "optimizer.lr=1e-3",
            "--runs",
            "runs",
            "--plain",
        ],
    );
    expect_success(&out);
    let run_dir = printed_run_dir(tmp.path(), &out);
    let run = RunDir::open(&run_dir).unwrap();
    let text = std::fs::read_to_string(run.recipe_path()).unwrap();
    assert!(text.contains("lr: 0.001"), "recipe.yaml: {text}");
    let recorded = run.read_recipe().unwrap();
    assert_eq!(recorded.optimizer.lr, 0.001);
    // Relative paths were resolved against the working directory.
    assert_eq!(recorded.data.as_deref(), Some("data.jsonl"));
    assert_eq!(run.read_status().unwrap().state, RunState::Finished);
}

// ---------------------------------------------------------------------------------------------
// Selectors that match nothing

#[test]
fn lm_head_on_a_tied_model_points_to_embed() {
    let tiny = TinyModel::new(Architecture::Qwen2, 1);
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "recipe.yaml", "trainable: {kinds: [lm_head]}\n");
    let model = format!("model={}", tiny.spec_str());
    let out = tunescope(tmp.path(), &["plan", "recipe.yaml", "--set", &model]);
    let err = expect_failure(&out);
    assert_mentions(&err, &["trainable.kinds", "lm_head", "ties", "embed"]);
}

#[test]
fn include_pattern_matching_nothing_is_named() {
    let tiny = TinyModel::new(Architecture::Qwen2, 1);
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "recipe.yaml",
        "trainable: {include: [\"model.layers.*.attn.nope\"]}\n",
    );
    write_data(tmp.path());
    let model = format!("model={}", tiny.spec_str());
    let out = tunescope(tmp.path(), &["plan", "recipe.yaml", "--set", &model]);
    let err = expect_failure(&out);
    assert_mentions(
        &err,
        &[
            "trainable.include",
            "`model.layers.*.attn.nope`",
            "matches no parameter",
            "self_attn",
        ],
    );

    // Training reports the same, before any run directory exists.
    let out = tunescope(
        tmp.path(),
        &[
            "train",
            "recipe.yaml",
            "--set",
            &model,
            "--set",
            "data=data.jsonl",
            "--runs",
            "runs",
            "--plain",
        ],
    );
    let err = expect_failure(&out);
    assert_mentions(
        &err,
        &["`model.layers.*.attn.nope`", "matches no parameter"],
    );
    assert_no_run_dirs(tmp.path());
}

/// Asserts that `cwd/runs` holds no run directory (a recipe that fails its checks leaves none).
fn assert_no_run_dirs(cwd: &Path) {
    let dirs = run_dirs(&cwd.join("runs"));
    assert!(
        dirs.is_empty(),
        "a failing recipe left run directories: {dirs:?}"
    );
}

#[test]
fn unknown_key_through_the_cli_names_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "recipe.yaml",
        "max_steps: 2\noptimizr:\n  lr: 0.001\n",
    );
    let out = tunescope(tmp.path(), &["plan", "recipe.yaml", "--set", "model=x"]);
    let err = expect_failure(&out);
    assert_mentions(&err, &["recipe.yaml:2:1", "did you mean `optimizer`"]);

    write(tmp.path(), "recipe.yaml", GOOD_RECIPE);
    let out = tunescope(
        tmp.path(),
        &["plan", "recipe.yaml", "--set", "optimizer.lrr=1"],
    );
    let err = expect_failure(&out);
    assert_mentions(&err, &["--set", "did you mean `lr`"]);
}

// ---------------------------------------------------------------------------------------------
// Bad data

/// `tunescope train recipe.yaml --set model=… --set data=DATA [extra…] --runs runs --plain` in
/// `cwd`.
fn train_with(cwd: &Path, tiny: &TinyModel, data: &str, extra: &[&str]) -> Output {
    let model = format!("model={}", tiny.spec_str());
    let data = format!("data={data}");
    let mut args = vec![
        "train",
        "recipe.yaml",
        "--set",
        &model,
        "--set",
        &data,
        "--runs",
        "runs",
        "--plain",
    ];
    args.extend_from_slice(extra);
    tunescope(cwd, &args)
}

#[test]
fn empty_data_file_is_named() {
    let tiny = TinyModel::new(Architecture::Qwen2, 2);
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "recipe.yaml", GOOD_RECIPE);
    write(tmp.path(), "empty.jsonl", "\n  \n");
    let err = expect_failure(&train_with(tmp.path(), &tiny, "empty.jsonl", &[]));
    assert_mentions(&err, &["empty.jsonl", "no records", "prompt", "response"]);
    assert_no_run_dirs(tmp.path());
}

#[test]
fn missing_data_or_probe_files_fail_before_a_run_dir_exists() {
    let tiny = TinyModel::new(Architecture::Qwen2, 2);
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "recipe.yaml", GOOD_RECIPE);
    let err = expect_failure(&train_with(tmp.path(), &tiny, "nowhere.jsonl", &[]));
    assert_mentions(&err, &["nowhere.jsonl", "does not exist"]);
    assert_no_run_dirs(tmp.path());

    write_data(tmp.path());
    let err = expect_failure(&train_with(
        tmp.path(),
        &tiny,
        "data.jsonl",
        &["--set", "probe.heldout=missing-prompts.jsonl"],
    ));
    assert_mentions(&err, &["probe.heldout", "missing-prompts.jsonl"]);
    assert_no_run_dirs(tmp.path());

    let err = expect_failure(&train_with(
        tmp.path(),
        &tiny,
        "data.jsonl",
        &["--set", "eval.tasks=[missing-task.yaml]"],
    ));
    assert_mentions(&err, &["eval.tasks", "missing-task.yaml"]);
    assert_no_run_dirs(tmp.path());
}

#[test]
fn malformed_jsonl_names_the_line() {
    let tiny = TinyModel::new(Architecture::Qwen2, 2);
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "recipe.yaml", GOOD_RECIPE);
    let good = jsonl("how many apple : apple apple", "2", 2);
    write(
        tmp.path(),
        "bad.jsonl",
        &format!("{good}{{\"prompt\": \"x\", \"response\": \n{good}"),
    );
    let err = expect_failure(&train_with(tmp.path(), &tiny, "bad.jsonl", &[]));
    assert_mentions(&err, &["bad.jsonl line 3", "invalid JSON"]);
    assert!(!err.contains("line 1:"), "{err}");
    assert_no_run_dirs(tmp.path());
}

#[test]
fn long_responses_are_cut_and_reported() {
    let tiny = TinyModel::new(Architecture::Qwen2, 2);
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "recipe.yaml", GOOD_RECIPE);
    let long = "apple ".repeat(40);
    write(
        tmp.path(),
        "long.jsonl",
        &format!("{}{}", jsonl("hi", &long, 12), jsonl("hi", "2", 12)),
    );

    // The long replies lose their tails but keep labelled tokens: the run goes on and says so.
    let out = train_with(tmp.path(), &tiny, "long.jsonl", &["--set", "max_length=24"]);
    let err = expect_success(&out);
    assert_mentions(&err, &["12 examples cut to max_length", "0 dropped"]);
    let run = RunDir::open(&printed_run_dir(tmp.path(), &out)).unwrap();
    let start = run
        .read_metrics()
        .unwrap()
        .into_iter()
        .find(|m| m["kind"] == "start")
        .expect("start record");
    assert_eq!(start["truncated"], 12);
    assert_eq!(start["examples"], 24);
    assert_eq!(run.read_status().unwrap().state, RunState::Finished);
}

#[test]
fn long_prompts_are_dropped_and_reported() {
    let tiny = TinyModel::new(Architecture::Qwen2, 2);
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "recipe.yaml", GOOD_RECIPE);
    let long = "apple ".repeat(40);
    write(
        tmp.path(),
        "prompts.jsonl",
        &format!("{}{}", jsonl(&long, "2", 12), jsonl("hi", "2", 12)),
    );
    let out = train_with(
        tmp.path(),
        &tiny,
        "prompts.jsonl",
        &["--set", "max_length=24"],
    );
    let err = expect_success(&out);
    assert_mentions(&err, &["max_length", "12 dropped"]);
    assert_mentions(&err, &["on 12 examples"]);
}

#[test]
fn max_length_that_leaves_no_labels_is_an_error() {
    let tiny = TinyModel::new(Architecture::Qwen2, 2);
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "recipe.yaml", GOOD_RECIPE);
    write(
        tmp.path(),
        "long.jsonl",
        &jsonl("hi", &"apple ".repeat(40), 24),
    );
    let out = train_with(tmp.path(), &tiny, "long.jsonl", &["--set", "max_length=8"]);
    let err = expect_failure(&out);
    assert_mentions(&err, &["max_length 8", "raise max_length"]);
    // Checked before the run directory is created: none is left behind.
    assert_no_run_dirs(tmp.path());
}

// ---------------------------------------------------------------------------------------------
// Missing paths: named, and no run directory is left behind

#[test]
fn missing_model_is_named_and_no_run_dir_is_created() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "recipe.yaml", GOOD_RECIPE);
    write_data(tmp.path());
    let missing = tmp.path().join("no").join("such").join("model");
    let model = format!("model={}", missing.display());
    let out = tunescope(
        tmp.path(),
        &[
            "train",
            "recipe.yaml",
            "--set",
            &model,
            "--set",
            "data=data.jsonl",
            "--runs",
            "runs",
            "--plain",
        ],
    );
    let err = expect_failure(&out);
    assert_mentions(&err, &[&missing.display().to_string()]);
    assert!(
        run_dirs(&tmp.path().join("runs")).is_empty(),
        "a run directory was created for a recipe whose model is missing: {:?}",
        run_dirs(&tmp.path().join("runs"))
    );

    // A directory that is not a model directory is named too.
    std::fs::create_dir_all(&missing).unwrap();
    let out = tunescope(
        tmp.path(),
        &[
            "train",
            "recipe.yaml",
            "--set",
            &model,
            "--set",
            "data=data.jsonl",
            "--runs",
            "runs",
            "--plain",
        ],
    );
    let err = expect_failure(&out);
    assert_mentions(&err, &["config.json"]);
    assert!(run_dirs(&tmp.path().join("runs")).is_empty());

    // `plan` names it as well.
    let out = tunescope(
        tmp.path(),
        &["plan", "recipe.yaml", "--set", "model=/no/such/dir"],
    );
    let err = expect_failure(&out);
    assert_mentions(&err, &["/no/such/dir"]);
}

#[test]
fn missing_data_is_named_and_no_run_dir_is_created() {
    let tiny = TinyModel::new(Architecture::Qwen2, 2);
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "recipe.yaml", GOOD_RECIPE);
    let err = expect_failure(&train_with(tmp.path(), &tiny, "missing.jsonl", &[]));
    assert_mentions(&err, &["missing.jsonl", "does not exist", "data"]);
    assert!(run_dirs(&tmp.path().join("runs")).is_empty());

    // No data at all: the error says how to give it.
    let model = format!("model={}", tiny.spec_str());
    let out = tunescope(
        tmp.path(),
        &[
            "train",
            "recipe.yaml",
            "--set",
            &model,
            "--runs",
            "runs",
            "--plain",
        ],
    );
    let err = expect_failure(&out);
    assert_mentions(&err, &["no training data", "--set data="]);
    assert!(run_dirs(&tmp.path().join("runs")).is_empty());
}

#[test]
fn bad_set_through_the_cli_explains_the_shape() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "recipe.yaml", GOOD_RECIPE);
    write_data(tmp.path());
    let out = tunescope(
        tmp.path(),
        &[
            "train",
            "recipe.yaml",
            "--set",
            "nokeyvalue",
            "--runs",
            "runs",
            "--plain",
        ],
    );
    let err = expect_failure(&out);
    assert_mentions(&err, &["nokeyvalue", "key.path=value"]);
    assert!(run_dirs(&tmp.path().join("runs")).is_empty());
}
