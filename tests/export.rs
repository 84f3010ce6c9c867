//! `tunescope export`: for every shipped recipe, the Axolotl patterns (read the way Axolotl reads
//! them) and the TRL script's name list select exactly the recipe's resolved set on tiny models;
//! LLaMA-Factory takes what its freeze tuning can express and refuses the rest, naming why.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::TinyModel;
use regex::Regex;
use tunescope::export::{export, ExportContext, Target};
use tunescope::model::module_map::ModuleMap;
use tunescope::model::tiny::TinySpec;
use tunescope::model::{Architecture, WeightStore};
use tunescope::recipe::Recipe;
use tunescope::select;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every shipped recipe (not the demo ones, not LoRA: exporting those is refused, below).
fn shipped_recipes() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(repo().join("recipes"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.ends_with(".yaml") && !name.starts_with("demo-") && !vision_only(p) && !lora(p)
        })
        .collect();
    out.sort();
    assert!(
        out.len() >= 6,
        "expected the shipped recipes, found {out:?}"
    );
    out
}

/// A small training file mixing both record forms.
fn write_data(dir: &Path) -> PathBuf {
    let path = dir.join("train.jsonl");
    let lines = [
        serde_json::json!({"prompt": "how many apples : apple cup apple ?", "response": "2"}),
        serde_json::json!({"messages": [
            {"role": "system", "content": "count things"},
            {"role": "user", "content": "how many cups : cup ?"},
            {"role": "assistant", "content": "1"},
        ]}),
    ];
    let text: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    std::fs::write(&path, text.join("\n") + "\n").unwrap();
    path
}

fn load_recipe(path: &Path, tiny: &TinyModel, data: &Path, extra: &[&str]) -> Recipe {
    let mut sets = vec![
        format!("model={}", tiny.spec_str()),
        format!("data={}", data.display()),
    ];
    sets.extend(extra.iter().map(|s| s.to_string()));
    Recipe::load(path, &sets).unwrap()
}

fn module_map(tiny: &TinyModel) -> ModuleMap {
    let store = WeightStore::open(&[tiny.path().join("model.safetensors")]).unwrap();
    ModuleMap::from_store(&store)
}

fn names(tiny: &TinyModel) -> Vec<String> {
    module_map(tiny)
        .params
        .iter()
        .map(|p| p.name.clone())
        .collect()
}

fn resolved(recipe: &Recipe, tiny: &TinyModel) -> BTreeSet<String> {
    select::resolve(&recipe.trainable, &module_map(tiny))
        .unwrap()
        .names
}

/// What Axolotl unfreezes: each pattern has every `.` not followed by `+` escaped
/// (`re.sub(r"\.(?!\+)", "\\.", pattern)`), and is tried with `re.match` (anchored at the start).
fn axolotl_unfreezes(patterns: &[String], names: &[String]) -> BTreeSet<String> {
    let compiled: Vec<Regex> = patterns
        .iter()
        .map(|p| {
            let chars: Vec<char> = p.chars().collect();
            let mut escaped = String::new();
            for (i, c) in chars.iter().enumerate() {
                if *c == '.' && chars.get(i + 1) != Some(&'+') {
                    escaped.push_str("\\.");
                } else {
                    escaped.push(*c);
                }
            }
            Regex::new(&format!("^(?:{escaped})")).unwrap()
        })
        .collect();
    names
        .iter()
        .filter(|n| compiled.iter().any(|r| r.is_match(n)))
        .cloned()
        .collect()
}

fn read_yaml(path: &Path) -> serde_yaml::Value {
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn unfrozen(config: &serde_yaml::Value) -> Vec<String> {
    config["unfrozen_parameters"]
        .as_sequence()
        .expect("unfrozen_parameters list")
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// The names in the script's `TRAINABLE = {...}` block.
fn trl_names(script: &str) -> BTreeSet<String> {
    let start = script.find("TRAINABLE = {\n").expect("TRAINABLE block");
    let body = &script[start + "TRAINABLE = {\n".len()..];
    let end = body.find("\n}\n").expect("end of TRAINABLE block");
    body[..end]
        .lines()
        .map(|line| {
            let line = line.trim().trim_end_matches(',');
            serde_json::from_str::<String>(line).unwrap_or_else(|_| panic!("bad line {line:?}"))
        })
        .collect()
}

/// LLaMA-Factory's freeze rule (`_setup_freeze_tuning`): a parameter trains when its name contains
/// `.{layer}.{module}` (`.{layer}.` for `all`) for one of the first/last N layers, or an extra module.
fn llama_factory_trains(
    config: &serde_yaml::Value,
    num_layers: usize,
    names: &[String],
) -> BTreeSet<String> {
    let n = config["freeze_trainable_layers"].as_i64().unwrap();
    let layers: Vec<usize> = if n > 0 {
        (num_layers - n as usize..num_layers).collect()
    } else {
        (0..(-n) as usize).collect()
    };
    let split = |v: &serde_yaml::Value| -> Vec<String> {
        v.as_str()
            .map(|s| s.split(',').map(|m| m.trim().to_string()).collect())
            .unwrap_or_default()
    };
    let mut needles = Vec::new();
    for module in split(&config["freeze_trainable_modules"]) {
        for l in &layers {
            needles.push(if module == "all" {
                format!(".{l}.")
            } else {
                format!(".{l}.{module}")
            });
        }
    }
    needles.extend(split(&config["freeze_extra_modules"]));
    names
        .iter()
        .filter(|n| needles.iter().any(|x| n.contains(x.as_str())))
        .cloned()
        .collect()
}

#[test]
fn axolotl_patterns_select_exactly_each_recipes_set() {
    for arch in [Architecture::Qwen2, Architecture::Llama] {
        let tiny = TinyModel::new(arch, 5);
        let all = names(&tiny);
        let work = tempfile::tempdir().unwrap();
        let data = write_data(work.path());
        for path in shipped_recipes() {
            let recipe = load_recipe(&path, &tiny, &data, &[]);
            let expected = resolved(&recipe, &tiny);
            let out = work.path().join(format!("{}-axolotl", recipe.name));
            let exported = export(&recipe, Target::Axolotl, &out).unwrap();
            assert_eq!(exported.main, out.join("axolotl.yaml"));
            let text = std::fs::read_to_string(&exported.main).unwrap();
            assert!(
                text.contains("\nlearning_rate: 5.0e-6\n"),
                "PyYAML reads 5e-6 as a string"
            );
            let config = read_yaml(&exported.main);
            let patterns = unfrozen(&config);
            for p in &patterns {
                assert!(p.starts_with('^') && p.ends_with('$'), "{p}");
                assert!(!p.contains("\\."), "Axolotl escapes dots itself: {p}");
            }
            let got = axolotl_unfreezes(&patterns, &all);
            assert_eq!(got, expected, "{arch:?} {}: {patterns:#?}", recipe.name);
            // Compact: never more patterns than kinds of module selected.
            assert!(patterns.len() <= 12, "{}: {patterns:#?}", recipe.name);

            assert_eq!(
                config["base_model"].as_str().unwrap(),
                std::fs::canonicalize(tiny.path())
                    .unwrap()
                    .to_str()
                    .unwrap()
            );
            assert_eq!(config["learning_rate"].as_f64(), Some(recipe.optimizer.lr));
            assert_eq!(config["lr_scheduler"].as_str(), Some("cosine"));
            assert_eq!(config["warmup_ratio"].as_f64(), Some(0.03));
            assert_eq!(
                config["micro_batch_size"].as_u64(),
                Some(recipe.batch_size as u64)
            );
            assert_eq!(
                config["sequence_len"].as_u64(),
                Some(recipe.max_length as u64)
            );
            assert_eq!(config["seed"].as_u64(), Some(recipe.seed));
            assert_eq!(config["bf16"].as_bool(), Some(false));
            let dataset = &config["datasets"][0];
            assert_eq!(dataset["type"].as_str(), Some("chat_template"));
            assert_eq!(dataset["field_messages"].as_str(), Some("messages"));
            let data_path = out.join(dataset["path"].as_str().unwrap());
            let records: Vec<serde_json::Value> = std::fs::read_to_string(&data_path)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(records.len(), 2);
            assert_eq!(records[0]["messages"][0]["role"], "user");
            assert_eq!(records[0]["messages"][1]["content"], "2");
            assert_eq!(records[1]["messages"][0]["role"], "system");
        }
    }
}

#[test]
fn axolotl_patterns_group_layer_ranges() {
    let mut spec = TinySpec::new(Architecture::Qwen2, 9);
    spec.num_layers = 12;
    spec.hidden_size = 16;
    spec.intermediate_size = 16;
    let tiny = TinyModel::with_spec(spec);
    let all = names(&tiny);
    let work = tempfile::tempdir().unwrap();
    let data = write_data(work.path());
    let recipe = load_recipe(&repo().join("recipes/sa-proj.yaml"), &tiny, &data, &[]);
    let out = work.path().join("sa");
    export(&recipe, Target::Axolotl, &out).unwrap();
    let patterns = unfrozen(&read_yaml(&out.join("axolotl.yaml")));
    assert!(
        patterns.contains(
            &"^model.layers.(?:[0-9]|1[01]).self_attn.q_proj.(?:weight|bias)$".to_string()
        ),
        "{patterns:#?}"
    );
    assert!(
        patterns.contains(&"^model.layers.(?:[0-9]|1[01]).self_attn.o_proj.weight$".to_string()),
        "{patterns:#?}"
    );
    assert_eq!(patterns.len(), 4);
    assert_eq!(axolotl_unfreezes(&patterns, &all), resolved(&recipe, &tiny));

    // Scattered layers, and biases off: still exactly the set.
    for extra in [
        vec!["trainable.layers=0..3,5,9.."],
        vec!["trainable.layers=1,10", "trainable.biases=false"],
        vec!["trainable.kinds=[gate, up, norm]", "trainable.layers=-5.."],
    ] {
        let recipe = load_recipe(&repo().join("recipes/sa-proj.yaml"), &tiny, &data, &extra);
        let out = work.path().join("sa-scattered");
        export(&recipe, Target::Axolotl, &out).unwrap();
        let patterns = unfrozen(&read_yaml(&out.join("axolotl.yaml")));
        assert_eq!(
            axolotl_unfreezes(&patterns, &all),
            resolved(&recipe, &tiny),
            "{extra:?}: {patterns:#?}"
        );
    }
}

#[test]
fn trl_script_names_exactly_each_recipes_set() {
    for arch in [Architecture::Qwen2, Architecture::Llama] {
        let tiny = TinyModel::new(arch, 6);
        let work = tempfile::tempdir().unwrap();
        let data = write_data(work.path());
        for path in shipped_recipes() {
            let recipe = load_recipe(&path, &tiny, &data, &["max_steps=30", "dtype=bf16"]);
            let out = work.path().join(format!("{}-trl", recipe.name));
            let exported = export(&recipe, Target::Trl, &out).unwrap();
            assert_eq!(exported.main, out.join("train_trl.py"));
            let script = std::fs::read_to_string(&exported.main).unwrap();
            assert_eq!(
                trl_names(&script),
                resolved(&recipe, &tiny),
                "{arch:?} {}",
                recipe.name
            );
            assert!(script.contains("accelerate launch"), "run instructions");
            assert!(script.contains("from trl import SFTConfig, SFTTrainer"));
            assert!(script.contains("param.requires_grad = name in trainable"));
            assert!(script.contains("learning_rate=5e-6,"), "{script}");
            assert!(script.contains("max_steps=30,"));
            assert!(script.contains("bf16=True,"));
            // transformers 5 / TRL 1.x have no `warmup_ratio` or `torch_dtype`: a fraction of
            // the steps goes to `warmup_steps`, the weights' dtype to `dtype`.
            assert!(script.contains("warmup_steps=0.03,"), "{script}");
            assert!(!script.contains("warmup_ratio="), "{script}");
            assert!(!script.contains("torch_dtype="), "{script}");
            assert!(script.contains("dtype=torch.float32"), "{script}");
            assert!(script.contains("lr_scheduler_type=\"cosine\","));
            assert!(script.contains("per_device_train_batch_size=4,"));
            assert!(script.contains("max_length=512,"));
            assert!(script.contains("seed=42,"));
            let data_lines: Vec<serde_json::Value> =
                std::fs::read_to_string(out.join("data.jsonl"))
                    .unwrap()
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect();
            assert_eq!(data_lines[0]["prompt"][0]["role"], "user");
            assert_eq!(data_lines[0]["completion"][0]["content"], "2");
            assert_eq!(data_lines[1]["prompt"].as_array().unwrap().len(), 2);
        }
    }
}

#[test]
fn llama_factory_takes_whole_blocks_and_refuses_parts() {
    for arch in [Architecture::Qwen2, Architecture::Llama] {
        let tiny = TinyModel::new(arch, 8);
        let all = names(&tiny);
        let work = tempfile::tempdir().unwrap();
        let data = write_data(work.path());
        for (recipe_name, modules) in [
            ("sa-proj", "self_attn"),
            ("mlp", "mlp"),
            ("full-llm", "all"),
        ] {
            let path = repo().join(format!("recipes/{recipe_name}.yaml"));
            let recipe = load_recipe(&path, &tiny, &data, &[]);
            let out = work.path().join(recipe_name);
            let exported = export(&recipe, Target::LlamaFactory, &out)
                .unwrap_or_else(|e| panic!("{arch:?} {recipe_name}: {e:#}"));
            let config = read_yaml(&exported.main);
            assert_eq!(config["finetuning_type"].as_str(), Some("freeze"));
            assert_eq!(config["freeze_trainable_layers"].as_i64(), Some(2));
            assert_eq!(config["freeze_trainable_modules"].as_str(), Some(modules));
            assert_eq!(
                llama_factory_trains(&config, 2, &all),
                resolved(&recipe, &tiny),
                "{arch:?} {recipe_name}"
            );
            if recipe_name == "full-llm" {
                let extra = config["freeze_extra_modules"].as_str().unwrap();
                assert!(
                    extra.contains("embed_tokens") && extra.contains("norm"),
                    "{extra}"
                );
                assert_eq!(
                    extra.contains("lm_head"),
                    arch == Architecture::Llama,
                    "{extra}"
                );
            } else {
                assert!(config.get("freeze_extra_modules").is_none());
            }
            let info: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(out.join("dataset_info.json")).unwrap(),
            )
            .unwrap();
            let dataset = config["dataset"].as_str().unwrap();
            assert_eq!(info[dataset]["file_name"], "data.jsonl");
            assert_eq!(info[dataset]["formatting"], "sharegpt");
            assert!(out.join("data.jsonl").is_file());
        }
        for (recipe_name, named) in [
            ("mlp-gate-up", vec!["down_proj"]),
            ("mlp-down", vec!["gate_proj", "up_proj"]),
            ("sa-proj+gate-up", vec!["down_proj"]),
        ] {
            let path = repo().join(format!("recipes/{recipe_name}.yaml"));
            let recipe = load_recipe(&path, &tiny, &data, &[]);
            let out = work.path().join(format!("refused-{recipe_name}"));
            let err = format!(
                "{:#}",
                export(&recipe, Target::LlamaFactory, &out).unwrap_err()
            );
            assert!(err.contains("LLaMA-Factory cannot express"), "{err}");
            for part in named {
                assert!(err.contains(part), "{recipe_name}: {err}");
            }
            assert!(!out.exists(), "nothing is written for a refused export");
        }
        // sa-proj without biases on a model that has them cannot be expressed either.
        let recipe = load_recipe(
            &repo().join("recipes/sa-proj.yaml"),
            &tiny,
            &data,
            &["trainable.biases=false"],
        );
        let result = export(&recipe, Target::LlamaFactory, &work.path().join("nobias"));
        match arch {
            Architecture::Qwen2 => {
                let err = format!("{:#}", result.unwrap_err());
                assert!(err.contains("bias"), "{err}");
            }
            Architecture::Llama => {
                result.unwrap();
            }
            Architecture::Qwen3
            | Architecture::SmolLM3
            | Architecture::Gemma
            | Architecture::Phi3 => {
                unreachable!("not in this loop")
            }
        }
    }
}

#[test]
fn llama_factory_layer_ranges() {
    let mut spec = TinySpec::new(Architecture::Llama, 10);
    spec.num_layers = 4;
    spec.hidden_size = 16;
    spec.intermediate_size = 16;
    let tiny = TinyModel::with_spec(spec);
    let all = names(&tiny);
    let work = tempfile::tempdir().unwrap();
    let data = write_data(work.path());
    let path = repo().join("recipes/mlp.yaml");
    for (layers, expected) in [("-1..", 1), ("2..", 2), ("..3", -3), ("0", -1)] {
        let recipe = load_recipe(
            &path,
            &tiny,
            &data,
            &[&format!("trainable.layers={layers}")],
        );
        let out = work.path().join(format!("l{expected}"));
        export(&recipe, Target::LlamaFactory, &out).unwrap();
        let config = read_yaml(&out.join("llama_factory.yaml"));
        assert_eq!(
            config["freeze_trainable_layers"].as_i64(),
            Some(expected),
            "{layers}"
        );
        assert_eq!(
            llama_factory_trains(&config, 4, &all),
            resolved(&recipe, &tiny)
        );
    }
    let recipe = load_recipe(&path, &tiny, &data, &["trainable.layers=1..3"]);
    let err = format!(
        "{:#}",
        export(&recipe, Target::LlamaFactory, &work.path().join("middle")).unwrap_err()
    );
    assert!(
        err.contains("first or last") && err.contains("1-2"),
        "{err}"
    );
}

#[test]
fn the_command_writes_the_files() {
    let tiny = TinyModel::new(Architecture::Qwen2, 4);
    let work = tempfile::tempdir().unwrap();
    let data = write_data(work.path());
    let out = work.path().join("out");
    let output = Command::new(env!("CARGO_BIN_EXE_tunescope"))
        .arg("export")
        .arg(repo().join("recipes/sa-proj.yaml"))
        .args(["--set", &format!("model={}", tiny.spec_str())])
        .args(["--set", &format!("data={}", data.display())])
        .args(["--to", "trl", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.trim(),
        out.join("train_trl.py").display().to_string()
    );
    assert!(out.join("data.jsonl").is_file());

    let output = Command::new(env!("CARGO_BIN_EXE_tunescope"))
        .arg("export")
        .arg(repo().join("recipes/mlp-gate-up.yaml"))
        .args(["--set", &format!("model={}", tiny.spec_str())])
        .args(["--set", &format!("data={}", data.display())])
        .args(["--to", "llama-factory", "--out"])
        .arg(work.path().join("lf"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("down_proj"), "{stderr}");
}

/// Recipes that train only vision-side kinds (projector, vision) need a vision-language model;
/// tests/llava_train.rs covers them.
fn lora(path: &Path) -> bool {
    tunescope::recipe::Recipe::load(path, &[])
        .unwrap()
        .lora
        .is_some()
}

#[test]
fn a_lora_recipe_is_refused_by_every_target_naming_lora() {
    let tiny = TinyModel::new(Architecture::Qwen2, 5);
    let work = tempfile::tempdir().unwrap();
    let data = write_data(work.path());
    let recipe = load_recipe(&repo().join("recipes/lora-mlp.yaml"), &tiny, &data, &[]);
    for target in [Target::Axolotl, Target::LlamaFactory, Target::Trl] {
        let out = work.path().join(format!("{target:?}"));
        let error = export(&recipe, target, &out).unwrap_err().to_string();
        assert!(error.contains("LoRA"), "{error}");
        assert!(!out.exists(), "nothing is written");
    }
}

fn vision_only(path: &Path) -> bool {
    let recipe = tunescope::recipe::Recipe::load(path, &[]).unwrap();
    !recipe.trainable.kinds.is_empty()
        && recipe
            .trainable
            .kinds
            .iter()
            .all(|k| k == "projector" || k == "vision")
}

/// Qwen3's q_norm/k_norm sit under `self_attn`, so LLaMA-Factory's module freezing cannot train
/// q, k, v, o alone: the export is refused naming them; Axolotl and TRL take exact names.
#[test]
fn qwen3_qk_norms_refuse_llama_factory_and_pass_exact_name_exports() {
    let tiny = TinyModel::new(Architecture::Qwen3, 12);
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data.jsonl");
    std::fs::write(&data, "{\"prompt\": \"how many?\", \"response\": \"2\"}\n").unwrap();
    let recipe = load_recipe(&repo().join("recipes/sa-proj.yaml"), &tiny, &data, &[]);
    let err = format!(
        "{:#}",
        export(&recipe, Target::LlamaFactory, &work.path().join("lf")).unwrap_err()
    );
    assert!(err.contains("q_norm") && err.contains("k_norm"), "{err}");
    let exported = export(&recipe, Target::Trl, &work.path().join("trl")).unwrap();
    let script = std::fs::read_to_string(&exported.main).unwrap();
    assert_eq!(trl_names(&script), resolved(&recipe, &tiny));
    assert!(
        !script.contains("q_norm"),
        "sa-proj leaves the norms frozen"
    );
}

/// Phi-3: a recipe that trains parts of the fused qkv_proj is refused by every export (the other
/// trainers take whole parameters), naming the parts; one that trains none exports.
#[test]
fn phi3_fused_parts_are_refused_by_exports() {
    let tiny = TinyModel::new(Architecture::Phi3, 13);
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data.jsonl");
    std::fs::write(&data, "{\"prompt\": \"how many?\", \"response\": \"2\"}\n").unwrap();
    let recipe = load_recipe(&repo().join("recipes/sa-proj.yaml"), &tiny, &data, &[]);
    for target in [Target::Trl, Target::Axolotl, Target::LlamaFactory] {
        let out = work.path().join(format!("{target:?}"));
        let err = format!("{:#}", export(&recipe, target, &out).unwrap_err());
        assert!(err.contains("qkv_proj.weight[q]"), "{target:?}: {err}");
        assert!(!out.exists(), "nothing is written for a refused export");
    }
    assert!(ExportContext::new(&recipe).is_err());
    let down = load_recipe(&repo().join("recipes/mlp-down.yaml"), &tiny, &data, &[]);
    export(&down, Target::Trl, &work.path().join("trl")).unwrap();
}
