//! `tunescope generate`: quick sanity check of a model by generating from a prompt.

use std::io::Write;

use anyhow::Result;
use clap::Args;

use crate::model::generate::{generate_with_image, GenerateOptions};
use crate::model::tokenizer::ChatMessage;
use crate::model::vlm::IMAGE_TOKEN;
use crate::model::vlm::{ImageBatch, Pixels};
use crate::model::Model;
use crate::util::device::{parse_device, parse_dtype};

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Model directory or hub id.
    model: String,
    /// The user message.
    #[arg(long)]
    prompt: String,
    /// An image for a vision-language (LLaVA-family) model; repeat for several, one `<image>`
    /// in the prompt each (put before the prompt when it holds none).
    #[arg(long)]
    image: Vec<std::path::PathBuf>,
    /// Use the prompt as raw text, without the chat template.
    #[arg(long)]
    raw: bool,
    /// Maximum number of new tokens.
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// Sampling temperature; 0 decodes greedily.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Nucleus sampling threshold.
    #[arg(long)]
    top_p: Option<f64>,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Device: cpu, cuda:N or metal.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Compute dtype: f32 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
}

pub fn run(args: GenerateArgs) -> Result<()> {
    let device = parse_device(&args.device)?;
    let dtype = parse_dtype(&args.dtype)?;
    let model = Model::open(&args.model)?;
    let decoder = model.decoder(&Default::default(), dtype, &device)?;
    let mut prompt = args.prompt.clone();
    if !args.image.is_empty() && !prompt.contains(IMAGE_TOKEN) {
        prompt = format!("{}\n{prompt}", IMAGE_TOKEN.repeat(args.image.len()));
    }
    let text = if args.raw {
        prompt.clone()
    } else {
        let messages = [ChatMessage {
            role: "user".into(),
            content: prompt.clone(),
        }];
        match model.tokenizer.render_chat(&messages, true)? {
            Some(rendered) => rendered,
            None => {
                eprintln!("note: the model has no chat template; using the prompt as plain text");
                prompt.clone()
            }
        }
    };
    let mut prompt_ids = model.tokenizer.encode(&text)?;
    let images = match &model.tokenizer.images {
        None if !args.image.is_empty() => anyhow::bail!(
            "--image needs a vision-language model; {} is text-only",
            args.model
        ),
        None => None,
        Some(inputs) => {
            let paths: Vec<&std::path::Path> = args.image.iter().map(|p| p.as_path()).collect();
            let pixels = inputs.load_record_images(&paths)?;
            let refs: Vec<&Pixels> = pixels.iter().collect();
            let (ids, placeholders) = inputs.expand(&prompt_ids, &refs);
            if placeholders != pixels.len() {
                anyhow::bail!(
                    "the prompt holds {placeholders} {IMAGE_TOKEN} placeholder(s) but {} image(s) were given with --image; \
                     put one {IMAGE_TOKEN} where each picture belongs",
                    pixels.len()
                );
            }
            prompt_ids = ids;
            ImageBatch::from_pixels(&refs, &device)?
        }
    };
    let options = GenerateOptions {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        seed: args.seed,
        stop_ids: model.tokenizer.stop_ids.clone(),
    };
    let mut stdout = std::io::stdout();
    let mut generated: Vec<u32> = Vec::new();
    let mut printed = 0;
    generate_with_image(&decoder, &prompt_ids, images.as_ref(), &options, |token| {
        generated.push(token);
        let text = model.tokenizer.decode(&generated)?;
        if text.len() > printed && text.is_char_boundary(printed) {
            print!("{}", &text[printed..]);
            stdout.flush()?;
            printed = text.len();
        }
        Ok(())
    })?;
    println!();
    Ok(())
}
