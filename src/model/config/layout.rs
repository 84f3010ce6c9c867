//! Per-layer structure read from a config: which layers apply rope (SmolLM3) and which attend
//! through a sliding window (Mistral, Qwen2/3, Gemma), as transformers derives them.

use anyhow::{bail, Context, Result};

use super::family::FamilyDefaults;
use super::keys::KeyReader;

/// SmolLM3's per-layer rope switch: `no_rope_layers` lists 1 for a layer with rope and 0 for one
/// without; absent, every `no_rope_layer_interval`-th layer (4 by default) goes without. Other
/// families apply rope everywhere (an empty list).
pub(super) fn rope_layers(r: &KeyReader, model_type: &str, num_layers: usize) -> Result<Vec<bool>> {
    if model_type != "smollm3" {
        return Ok(Vec::new());
    }
    let flags: Vec<bool> = match r.get("no_rope_layers") {
        Some(v) => {
            let list = v
                .as_array()
                .context("key `no_rope_layers` must be a list of 0/1 per layer")?;
            if list.len() != num_layers {
                bail!(
                    "key `no_rope_layers` lists {} layers but num_hidden_layers is {num_layers}",
                    list.len()
                );
            }
            list.iter()
                .map(|x| match x.as_u64() {
                    Some(0) => Ok(false),
                    Some(1) => Ok(true),
                    _ => bail!("key `no_rope_layers` must hold 0 or 1 per layer, got {x}"),
                })
                .collect::<Result<_>>()?
        }
        None => {
            let interval = r.usize_or("no_rope_layer_interval", 4)?;
            if interval == 0 {
                bail!("key `no_rope_layer_interval` must be positive");
            }
            (0..num_layers).map(|i| (i + 1) % interval != 0).collect()
        }
    };
    r.mark(&["no_rope_layer_interval"]);
    let without: Vec<String> = flags
        .iter()
        .enumerate()
        .filter(|(_, rope)| !**rope)
        .map(|(i, _)| i.to_string())
        .collect();
    r.record(
        "layers without rope",
        if without.is_empty() {
            "none".to_string()
        } else {
            without.join(", ")
        },
        "no_rope_layers (or no_rope_layer_interval)",
        !r.object().contains_key("no_rope_layers"),
    );
    Ok(flags)
}

/// The attention window and each layer's attention type, as transformers derives them:
/// Mistral slides every layer (`sliding_window`, 4096 when absent), Qwen2 slides layers from
/// `max_window_layers` on when `use_sliding_window` is set (or as `layer_types` says), Llama never.
/// A mix of windowed and full layers is refused: the decoder uses one window for every layer.
pub(super) fn sliding_window(
    r: &KeyReader,
    model_type: &str,
    family: &FamilyDefaults,
    num_layers: usize,
    rope_layers: &[bool],
) -> Result<(Option<usize>, Vec<String>)> {
    let obj = r.object();
    let window = match model_type {
        "mistral" => match obj.get("sliding_window") {
            None => {
                let w = family.sliding_window;
                r.mark(&["sliding_window"]);
                r.record(
                    "sliding window",
                    w.map_or("none".into(), |w| w.to_string()),
                    "default of transformers' MistralConfig (no `sliding_window`)",
                    true,
                );
                w
            }
            Some(_) => r.opt_usize("sliding_window")?,
        },
        "gemma2" | "gemma3_text" | "phi3" => match obj.get("sliding_window") {
            None => {
                r.mark(&["sliding_window"]);
                family.sliding_window
            }
            Some(_) => r.opt_usize("sliding_window")?,
        },
        "qwen2" | "qwen3" | "smollm3" => {
            let enabled = r.bool_or("use_sliding_window", false)?;
            let size = match obj.get("sliding_window") {
                None => {
                    r.mark(&["sliding_window"]);
                    family.sliding_window
                }
                Some(_) => r.opt_usize("sliding_window")?,
            };
            if enabled {
                size
            } else {
                None
            }
        }
        _ => None,
    };
    let layer_types: Vec<String> = match r.get("layer_types") {
        Some(v) => {
            let list = v
                .as_array()
                .context("key `layer_types` must be a list of strings")?
                .iter()
                .map(|t| t.as_str().map(String::from))
                .collect::<Option<Vec<_>>>()
                .context("key `layer_types` must be a list of strings")?;
            if list.len() != num_layers {
                bail!(
                    "key `layer_types` lists {} layers but num_hidden_layers is {num_layers}",
                    list.len()
                );
            }
            for t in &list {
                if t != "full_attention" && t != "sliding_attention" {
                    bail!("key `layer_types` holds `{t}`; tunescope computes full_attention and sliding_attention layers only");
                }
            }
            list
        }
        None => {
            let max_window_layers = if matches!(model_type, "qwen2" | "qwen3") {
                r.usize_or("max_window_layers", family.max_window_layers)?
            } else {
                0
            };
            // Gemma 2 alternates local and global layers; Gemma 3 makes every
            // `sliding_window_pattern`-th layer global (6 when absent).
            let pattern = match model_type {
                "gemma2" => 2,
                "gemma3_text" => r.usize_or("sliding_window_pattern", 6)?.max(1),
                _ => 0,
            };
            (0..num_layers)
                .map(|i| {
                    let slides = match model_type {
                        "qwen2" | "qwen3" => i >= max_window_layers,
                        "mistral" | "phi3" => true,
                        // SmolLM3 slides its layers without rope.
                        "smollm3" => !rope_layers.get(i).copied().unwrap_or(true),
                        "gemma2" | "gemma3_text" => (i + 1) % pattern != 0,
                        _ => false,
                    };
                    if slides && window.is_some() {
                        "sliding_attention"
                    } else {
                        "full_attention"
                    }
                    .to_string()
                })
                .collect()
        }
    };
    // Bookkeeping once `layer_types` is present: transformers derives the types from these
    // keys only without it.
    match model_type {
        "qwen2" | "qwen3" => r.mark(&["max_window_layers"]),
        "gemma3_text" => r.mark(&["sliding_window_pattern", "_sliding_window_pattern"]),
        _ => {}
    }
    let windowed = |t: &String| t == "sliding_attention" && window.is_some();
    let count = layer_types.iter().filter(|t| windowed(t)).count();
    let effective = if count == 0 {
        None
    } else if count == layer_types.len()
        || matches!(model_type, "mistral" | "phi3" | "gemma2" | "gemma3_text")
    {
        window
    } else {
        bail!(
            "{count} of {} layers use a sliding window and the others full attention (`layer_types`/`max_window_layers`): per-layer windows are not computed by tunescope's decoder",
            layer_types.len()
        );
    };
    r.record(
        "attention window",
        effective.map_or("none (full attention)".to_string(), |w| {
            if count == layer_types.len() {
                format!("{w} tokens, every layer")
            } else {
                format!("{w} tokens, {count} of {} layers", layer_types.len())
            }
        }),
        "sliding_window, use_sliding_window, max_window_layers, layer_types (as transformers derives it)",
        false,
    );
    Ok((effective, layer_types))
}
