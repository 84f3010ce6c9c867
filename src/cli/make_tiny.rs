//! `tunescope make-tiny`: write a small random model.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};

use crate::model::tiny::{make_tiny, TinySpec};
use crate::model::vlm::tiny::{make_tiny_llava, TinyLlavaSpec};
use crate::model::vlm::tiny_qwen::{make_tiny_qwen_vl, TinyQwenVlSpec};
use crate::model::Architecture;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ArchArg {
    Llama,
    Qwen2,
    /// Qwen3: q_norm/k_norm on each head.
    Qwen3,
    /// SmolLM3: every other layer without rotary embeddings.
    Smollm3,
    /// Gemma 2: alternating local/global layers, (1 + w) norms, GELU-tanh, softcapping.
    Gemma2,
    /// Gemma 3 (text): as Gemma 2 without softcapping, with q/k norms and a local rope base.
    Gemma3,
    /// Phi-3: fused qkv_proj and gate_up_proj.
    Phi3,
    /// LLaVA: a CLIP vision tower, a projector and a tiny Llama (32×32 images, 8×8 patches).
    Llava,
    /// LLaVA-NeXT: LLaVA with anyres tiling (1×2, 2×1, 2×2 tiles) and image_newline.
    #[value(alias = "llava_next")]
    LlavaNext,
    /// LLaVA-OneVision: a SigLIP tower, a tiny Qwen2, anyres_max_2 and image_newline.
    #[value(alias = "llava_onevision")]
    LlavaOnevision,
    /// Qwen2.5-VL: a window-attention ViT with a 2×2 merger, a tiny Qwen2 with M-RoPE.
    #[value(name = "qwen2_5_vl", alias = "qwen2.5-vl")]
    Qwen25Vl,
}

#[derive(Debug, Args)]
pub struct MakeTinyArgs {
    /// Architecture of the generated model.
    #[arg(long, value_enum, default_value = "llama")]
    arch: ArchArg,
    /// Output directory (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Number of decoder layers.
    #[arg(long, default_value_t = 2)]
    layers: usize,
    /// Hidden size.
    #[arg(long, default_value_t = 64)]
    hidden: usize,
    /// MLP intermediate size.
    #[arg(long, default_value_t = 128)]
    intermediate: usize,
    /// Attention heads.
    #[arg(long, default_value_t = 4)]
    heads: usize,
    /// Key/value heads (fewer than heads gives grouped-query attention).
    #[arg(long, default_value_t = 2)]
    kv_heads: usize,
    /// Tie the LM head to the embeddings (default: qwen2 and smollm3 tied, others untied).
    #[arg(long)]
    tied: Option<bool>,
}

pub fn run(args: MakeTinyArgs) -> Result<()> {
    let arch = match args.arch {
        ArchArg::Llama | ArchArg::Llava | ArchArg::LlavaNext => Architecture::Llama,
        ArchArg::LlavaOnevision | ArchArg::Qwen25Vl => Architecture::Qwen2,
        ArchArg::Qwen2 => Architecture::Qwen2,
        ArchArg::Qwen3 => Architecture::Qwen3,
        ArchArg::Smollm3 => Architecture::SmolLM3,
        ArchArg::Gemma2 | ArchArg::Gemma3 => Architecture::Gemma,
        ArchArg::Phi3 => Architecture::Phi3,
    };
    anyhow::ensure!(
        args.heads > 0
            && args.kv_heads > 0
            && args.heads.is_multiple_of(args.kv_heads)
            && args.hidden.is_multiple_of(args.heads),
        "--heads must divide --hidden and be a multiple of --kv-heads"
    );
    let spec = TinySpec {
        hidden_size: args.hidden,
        intermediate_size: args.intermediate,
        num_layers: args.layers,
        num_heads: args.heads,
        num_kv_heads: args.kv_heads,
        tie_embeddings: args.tied,
        gemma2: matches!(args.arch, ArchArg::Gemma2),
        ..TinySpec::new(arch, args.seed)
    };
    if matches!(args.arch, ArchArg::Qwen25Vl) {
        let spec = TinyQwenVlSpec {
            text: spec,
            ..TinyQwenVlSpec::new(args.seed)
        };
        make_tiny_qwen_vl(&spec, &args.out)?;
        println!("wrote qwen2_5_vl model to {}", args.out.display());
        return Ok(());
    }
    let llava = match args.arch {
        ArchArg::Llava => Some(TinyLlavaSpec::new(args.seed)),
        ArchArg::LlavaNext => Some(TinyLlavaSpec::next(args.seed)),
        ArchArg::LlavaOnevision => Some(TinyLlavaSpec::onevision(args.seed)),
        _ => None,
    };
    if let Some(base) = llava {
        let spec = TinyLlavaSpec { text: spec, ..base };
        make_tiny_llava(&spec, &args.out)?;
        println!("wrote {} model to {}", spec.family, args.out.display());
        return Ok(());
    }
    make_tiny(&spec, &args.out)?;
    let model_type = if spec.gemma2 {
        "gemma2"
    } else {
        arch.model_type()
    };
    println!("wrote {model_type} model to {}", args.out.display());
    Ok(())
}
