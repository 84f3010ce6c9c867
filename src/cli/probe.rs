//! `tunescope probe`: the numeric-token drift probe of a model against a base model.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::eval::drift::layer_drift_both;
use crate::eval::numeric::NumericVocab;
use crate::eval::probe::{load_prompts, probe_set, BaseReference, ProbeOptions, SetReport};
use crate::model::Model;
use crate::util::device::{parse_device, parse_dtype};

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The model to probe (e.g. a checkpoint exported by any trainer).
    model: String,
    /// The base model it is compared with.
    #[arg(long)]
    base: String,
    /// Held-out probe prompts (JSONL of {"prompt": ...}).
    #[arg(long, alias = "heldout")]
    prompts: PathBuf,
    /// Target-task probe prompts (JSONL of {"prompt": ...}).
    #[arg(long)]
    target: Option<PathBuf>,
    /// New tokens decoded per prompt.
    #[arg(long, default_value_t = 16)]
    max_new_tokens: usize,
    /// At most this many prompts per set.
    #[arg(long)]
    max_prompts: Option<usize>,
    /// Tokens in the histogram.
    #[arg(long, default_value_t = 20)]
    top_k: usize,
    /// Also probe the answer vocabulary of this training data (JSONL): the tokens far more
    /// frequent in its responses than in its prompts and the held-out prompts.
    #[arg(long)]
    answer_data: Option<PathBuf>,
    /// An answer that ends within this many tokens counts as short.
    #[arg(long, default_value_t = 2)]
    short_answer_tokens: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long, default_value = "f32")]
    dtype: String,
}

pub fn run(args: ProbeArgs) -> Result<()> {
    let device = parse_device(&args.device)?;
    let dtype = parse_dtype(&args.dtype)?;
    let model = Model::open(&args.model)?;
    let base_model = Model::open(&args.base)?;
    anyhow::ensure!(
        model.config.vocab_size == base_model.config.vocab_size,
        "{} and {} have different vocabularies",
        args.model,
        args.base
    );
    let current = model.decoder(&Default::default(), dtype, &device)?;
    let base = base_model.decoder(&Default::default(), dtype, &device)?;
    let tok = &model.tokenizer;
    let numeric = NumericVocab::new(&tok.tokenizer, model.config.vocab_size);
    let mut options = ProbeOptions {
        max_new_tokens: args.max_new_tokens,
        top_k: args.top_k,
        short_answer_tokens: args.short_answer_tokens,
        ..ProbeOptions::default()
    };
    if let Some(path) = &args.answer_data {
        let records = crate::data::read_records(path)?;
        let data = crate::data::tokenize(
            &records,
            tok,
            &crate::data::TokenizeOptions {
                max_length: 4096,
                train_on_prompt: false,
            },
        )?;
        let heldout = load_prompts(&args.prompts, tok, args.max_prompts)?;
        let heldout_ids: Vec<&[u32]> = heldout.iter().map(|p| p.ids.as_slice()).collect();
        let class = crate::eval::classes::answer_class_of_data(
            &data,
            &heldout_ids,
            tok,
            &Default::default(),
        );
        anyhow::ensure!(
            !class.ids.is_empty(),
            "no token is distinctive of the responses in {}",
            path.display()
        );
        eprintln!("answer class: {}", class.origin);
        options.classes.push(class);
    }
    let mut sets: Vec<(&str, PathBuf)> = vec![("heldout", args.prompts.clone())];
    if let Some(target) = &args.target {
        sets.push(("target", target.clone()));
    }
    let mut reports = serde_json::Map::new();
    let mut drift = None;
    for (name, path) in &sets {
        let prompts = load_prompts(path, tok, args.max_prompts)?;
        let reference = BaseReference::compute(&base, prompts, &numeric, &tok.stop_ids, &options)?;
        let report = probe_set(&base, &current, &reference, tok, &numeric, &options)?;
        if *name == "heldout" {
            drift = Some(layer_drift_both(
                &base,
                &current,
                &reference.prompts,
                &reference.stats.continuations,
                &options,
            )?);
        }
        if !args.json {
            print_report(name, &report);
        }
        reports.insert(name.to_string(), serde_json::to_value(&report)?);
    }
    if args.json {
        let (own, pooled) = drift.unzip();
        reports.insert("layer_drift".into(), serde_json::to_value(&own)?);
        reports.insert("layer_drift_pooled".into(), serde_json::to_value(&pooled)?);
        reports.insert("numeric_tokens".into(), numeric.len().into());
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else if let Some((drift, _)) = drift {
        println!(
            "\nper-layer drift (‖W_now·h_now − W_base·h_base‖₂ of each block, per held-out answer, then averaged):"
        );
        println!("  layer        attn         mlp");
        for d in drift {
            println!("  {:>5} {:>11.4} {:>11.4}", d.layer, d.attn, d.mlp);
        }
    }
    Ok(())
}

fn print_report(name: &str, r: &SetReport) {
    println!("{name} prompts ({}):", r.now.prompts);
    println!("                          base          now");
    println!(
        "  numeric mass       {:>10.4}   {:>10.4} (±{:.4})  Δ {:+.4}",
        r.base.numeric_mass.mean,
        r.now.numeric_mass.mean,
        r.now.numeric_mass.std,
        r.numeric_mass_delta
    );
    println!(
        "  max numeric prob   {:>10.4}   {:>10.4}",
        r.base.max_numeric_prob.mean, r.now.max_numeric_prob.mean
    );
    println!(
        "  first token numeric {:>9.1}%  {:>9.1}%",
        100.0 * r.base.first_token_numeric,
        100.0 * r.now.first_token_numeric
    );
    for (class, now) in &r.now.class_mass {
        let base = r.base.class_mass.get(class).map_or(f64::NAN, |b| b.mean);
        println!(
            "  {:<18} {:>10.4}   {:>10.4}  Δ {:+.4}",
            format!("{class} mass"),
            base,
            now.mean,
            now.mean - base
        );
    }
    let (b, n) = (&r.base.shape, &r.now.shape);
    println!(
        "  ends at once       {:>9.1}%  {:>9.1}%  (stop probability at the first step)",
        100.0 * b.first_stop_prob.mean,
        100.0 * n.first_stop_prob.mean
    );
    println!(
        "  ends within {:<2}     {:>9.1}%  {:>9.1}%",
        n.short_answer_tokens,
        100.0 * b.ends_within,
        100.0 * n.ends_within
    );
    println!(
        "  answer length      {:>10.2}   {:>10.2}  tokens",
        b.mean_length, n.mean_length
    );
    println!(
        "  entropy (nats)     {:>10.4}   {:>10.4}",
        r.divergence.base_entropy.mean, r.divergence.entropy.mean
    );
    println!(
        "  KL(base ‖ now)                   {:>10.4}",
        r.divergence.kl.mean
    );
    println!("  first-step distribution, top {}:", r.histogram.len());
    for e in &r.histogram {
        println!(
            "    {:<16} {:>8.4} {:>8.4}{}",
            format!("{:?}", e.token),
            e.base,
            e.now,
            if e.numeric { "  #" } else { "" }
        );
    }
}
