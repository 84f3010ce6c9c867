//! Our differentiable CLIP vision transformer and the LLaVA projector, built from the same
//! trainable/frozen [`Param`]s as the decoder, so either can train.

use std::collections::BTreeSet;

use anyhow::Result;
use candle_core::{DType, Tensor, D};

use super::config::{FeatureSelect, VisionLanguageConfig};
use crate::model::decoder::WeightSource;
use crate::model::linear::{frozen_matmul, Linear, Param};
use crate::model::ops;

/// Layer norm over the last dimension, in f32, from ops that all have a backward.
fn layer_norm(x: &Tensor, weight: &Param, bias: &Param, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    let x = x.to_dtype(DType::F32)?;
    let mean = x.mean_keepdim(D::Minus1)?;
    let centered = x.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centered.broadcast_div(&(var + eps)?.sqrt()?)?;
    let w = weight.tensor().to_dtype(DType::F32)?;
    let b = bias.tensor().to_dtype(DType::F32)?;
    Ok(normed
        .broadcast_mul(&w)?
        .broadcast_add(&b)?
        .to_dtype(dtype)?)
}

/// `x · sigmoid(1.702 x)` (CLIP's activation).
fn quick_gelu(x: &Tensor) -> Result<Tensor> {
    let sig = ((x * -1.702)?.exp()? + 1.0)?.recip()?;
    Ok((x * sig)?)
}

/// A layer norm's weight and bias.
#[derive(Debug, Clone)]
struct Norm {
    weight: Param,
    bias: Param,
}

impl Norm {
    fn load(src: &mut WeightSource, prefix: &str, dim: usize) -> Result<Self> {
        Ok(Self {
            weight: src.param(&format!("{prefix}.weight"), &[dim])?,
            bias: src.param(&format!("{prefix}.bias"), &[dim])?,
        })
    }

    fn forward(&self, x: &Tensor, eps: f64) -> Result<Tensor> {
        layer_norm(x, &self.weight, &self.bias, eps)
    }

    fn map(&self, f: &mut dyn FnMut(&Param) -> Result<Param>) -> Result<Self> {
        Ok(Self {
            weight: f(&self.weight)?,
            bias: f(&self.bias)?,
        })
    }
}

fn map_linear(l: &Linear, f: &mut dyn FnMut(&Param) -> Result<Param>) -> Result<Linear> {
    Ok(Linear {
        weight: f(&l.weight)?,
        bias: l.bias.as_ref().map(&mut *f).transpose()?,
    })
}

/// One CLIP encoder layer.
#[derive(Debug, Clone)]
struct EncoderLayer {
    norm1: Norm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    norm2: Norm,
    fc1: Linear,
    fc2: Linear,
}

/// The CLIP vision transformer (`vision_tower.vision_model`), up to the feature layer, then
/// the projector (`multi_modal_projector.linear_1`, GELU, `linear_2`).
#[derive(Debug, Clone)]
pub struct VisionPath {
    config: VisionLanguageConfig,
    patch_embedding: Param,
    class_embedding: Param,
    position_embedding: Param,
    pre_norm: Norm,
    layers: Vec<EncoderLayer>,
    linear_1: Linear,
    linear_2: Linear,
}

/// Prefix of the vision tower's tensors in a LLaVA checkpoint.
pub const VISION_PREFIX: &str = "vision_tower.vision_model";
/// Prefix of the projector's tensors.
pub const PROJECTOR_PREFIX: &str = "multi_modal_projector";

impl VisionPath {
    /// Loads the tensors the forward uses. Layers past the feature layer and `post_layernorm`
    /// never reach the language model; their names are returned so the caller can keep them
    /// frozen.
    pub fn load(
        config: &VisionLanguageConfig,
        text_hidden: usize,
        src: &mut WeightSource,
    ) -> Result<(Self, BTreeSet<String>)> {
        let vc = &config.vision;
        let d = vc.hidden_size;
        let p = vc.patch_size;
        let v = VISION_PREFIX;
        let patch_embedding = src.param(
            &format!("{v}.embeddings.patch_embedding.weight"),
            &[d, vc.num_channels, p, p],
        )?;
        let class_embedding = src.param(&format!("{v}.embeddings.class_embedding"), &[d])?;
        let position_embedding = src.param(
            &format!("{v}.embeddings.position_embedding.weight"),
            &[vc.num_patches() + 1, d],
        )?;
        let pre_norm = Norm::load(src, &format!("{v}.pre_layrnorm"), d)?;
        let used = config.feature_index();
        let mut layers = Vec::with_capacity(used);
        for i in 0..used {
            let l = format!("{v}.encoder.layers.{i}");
            let i_dim = vc.intermediate_size;
            layers.push(EncoderLayer {
                norm1: Norm::load(src, &format!("{l}.layer_norm1"), d)?,
                q: src.linear(&format!("{l}.self_attn.q_proj"), d, d, true)?,
                k: src.linear(&format!("{l}.self_attn.k_proj"), d, d, true)?,
                v: src.linear(&format!("{l}.self_attn.v_proj"), d, d, true)?,
                out: src.linear(&format!("{l}.self_attn.out_proj"), d, d, true)?,
                norm2: Norm::load(src, &format!("{l}.layer_norm2"), d)?,
                fc1: src.linear(&format!("{l}.mlp.fc1"), d, i_dim, true)?,
                fc2: src.linear(&format!("{l}.mlp.fc2"), i_dim, d, true)?,
            });
        }
        let mut unused = BTreeSet::new();
        for i in used..vc.num_hidden_layers {
            let l = format!("{v}.encoder.layers.{i}");
            for part in [
                "layer_norm1",
                "layer_norm2",
                "self_attn.q_proj",
                "self_attn.k_proj",
                "self_attn.v_proj",
                "self_attn.out_proj",
                "mlp.fc1",
                "mlp.fc2",
            ] {
                unused.insert(format!("{l}.{part}.weight"));
                unused.insert(format!("{l}.{part}.bias"));
            }
        }
        unused.insert(format!("{v}.post_layernorm.weight"));
        unused.insert(format!("{v}.post_layernorm.bias"));
        let pr = PROJECTOR_PREFIX;
        let linear_1 = src.linear(&format!("{pr}.linear_1"), d, text_hidden, true)?;
        let linear_2 = src.linear(&format!("{pr}.linear_2"), text_hidden, text_hidden, true)?;
        Ok((
            Self {
                config: config.clone(),
                patch_embedding,
                class_embedding,
                position_embedding,
                pre_norm,
                layers,
                linear_1,
                linear_2,
            },
            unused,
        ))
    }

    /// The same path with every parameter passed through `f`.
    pub fn map(&self, f: &mut dyn FnMut(&Param) -> Result<Param>) -> Result<Self> {
        let layers = self
            .layers
            .iter()
            .map(|l| {
                Ok(EncoderLayer {
                    norm1: l.norm1.map(f)?,
                    q: map_linear(&l.q, f)?,
                    k: map_linear(&l.k, f)?,
                    v: map_linear(&l.v, f)?,
                    out: map_linear(&l.out, f)?,
                    norm2: l.norm2.map(f)?,
                    fc1: map_linear(&l.fc1, f)?,
                    fc2: map_linear(&l.fc2, f)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            config: self.config.clone(),
            patch_embedding: f(&self.patch_embedding)?,
            class_embedding: f(&self.class_embedding)?,
            position_embedding: f(&self.position_embedding)?,
            pre_norm: self.pre_norm.map(f)?,
            layers,
            linear_1: map_linear(&self.linear_1, f)?,
            linear_2: map_linear(&self.linear_2, f)?,
        })
    }

    /// The configuration this path was built from.
    pub fn config(&self) -> &VisionLanguageConfig {
        &self.config
    }

    /// Vision-tower hidden states at the feature layer, `(B, P+1, D)` (CLS first), from pixel
    /// values `(B, C, H, W)`.
    pub fn features(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let vc = &self.config.vision;
        let (b, c, h, w) = pixel_values.dims4()?;
        let p = vc.patch_size;
        anyhow::ensure!(
            c == vc.num_channels && h == vc.image_size && w == vc.image_size,
            "pixel values are {c}×{h}×{w} but the vision tower takes {}×{}×{}",
            vc.num_channels,
            vc.image_size,
            vc.image_size
        );
        let (gh, gw) = (h / p, w / p);
        let dtype = self.patch_embedding.tensor().dtype();
        // Non-overlapping patches flattened in (channel, row, column) order: the conv kernel's.
        let patches = pixel_values
            .to_dtype(dtype)?
            .reshape((b, c, gh, p, gw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b * gh * gw, c * p * p))?;
        let kernel = self
            .patch_embedding
            .tensor()
            .reshape((vc.hidden_size, c * p * p))?;
        let embeds = match &self.patch_embedding {
            Param::Trainable(_) => patches.matmul(&kernel.t()?)?,
            Param::Frozen(_) => frozen_matmul(&patches, &kernel)?,
        };
        let embeds = embeds.reshape((b, gh * gw, vc.hidden_size))?;
        let class = self
            .class_embedding
            .tensor()
            .reshape((1, 1, vc.hidden_size))?
            .broadcast_as((b, 1, vc.hidden_size))?;
        let x = Tensor::cat(&[&class, &embeds], 1)?;
        let x = x.broadcast_add(self.position_embedding.tensor())?;
        let mut x = self.pre_norm.forward(&x, vc.layer_norm_eps)?;
        for layer in &self.layers {
            x = self.layer_forward(layer, &x)?;
        }
        Ok(x)
    }

    fn layer_forward(&self, layer: &EncoderLayer, x: &Tensor) -> Result<Tensor> {
        let vc = &self.config.vision;
        let eps = vc.layer_norm_eps;
        let (b, t, d) = x.dims3()?;
        let heads = vc.num_attention_heads;
        let hd = vc.head_dim();
        let split = |y: Tensor| -> Result<Tensor> {
            Ok(y.reshape((b, t, heads, hd))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let h = layer.norm1.forward(x, eps)?;
        let q = split(layer.q.forward(&h)?)?;
        let k = split(layer.k.forward(&h)?)?;
        let v = split(layer.v.forward(&h)?)?;
        let scores = (q.matmul(&k.t()?)? * (hd as f64).powf(-0.5))?;
        let probs = ops::softmax_last_dim(&scores)?;
        let attn = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, t, d))?;
        let x = (x + layer.out.forward(&attn)?)?;
        let h = layer.norm2.forward(&x, eps)?;
        let h = layer.fc2.forward(&quick_gelu(&layer.fc1.forward(&h)?)?)?;
        Ok((x + h)?)
    }

    /// Image embeddings in the language model's space, `(B, N, H)` with `N` image tokens per
    /// image (CLS dropped with the `default` strategy).
    pub fn image_embeddings(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let features = self.features(pixel_values)?;
        let features = match self.config.select {
            FeatureSelect::Default => features.narrow(1, 1, features.dim(1)? - 1)?,
            FeatureSelect::Full => features,
        };
        let h = self.linear_1.forward(&features)?.gelu_erf()?;
        self.linear_2.forward(&h)
    }
}
