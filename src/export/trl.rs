//! TRL: a runnable `train_trl.py` (transformers + trl `SFTTrainer`) that freezes every
//! parameter but an exact name list, with the recipe's hyperparameters and the data converted
//! to TRL's conversational prompt-completion form.

use anyhow::Result;

use super::{has_multi_turn, prompt_completion_jsonl, ExportContext, ExportFile, Rendered, Target};

/// The script's file name.
pub const SCRIPT: &str = "train_trl.py";
/// The converted training data's file name.
pub const DATA: &str = "data.jsonl";

/// A Python literal for a string (JSON string syntax is valid Python for these names).
fn py_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

fn py_bool(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

/// A float as Python source (always with a decimal point or exponent).
fn py_float(v: f64) -> String {
    let text = format!("{v:?}");
    if text.contains(['.', 'e', 'E']) || text.contains("inf") || text.contains("NaN") {
        text
    } else {
        format!("{text}.0")
    }
}

/// The `TRAINABLE = {...}` block, one name per line.
pub fn trainable_block(names: &[&str]) -> String {
    let mut out = String::from("TRAINABLE = {\n");
    for name in names {
        out.push_str(&format!("    {},\n", py_str(name)));
    }
    out.push_str("}\n");
    out
}

/// Renders `train_trl.py` and `data.jsonl`.
pub fn render(ctx: &ExportContext) -> Result<Rendered> {
    let h = &ctx.hyper;
    let header = ctx.header(Target::Trl, "#");
    let names = ctx.trainable_in_order();
    let multi_turn_note = if has_multi_turn(&ctx.records) && !h.train_on_prompt {
        "# Note: some records have several assistant turns; in TRL's prompt-completion form only the last\n\
         # assistant turn carries loss (tunescope trains on every assistant turn).\n"
    } else {
        ""
    };
    let warmup = match h.warmup_steps {
        Some(steps) => format!("warmup_steps={steps},"),
        // transformers 5 dropped `warmup_ratio`; a `warmup_steps` below 1 is that share of the
        // steps, rounded up, as tunescope's schedule does.
        None if h.warmup_ratio > 0.0 => format!(
            "warmup_steps={},  # share of the training steps (warmup_ratio {})",
            py_float(h.warmup_ratio),
            py_float(h.warmup_ratio)
        ),
        None => "warmup_steps=0,".to_string(),
    };
    let save = match h.save_steps {
        Some(steps) => format!(
            "save_strategy=\"steps\",\n        save_steps={steps},\n        save_total_limit={},",
            h.save_total_limit
        ),
        None => format!(
            "save_strategy=\"epoch\",\n        save_total_limit={},",
            h.save_total_limit
        ),
    };
    let script = format!(
        r#"#!/usr/bin/env python3
{header}#
# Run (from anywhere; paths are relative to this file):
#   pip install "trl>=1.16,<2" "transformers>=5.24,<6" accelerate datasets   # tested: trl 1.16.0, transformers 5.24.0
#   accelerate launch train_trl.py                      # one machine, every GPU `accelerate config` set up
#   accelerate launch --num_processes 8 train_trl.py    # or say how many
#   accelerate launch --config_file fsdp.yaml --num_machines 2 --machine_rank 0 ... train_trl.py
# Checkpoints land in ./output/checkpoint-N; follow them with
#   tunescope watch output --recipe RECIPE.yaml
#
# Freezing: every parameter gets requires_grad=False except exactly the names in TRAINABLE
# (the recipe's resolved set, Hugging Face names); the script stops if any is missing.
{multi_turn_note}
from pathlib import Path

import torch
from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

HERE = Path(__file__).resolve().parent
MODEL = {model}
REVISION = {revision}
DATA = HERE / {data}
OUTPUT = HERE / "output"

{trainable}

def freeze_all_but(model, trainable):
    names = {{name for name, _ in model.named_parameters()}}
    missing = sorted(set(trainable) - names)
    if missing:
        raise SystemExit(f"{{len(missing)}} trainable names are not parameters of the model: {{missing[:10]}}")
    for name, param in model.named_parameters():
        param.requires_grad = name in trainable
    chosen = {{name for name, param in model.named_parameters() if param.requires_grad}}
    assert chosen == set(trainable), "freezing did not select exactly TRAINABLE"
    count = sum(param.numel() for param in model.parameters() if param.requires_grad)
    total = sum(param.numel() for param in model.parameters())
    print(f"training {{len(chosen)}} tensors: {{count}} of {{total}} parameters ({{100 * count / total:.2f}}%)")


def main():
    tokenizer = AutoTokenizer.from_pretrained(MODEL, revision=REVISION)
    # Weights load in float32; with bf16=True the Trainer computes in bf16 autocast
    # (tunescope likewise keeps an f32 master copy of trained weights).
    model = AutoModelForCausalLM.from_pretrained(MODEL, revision=REVISION, dtype=torch.float32)
    freeze_all_but(model, TRAINABLE)
    dataset = load_dataset("json", data_files=str(DATA), split="train")
    config = SFTConfig(
        output_dir=str(OUTPUT),
        learning_rate={lr},
        weight_decay={weight_decay},
        adam_beta1={beta1},
        adam_beta2={beta2},
        adam_epsilon={eps},
        max_grad_norm={max_grad_norm},
        lr_scheduler_type="{scheduler}",
        {warmup}
        num_train_epochs={epochs},
        max_steps={max_steps},
        per_device_train_batch_size={batch_size},
        gradient_accumulation_steps={grad_accum},
        max_length={max_length},
        seed={seed},
        bf16={bf16},
        gradient_checkpointing={checkpointing},
        completion_only_loss={completion_only},
        packing=False,
        logging_steps=1,
        {save}
        report_to="none",
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    trainer.train()
    trainer.save_model(str(OUTPUT / "final"))


if __name__ == "__main__":
    main()
"#,
        model = py_str(&ctx.model.id),
        revision = ctx
            .model
            .revision
            .as_deref()
            .map_or("None".to_string(), py_str),
        data = py_str(DATA),
        trainable = trainable_block(&names),
        lr = py_float(h.lr),
        weight_decay = py_float(h.weight_decay),
        beta1 = py_float(h.beta1),
        beta2 = py_float(h.beta2),
        eps = py_float(h.eps),
        max_grad_norm = py_float(h.max_grad_norm),
        scheduler = h.scheduler,
        epochs = h.epochs,
        max_steps = h.max_steps.map_or(-1, |s| s as i64),
        batch_size = h.batch_size,
        grad_accum = h.grad_accum,
        max_length = h.max_length,
        seed = h.seed,
        bf16 = py_bool(h.bf16),
        // Non-reentrant: frozen embeddings would otherwise cut the gradient at the first layer.
        checkpointing = if h.gradient_checkpointing {
            "True,\n        gradient_checkpointing_kwargs={\"use_reentrant\": False}"
        } else {
            "False"
        },
        completion_only = py_bool(!h.train_on_prompt),
    );
    Ok(Rendered {
        files: vec![
            ExportFile {
                name: SCRIPT.into(),
                contents: script,
            },
            ExportFile {
                name: DATA.into(),
                contents: prompt_completion_jsonl(&ctx.records)?,
            },
        ],
        main: SCRIPT.into(),
        command: format!("accelerate launch {SCRIPT}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_literals() {
        assert_eq!(py_float(5e-6), "5e-6");
        assert_eq!(py_float(0.0), "0.0");
        assert_eq!(py_float(1.0), "1.0");
        assert_eq!(
            py_str("model.layers.0.mlp.up_proj.weight"),
            "\"model.layers.0.mlp.up_proj.weight\""
        );
        assert_eq!(
            trainable_block(&["a", "b"]),
            "TRAINABLE = {\n    \"a\",\n    \"b\",\n}\n"
        );
    }
}
