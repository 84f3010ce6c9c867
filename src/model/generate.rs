//! Text generation with the KV cache: greedy or sampled (temperature, top-p) decoding.

use anyhow::Result;
use candle_core::Tensor;
use candle_transformers::generation::LogitsProcessor;

use super::decoder::Decoder;
use super::vlm::ImageBatch;

/// Decoding settings.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    /// 0 means greedy (arg-max) decoding.
    pub temperature: f64,
    pub top_p: Option<f64>,
    pub seed: u64,
    /// Generation stops after any of these ids (the stop id is reported, then generation ends).
    pub stop_ids: Vec<u32>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 16,
            temperature: 0.0,
            top_p: None,
            seed: 0,
            stop_ids: Vec::new(),
        }
    }
}

/// Generates up to `max_new_tokens` after `prompt`, calling `on_token` for each new token.
/// Returns the new tokens (including a final stop token, if one was produced).
pub fn generate(
    decoder: &Decoder,
    prompt: &[u32],
    options: &GenerateOptions,
    on_token: impl FnMut(u32) -> Result<()>,
) -> Result<Vec<u32>> {
    generate_with_image(decoder, prompt, None, options, on_token)
}

/// [`generate`] for a prompt whose image tokens take `images`.
pub fn generate_with_image(
    decoder: &Decoder,
    prompt: &[u32],
    images: Option<&ImageBatch>,
    options: &GenerateOptions,
    mut on_token: impl FnMut(u32) -> Result<()>,
) -> Result<Vec<u32>> {
    anyhow::ensure!(!prompt.is_empty(), "cannot generate from an empty prompt");
    let temperature = (options.temperature > 0.0).then_some(options.temperature);
    let mut sampler = LogitsProcessor::new(options.seed, temperature, options.top_p);
    let mut cache = decoder.new_cache_with_capacity(1, prompt.len() + options.max_new_tokens);
    let mut input = Tensor::new(prompt, decoder.device())?.unsqueeze(0)?;
    let mut out = Vec::new();
    let mut pixels = images;
    for _ in 0..options.max_new_tokens {
        let logits = decoder
            .forward_cached(&input, None, &mut cache, pixels.take())?
            .squeeze(0)?;
        // Greedy: the arg-max of the logits, without copying them out.
        let token = match temperature {
            None => logits.argmax(candle_core::D::Minus1)?.to_scalar::<u32>()?,
            Some(_) => sampler.sample(&logits)?,
        };
        out.push(token);
        on_token(token)?;
        if options.stop_ids.contains(&token) {
            break;
        }
        input = Tensor::new(&[token], decoder.device())?.unsqueeze(0)?;
    }
    Ok(out)
}
