//! `tunescope generate`: quick sanity check of a model by generating from a prompt.

use std::io::Write;

use anyhow::Result;
use clap::Args;

use crate::model::generate::{generate_with_image, GenerateOptions};
use crate::model::tokenizer::ChatMessage;
use crate::model::vlm::IMAGE_TOKEN;
use crate::model::Model;
use crate::util::device::{parse_device, parse_dtype};

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Model directory or hub id.
    model: String,
    /// The user message.
    #[arg(long)]
    prompt: String,
    /// An image for a vision-language (LLaVA) model; `<image>` is put before the prompt unless
    /// the prompt already holds it.
    #[arg(long)]
    image: Option<std::path::PathBuf>,
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
    if args.image.is_some() && !prompt.contains(IMAGE_TOKEN) {
        prompt = format!("{IMAGE_TOKEN}\n{prompt}");
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
    let pixel_values = match (&model.tokenizer.images, &args.image) {
        (None, Some(_)) => anyhow::bail!(
            "--image needs a vision-language model; {} is text-only",
            args.model
        ),
        (Some(images), image) => {
            let (ids, placeholders) = images.expand(&prompt_ids);
            prompt_ids = ids;
            match (image, placeholders) {
                (Some(path), 1) => {
                    let p = images.load_pixels(path)?;
                    let (c, h, w) = p.dims;
                    Some(candle_core::Tensor::from_slice(
                        &p.values,
                        (1, c, h, w),
                        &device,
                    )?)
                }
                (None, 0) => None,
                (Some(_), n) => {
                    anyhow::bail!("the prompt must hold exactly one {IMAGE_TOKEN}, found {n}")
                }
                (None, _) => anyhow::bail!(
                    "the prompt holds {IMAGE_TOKEN}: pass the picture with --image PATH"
                ),
            }
        }
        (None, None) => None,
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
    generate_with_image(
        &decoder,
        &prompt_ids,
        pixel_values.as_ref(),
        &options,
        |token| {
            generated.push(token);
            let text = model.tokenizer.decode(&generated)?;
            if text.len() > printed && text.is_char_boundary(printed) {
                print!("{}", &text[printed..]);
                stdout.flush()?;
                printed = text.len();
            }
            Ok(())
        },
    )?;
    println!();
    Ok(())
}
