//! Everything a run checks and loads before its run directory exists: the model, the
//! selection (or LoRA plan), the tokenized data and images, the probe prompts and tasks.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use anyhow::{Context, Result};

use super::monitor::MonitorInputs;
use crate::data::{self, TokenizeOptions};
use crate::model::lora::{self, LoraPlan};
use crate::model::{Decoder, Model};
use crate::recipe::Recipe;
use crate::run::{RunDir, RunLock};
use crate::select;
use crate::util::device::{parse_device, parse_dtype};

/// A recipe checked against its model, data, selection, probe and evaluation files, with
/// everything loaded: what setup can reject has been rejected, and nothing is written yet.
pub struct Prepared {
    pub(super) recipe: Recipe,
    pub(super) model: Model,
    pub(super) decoder: Decoder,
    pub(super) data: data::TokenizedData,
    pub(super) monitor: Option<MonitorInputs>,
    pub(super) trainable: usize,
    pub(super) total_params: usize,
    pub(super) lr_scales: BTreeMap<String, f64>,
    pub(super) lora: Option<LoraPlan>,
}

/// What [`check`] loads: all but the decoder.
struct Checked {
    model: Model,
    selection: HashSet<String>,
    data: data::TokenizedData,
    monitor: Option<MonitorInputs>,
    trainable: usize,
    total_params: usize,
    lr_scales: BTreeMap<String, f64>,
    lora: Option<LoraPlan>,
}

/// Runs every check of `recipe` that needs no weights in memory (model files, selection, data,
/// images, probe prompts and tasks), for a launcher that starts the trainer elsewhere.
pub fn check(recipe: &Recipe) -> Result<()> {
    load_checked(recipe).map(drop)
}

/// Loads and checks everything `recipe` needs before a run directory exists: the model and its
/// decoder, the selection (unknown names and empty selections fail), the data (and images), the
/// probe prompts and evaluation tasks.
pub fn prepare(recipe: &Recipe) -> Result<Prepared> {
    let checked = load_checked(recipe)?;
    let device = parse_device(&recipe.device)?;
    let dtype = parse_dtype(&recipe.dtype)?;
    let mut decoder = match &checked.lora {
        Some(plan) => checked.model.lora_decoder(plan, dtype, &device)?,
        None => checked.model.decoder(&checked.selection, dtype, &device)?,
    };
    decoder.set_activation_checkpointing(recipe.activation_checkpointing);
    if let Some(name) = decoder.row_masks().keys().next() {
        if recipe.optimizer.weight_decay > 0.0 {
            anyhow::bail!(
                "the selection trains only some parts of the fused tensor {name}: with weight decay {} \
                 AdamW would move the frozen rows too; set optimizer.weight_decay=0, or select every part",
                recipe.optimizer.weight_decay
            );
        }
    }
    Ok(Prepared {
        recipe: recipe.clone(),
        model: checked.model,
        decoder,
        data: checked.data,
        monitor: checked.monitor,
        trainable: checked.trainable,
        total_params: checked.total_params,
        lr_scales: checked.lr_scales,
        lora: checked.lora,
    })
}

impl Prepared {
    /// The recipe prepared.
    pub fn recipe(&self) -> &Recipe {
        &self.recipe
    }

    /// Creates the run directory (`dir`, or a new one under the recipe's `output_dir`), takes
    /// its lock and writes the recipe snapshot. A `dir` another live process writes to is
    /// refused before anything is written there.
    pub fn create_run(&self, dir: Option<&Path>) -> Result<(RunDir, RunLock)> {
        let run = match dir {
            Some(dir) => RunDir::open_or_init(dir)?,
            None => RunDir::create(Path::new(&self.recipe.output_dir), &self.recipe.name)?,
        };
        let lock = run.lock()?;
        run.write_recipe(&self.recipe)?;
        Ok((run, lock))
    }
}

fn load_checked(recipe: &Recipe) -> Result<Checked> {
    let model = Model::open(&recipe.model_spec()?)?;
    let map = model.module_map();
    let selection =
        select::resolve(&recipe.trainable, &map).context("in the recipe's `trainable` section")?;
    parse_device(&recipe.device)?;
    parse_dtype(&recipe.dtype)?;
    let data_path = recipe.data_path()?;
    let records = data::read_records(&data_path)?;
    let options = TokenizeOptions {
        max_length: recipe.max_length,
        train_on_prompt: recipe.train_on_prompt,
    };
    let image_tokens = match &model.tokenizer.images {
        Some(images) => Some(data::ImageTokens {
            id: images.image_token,
            count: images.tokens_per_tile(),
            per_record: data::image_token_counts(images, &records, &data_path)?,
        }),
        None => None,
    };
    let mut data =
        data::tokenize_with_images(&records, &model.tokenizer, &options, image_tokens.as_ref())?;
    if let Some(images) = &model.tokenizer.images {
        data::load_images(&mut data, images, &data_path)?;
    }
    let vision_side = selection
        .names
        .iter()
        .filter_map(|n| map.get(n))
        .any(|p| select::is_vision_side(p.kind));
    if vision_side && data.examples.iter().all(|e| e.pixel_values.is_empty()) {
        anyhow::bail!(
            "the selection trains vision-tower or projector tensors but no record of {} has an image \
             (add \"image\": \"path\" and an <image> placeholder to the records)",
            data_path.display()
        );
    }
    if !data.used_chat_template {
        tracing::info!(
            "the model has no chat template: prompts and responses are concatenated as plain text"
        );
    }
    if data.truncated > 0 {
        tracing::warn!(
            "{} examples were longer than max_length {} and were cut",
            data.truncated,
            recipe.max_length
        );
    }
    let mut monitor = MonitorInputs::load(recipe, &model.tokenizer)?;
    if let Some(inputs) = monitor.as_mut() {
        inputs.derive_answer_class(recipe, &data, &model.tokenizer);
    }
    let lr_scales = super::optimizer::lr_scales(&recipe.optimizer, &selection.names, &map)
        .context("in the recipe's `optimizer.lr_by_kind`")?;
    // With LoRA the selection names the linears that get adapters; the base stays frozen.
    let lora = recipe
        .lora
        .as_ref()
        .map(|spec| -> Result<LoraPlan> {
            Ok(LoraPlan {
                settings: spec.settings(),
                modules: lora::targets(&selection.names, &map)
                    .context("in the recipe's `trainable` section, with `lora:`")?,
                init_seed: spec.init_seed.unwrap_or(recipe.seed),
            })
        })
        .transpose()?;
    Ok(Checked {
        lr_scales,
        trainable: lora
            .as_ref()
            .map_or_else(|| selection.trainable_numel(&map), |plan| plan.numel(&map)),
        lora,
        total_params: map.total(),
        selection: selection.to_hash_set(),
        model,
        data,
        monitor,
    })
}
