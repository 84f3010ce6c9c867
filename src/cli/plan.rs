//! `tunescope plan`: the resolved trainable set and a memory estimate, without training.

use std::fmt::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::model::Model;
use crate::plan::{estimate, StepShape};
use crate::recipe::Recipe;
use crate::select;
use crate::train::regularize::TeacherMemory;
use crate::util::format::{group_digits, human_bytes};

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Recipe file (YAML).
    recipe: PathBuf,
    /// Override a recipe field: key.path=value (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: PlanArgs) -> Result<()> {
    let recipe = Recipe::load(&args.recipe, &args.set)?;
    let model = Model::open(&recipe.model_spec()?)?;
    let map = model.module_map();
    let selection = select::resolve(&recipe.trainable, &map)?;
    let shape = StepShape::of(&recipe);
    let dtype_bytes = shape.dtype_bytes;
    let memory = estimate(&model.config, &map, &selection, shape);
    // With LoRA the selection names the adapted linears; the adapters are what trains.
    let lora = match &recipe.lora {
        Some(spec) => {
            let modules = crate::model::lora::targets(&selection.names, &map)?;
            let plan = crate::model::lora::LoraPlan {
                settings: spec.settings(),
                modules,
                init_seed: spec.init_seed.unwrap_or(recipe.seed),
            };
            Some(plan.numel(&map))
        }
        None => None,
    };
    let memory = match lora {
        Some(n) => memory.with_adapters(n, dtype_bytes),
        None => memory,
    };
    let teacher = recipe.regularize.as_ref().map(|spec| {
        let memory =
            TeacherMemory::estimate(selection.trainable_numel(&map), map.total(), dtype_bytes);
        (spec, memory)
    });
    if args.json {
        let mut out = serde_json::json!({
            "recipe": recipe.name,
            "model": recipe.model,
            "trainable": selection.trainable_numel(&map),
            "total": map.total(),
            "fraction": selection.fraction(&map),
            "tensors": selection.names,
            "by_kind": selection.numel_by_kind(&map).into_iter().map(|(k, v)| (k.to_string(), v)).collect::<std::collections::BTreeMap<_, _>>(),
            "by_layer": selection.numel_by_layer(&map),
            "memory": memory,
            "lora_trainable": lora,
            "activation_checkpointing": shape.activation_checkpointing,
        });
        if let Some((spec, m)) = &teacher {
            out["lwf_teacher"] = serde_json::json!({
                "lambda": spec.lambda,
                "temperature": spec.temperature,
                "bytes": m.copied,
                "full_copy_bytes": m.full_copy,
            });
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let mut out = String::new();
    let trainable = selection.trainable_numel(&map);
    let _ = writeln!(out, "recipe {} on {}", recipe.name, recipe.model_spec()?);
    let _ = writeln!(
        out,
        "{}: {} of {} parameters ({:.2}%) in {} tensors",
        if lora.is_some() {
            "adapted (frozen)"
        } else {
            "trainable"
        },
        group_digits(trainable),
        group_digits(map.total()),
        100.0 * selection.fraction(&map),
        selection.names.len()
    );
    if let (Some(n), Some(spec)) = (lora, &recipe.lora) {
        let _ = writeln!(
            out,
            "LoRA (r {}, alpha {}): the selected weights stay frozen; {} adapter parameters train ({:.2}% of the model)",
            spec.r,
            spec.alpha,
            group_digits(n),
            100.0 * n as f64 / map.total().max(1) as f64
        );
    }
    let by_kind_total = map.totals_by_kind();
    let _ = writeln!(out, "\nby kind:            trainable          of kind");
    for (kind, n) in selection.numel_by_kind(&map) {
        let _ = writeln!(
            out,
            "  {:<10} {:>14} {:>16}",
            kind.as_str(),
            group_digits(n),
            group_digits(by_kind_total.get(&kind).copied().unwrap_or(0))
        );
    }
    let by_layer_total = map.totals_by_layer();
    let _ = writeln!(out, "\nby layer:           trainable         of layer");
    for (layer, n) in selection.numel_by_layer(&map) {
        let _ = writeln!(
            out,
            "  {:<10} {:>14} {:>16}",
            layer,
            group_digits(n),
            group_digits(by_layer_total.get(&layer).copied().unwrap_or(0))
        );
    }
    let _ = writeln!(
        out,
        "\nmemory estimate (batch {} x seq {}, {}{}):",
        recipe.batch_size,
        recipe.max_length,
        recipe.dtype,
        if shape.activation_checkpointing {
            ", activation checkpointing"
        } else {
            ""
        }
    );
    for (label, bytes) in [
        ("weights (all)", memory.weights),
        ("weight files (mapped)", memory.mapped_files),
        ("gradients (trainable)", memory.gradients),
        ("AdamW state (trainable)", memory.optimizer),
        ("activations", memory.activations),
        ("total", memory.total),
    ] {
        let _ = writeln!(out, "  {label:<24} {:>12}", human_bytes(bytes));
    }
    if let Some((spec, m)) = &teacher {
        let _ = writeln!(
            out,
            "  {:<24} {:>12}   (LwF λ {}, T {}: the trainable tensors copied, frozen ones shared; a full copy: {})",
            "teacher",
            human_bytes(m.copied),
            spec.lambda,
            spec.temperature,
            human_bytes(m.full_copy)
        );
    }
    print!("{out}");
    Ok(())
}
