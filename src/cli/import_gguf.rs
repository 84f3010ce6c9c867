//! `tunescope import-gguf`: convert a llama.cpp GGUF file into a Hugging Face model directory.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use candle_core::DType;
use clap::Args;

use crate::gguf::{import_gguf, ImportOptions, SHARD_BYTES};
use crate::util::format::group_digits;

#[derive(Debug, Args)]
pub struct ImportGgufArgs {
    /// The GGUF file (llama.cpp format).
    file: PathBuf,
    /// Output model directory (written under a temporary name, then renamed into place).
    #[arg(long)]
    out: PathBuf,
    /// Storage dtype of the written weights: f32 or bf16 (f16 also accepted).
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Replace the output directory if it exists and is not empty.
    #[arg(long)]
    force: bool,
}

pub fn run(args: ImportGgufArgs) -> Result<()> {
    let dtype = match args.dtype.trim() {
        "f32" | "float32" => DType::F32,
        "bf16" | "bfloat16" => DType::BF16,
        "f16" | "float16" => DType::F16,
        other => bail!("unknown dtype `{other}`; expected f32 or bf16"),
    };
    let started = Instant::now();
    let report = import_gguf(
        &args.file,
        &args.out,
        &ImportOptions {
            dtype,
            force: args.force,
            shard_bytes: SHARD_BYTES,
        },
    )?;
    let types: Vec<String> = report
        .source_types
        .iter()
        .map(|(t, n)| format!("{t}×{n}"))
        .collect();
    println!(
        "imported {} → {}",
        args.file.display(),
        report.out.display()
    );
    if let Some(name) = &report.name {
        println!("  name          {name}");
    }
    println!(
        "  architecture  {} ({} layers, vocab {}, {} embeddings)",
        report.architecture,
        report.num_layers,
        report.vocab_size,
        if report.tied_embeddings {
            "tied"
        } else {
            "untied"
        }
    );
    println!(
        "  tensors       {} ({}, {:.1}M parameters), from {}",
        report.tensors,
        group_digits(report.parameters),
        report.parameters as f64 / 1e6,
        types.join(", ")
    );
    println!(
        "  weights       {} as {}",
        report.weight_files.join(", "),
        args.dtype.trim()
    );
    println!("  tokenizer     {}", report.pre_tokenizer);
    println!(
        "  chat template {}",
        if report.has_chat_template {
            "yes"
        } else {
            "none"
        }
    );
    for note in &report.notes {
        println!("  note: {note}");
    }
    println!("  took          {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
