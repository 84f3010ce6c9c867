//! `tunescope inspect`: print a model's module map.

use std::fmt::Write;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use crate::model::module_map::{ModuleMap, ModuleNode};
use crate::model::names::TensorLayout;
use crate::model::Model;
pub use crate::util::format::group_digits;

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Model directory or hub id (org/name[@revision]).
    model: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Show the tokenizer's numeric tokens (count and a sample) instead of the module map.
    #[arg(long)]
    numeric: bool,
    /// Tree depth to print (text mode); 0 prints the whole tree.
    #[arg(long, default_value_t = 0)]
    depth: usize,
}

pub fn run(args: InspectArgs) -> Result<()> {
    let model = Model::open(&args.model)?;
    if args.numeric {
        return print_numeric(&model, args.json);
    }
    let map = model.module_map();
    if args.json {
        let out = json!({
            "model": args.model,
            "config": model.config,
            "chat_template_source": model.tokenizer.chat_template_source,
            "lora_adapter": model.adapter.as_ref().map(|a| json!({
                "dir": a.dir,
                "base": a.base,
                "r": a.settings.r,
                "alpha": a.settings.alpha,
                "use_rslora": a.settings.use_rslora,
                "scale": a.settings.scale(),
                "modules": a.modules,
            })),
            "tensor_layout": TensorLayout::detect(&model.config, &model.weights).ok(),
            "total": map.total(),
            "totals_by_kind": map.totals_by_kind().into_iter().map(|(k, v)| (k.to_string(), v)).collect::<std::collections::BTreeMap<_, _>>(),
            "totals_by_layer": map.totals_by_layer(),
            "params": map.params,
            "tree": map.tree(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", render_text(&args.model, &map, args.depth));
        print!("{}", render_config(&model));
    }
    Ok(())
}

/// The text report: totals by kind and layer, then the tree.
pub fn render_text(name: &str, map: &ModuleMap, depth: usize) -> String {
    let total = map.total().max(1);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "model {name}: {} parameters in {} tensors, {} layers",
        group_digits(map.total()),
        map.params.len(),
        map.num_layers()
    );
    let _ = writeln!(out, "\nby kind:");
    for (kind, n) in map.totals_by_kind() {
        let _ = writeln!(
            out,
            "  {:<10} {:>14}  {:>6.2}%",
            kind.as_str(),
            group_digits(n),
            100.0 * n as f64 / total as f64
        );
    }
    let _ = writeln!(out, "\nby layer:");
    for (layer, n) in map.totals_by_layer() {
        let _ = writeln!(
            out,
            "  {:<10} {:>14}  {:>6.2}%",
            layer,
            group_digits(n),
            100.0 * n as f64 / total as f64
        );
    }
    let _ = writeln!(out, "\ntree:");
    write_node(&mut out, map, &map.tree(), 0, depth);
    out
}

/// The configuration as read: every value with where it came from (defaults and derived values
/// marked), unknown keys, and the chat template's source.
pub fn render_config(model: &Model) -> String {
    let config = &model.config;
    let mut out = String::new();
    let _ = writeln!(out, "\nconfig ({}):", config.model_type);
    for s in &config.sources {
        let mark = if s.fallback { "*" } else { " " };
        let _ = writeln!(out, " {mark}{:<38} {:<22} ← {}", s.name, s.value, s.source);
    }
    let _ = writeln!(
        out,
        "  (* not given by config.json: a family default or a derived value)"
    );
    let template = match &model.tokenizer.chat_template_source {
        Some(source) => format!("← {source}"),
        None => "none: prompts are used as plain text".to_string(),
    };
    let _ = writeln!(out, "  {:<38} {:<22} {template}", "chat template", "");
    if config.vision.is_some() {
        let layout = match TensorLayout::detect(config, &model.weights) {
            Ok(layout) => layout.describe(),
            Err(e) => format!("unreadable: {e}"),
        };
        let _ = writeln!(out, "  {:<38} {:<22} ← {layout}", "tensor layout", "");
    }
    if let Some(a) = &model.adapter {
        let _ = writeln!(
            out,
            "  {:<38} {:<22} ← {}, folded into {} (r {}, alpha {}, scale {}{})",
            "LoRA adapter",
            format!("{} modules", a.modules.len()),
            a.dir.display(),
            a.base,
            a.settings.r,
            a.settings.alpha,
            a.settings.scale(),
            if a.settings.use_rslora {
                ", rsLoRA"
            } else {
                ""
            }
        );
    }
    for warning in &config.warnings {
        let _ = writeln!(out, "  warning: {warning}");
    }
    out
}

fn write_node(out: &mut String, map: &ModuleMap, node: &ModuleNode, level: usize, depth: usize) {
    let indent = "  ".repeat(level);
    let detail = match node.param {
        Some(i) => {
            let p = &map.params[i];
            format!("{:?} {} {}", p.shape, p.dtype, p.kind_label())
        }
        None => format!("{} tensors", node.param_count),
    };
    let _ = writeln!(
        out,
        "{indent}{:<width$} {:>14}  {detail}",
        node.name,
        group_digits(node.numel),
        width = 28usize.saturating_sub(2 * level).max(8)
    );
    if depth != 0 && level >= depth {
        return;
    }
    for child in &node.children {
        write_node(out, map, child, level + 1, depth);
    }
}

fn print_numeric(model: &Model, json: bool) -> Result<()> {
    let numeric = crate::eval::numeric::NumericVocab::new(
        &model.tokenizer.tokenizer,
        model.config.vocab_size,
    );
    let sample: Vec<String> = numeric
        .ids
        .iter()
        .filter_map(|&id| model.tokenizer.tokenizer.id_to_token(id))
        .take(40)
        .collect();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"count": numeric.len(), "vocab_size": model.config.vocab_size, "ids": numeric.ids, "sample": sample})
            )?
        );
    } else {
        println!(
            "{} numeric tokens of {} ({:.2}%)",
            numeric.len(),
            model.config.vocab_size,
            100.0 * numeric.len() as f64 / model.config.vocab_size.max(1) as f64
        );
        println!("sample: {}", sample.join(" "));
    }
    Ok(())
}
