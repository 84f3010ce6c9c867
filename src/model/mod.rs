//! Models: where they come from, their configuration, weights, module map and the trainable decoder.

pub mod chat_template;
pub mod config;
pub mod decoder;
pub mod fused;
pub mod generate;
pub mod grad_sink;
pub mod linear;
pub mod lora;
pub mod module_map;
pub mod names;
pub mod ops;
mod param_kind;
mod precomputed;
pub mod progress;
pub mod source;
pub mod tiny;
pub mod tokenizer;
pub mod vlm;
pub mod weights;

pub use config::{Architecture, ModelConfig};
pub use decoder::{Decoder, KvCache};
pub use module_map::{ModuleMap, ParamKind};
pub use source::ModelFiles;
pub use tokenizer::ModelTokenizer;
pub use weights::WeightStore;

use std::collections::HashSet;

use anyhow::Result;
use candle_core::{DType, Device};

/// A model's files opened: configuration, memory-mapped weights and tokenizer.
pub struct Model {
    pub files: ModelFiles,
    pub config: ModelConfig,
    pub weights: WeightStore,
    pub tokenizer: ModelTokenizer,
    /// The LoRA adapter folded into `weights`, when the model was opened from an adapter.
    pub adapter: Option<lora::open::AdapterInfo>,
}

impl Model {
    /// Opens a model named by a directory or hub id; nothing is loaded into memory yet.
    /// A PEFT LoRA adapter directory opens as its base model with the adapter folded in
    /// (see [`Model::open_adapter`]).
    pub fn open(spec: &str) -> Result<Self> {
        if lora::peft::is_adapter_dir(std::path::Path::new(spec)) {
            return Self::open_adapter(std::path::Path::new(spec), None);
        }
        let files = source::resolve(spec)?;
        let config = ModelConfig::from_file(&files.config)?;
        for warning in &config.warnings {
            tracing::warn!("{warning}");
        }
        let weights = WeightStore::open(&files.weights)?;
        let mut tokenizer = ModelTokenizer::load(&files)?;
        tokenizer.images = vlm::ImageInputs::for_model(&config, &files)?;
        Ok(Self {
            files,
            config,
            weights,
            tokenizer,
            adapter: None,
        })
    }

    /// The module map of every parameter in the weight files.
    pub fn module_map(&self) -> ModuleMap {
        ModuleMap::from_store_for(&self.weights, &self.config)
    }

    /// The image preprocessing of a vision-language model (`preprocessor_config.json`, else
    /// CLIP defaults at the vision tower's image size); `None` for a text-only model.
    pub fn image_processor(&self) -> Result<Option<vlm::ImageProcessor>> {
        Ok(self.tokenizer.images.as_ref().map(|i| i.processor.clone()))
    }

    /// Builds the decoder with fresh LoRA adapters on the modules of `plan` (base frozen).
    pub fn lora_decoder(
        &self,
        plan: &lora::LoraPlan,
        dtype: DType,
        device: &Device,
    ) -> Result<Decoder> {
        Decoder::load_with_lora(
            &self.config,
            &self.weights,
            &HashSet::new(),
            Some(plan),
            dtype,
            device,
        )
    }

    /// Builds the decoder with `trainable` parameters as `Var`s.
    pub fn decoder(
        &self,
        trainable: &HashSet<String>,
        dtype: DType,
        device: &Device,
    ) -> Result<Decoder> {
        Decoder::load(&self.config, &self.weights, trainable, dtype, device)
    }
}
