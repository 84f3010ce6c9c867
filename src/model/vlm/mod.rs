//! Vision-language (LLaVA) models: the vision side of the config, our differentiable CLIP
//! vision tower with the projector, image preprocessing and tiny random LLaVA models.

pub mod config;
pub mod preprocess;
pub mod tiny;
pub mod vision;

pub use config::{FeatureSelect, VisionConfig, VisionLanguageConfig};
pub use preprocess::ImageProcessor;
pub use vision::VisionPath;

/// The image placeholder token's text.
pub const IMAGE_TOKEN: &str = "<image>";
