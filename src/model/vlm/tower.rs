//! Our differentiable vision transformers: CLIP (LLaVA-1.5, LLaVA-NeXT) and SigLIP
//! (LLaVA-OneVision), up to the feature layer, from the same trainable/frozen [`Param`]s as the
//! decoder.

use std::collections::BTreeSet;

use anyhow::{ensure, Result};
use candle_core::{DType, Tensor, D};

use super::config::{TowerKind, VisionConfig};
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
pub(crate) struct Norm {
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

/// `l` with every parameter passed through `f`.
pub(crate) fn map_linear(l: &Linear, f: &mut dyn FnMut(&Param) -> Result<Param>) -> Result<Linear> {
    l.map(f)
}

/// One encoder layer (the same in CLIP and SigLIP but for the activation).
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

/// Sub-modules of one encoder layer, for [`VisionTower::load`]'s unused-name list.
const LAYER_PARTS: [&str; 8] = [
    "layer_norm1",
    "layer_norm2",
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.out_proj",
    "mlp.fc1",
    "mlp.fc2",
];

/// A CLIP or SigLIP vision transformer up to the feature layer.
#[derive(Debug, Clone)]
pub struct VisionTower {
    config: VisionConfig,
    patch_embedding: Param,
    /// SigLIP's patch embedding has a bias.
    patch_bias: Option<Param>,
    /// CLIP's class token.
    class_embedding: Option<Param>,
    position_embedding: Param,
    /// CLIP's `pre_layrnorm`.
    pre_norm: Option<Norm>,
    layers: Vec<EncoderLayer>,
}

impl VisionTower {
    /// Loads the tower under `prefix` (no trailing dot) with its first `used` layers. The names
    /// of tensors that never reach the features (later layers, `post_layernorm`, SigLIP's
    /// pooling head) are returned so the caller keeps them frozen.
    pub fn load(
        config: &VisionConfig,
        prefix: &str,
        used: usize,
        src: &mut WeightSource,
    ) -> Result<(Self, BTreeSet<String>)> {
        let vc = config;
        let d = vc.hidden_size;
        let p = vc.patch_size;
        let v = prefix;
        let clip = vc.tower == TowerKind::Clip;
        let patch_embedding = src.param(
            &format!("{v}.embeddings.patch_embedding.weight"),
            &[d, vc.num_channels, p, p],
        )?;
        let patch_bias = (!clip)
            .then(|| src.param(&format!("{v}.embeddings.patch_embedding.bias"), &[d]))
            .transpose()?;
        let class_embedding = clip
            .then(|| src.param(&format!("{v}.embeddings.class_embedding"), &[d]))
            .transpose()?;
        let position_embedding = src.param(
            &format!("{v}.embeddings.position_embedding.weight"),
            &[vc.num_patches() + usize::from(clip), d],
        )?;
        let pre_norm = clip
            .then(|| Norm::load(src, &format!("{v}.pre_layrnorm"), d))
            .transpose()?;
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
            for part in LAYER_PARTS {
                unused.insert(format!("{v}.encoder.layers.{i}.{part}.weight"));
                unused.insert(format!("{v}.encoder.layers.{i}.{part}.bias"));
            }
        }
        unused.insert(format!("{v}.post_layernorm.weight"));
        unused.insert(format!("{v}.post_layernorm.bias"));
        let head = format!("{v}.head.");
        unused.extend(
            src.store_names()
                .filter(|n| n.starts_with(&head))
                .map(String::from),
        );
        Ok((
            Self {
                config: vc.clone(),
                patch_embedding,
                patch_bias,
                class_embedding,
                position_embedding,
                pre_norm,
                layers,
            },
            unused,
        ))
    }

    /// The same tower with every parameter passed through `f`.
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
            patch_bias: self.patch_bias.as_ref().map(&mut *f).transpose()?,
            class_embedding: self.class_embedding.as_ref().map(&mut *f).transpose()?,
            position_embedding: f(&self.position_embedding)?,
            pre_norm: self.pre_norm.as_ref().map(|n| n.map(f)).transpose()?,
            layers,
        })
    }

    /// Hidden states at the feature layer, `(B, P, D)` (CLIP: `P+1` with the class token
    /// first), from pixel values `(B, C, H, W)`.
    pub fn features(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let vc = &self.config;
        let (b, c, h, w) = pixel_values.dims4()?;
        let p = vc.patch_size;
        ensure!(
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
        let embeds = match &self.patch_bias {
            Some(bias) => embeds.broadcast_add(bias.tensor())?,
            None => embeds,
        };
        let embeds = embeds.reshape((b, gh * gw, vc.hidden_size))?;
        let x = match &self.class_embedding {
            Some(class) => {
                let class = class
                    .tensor()
                    .reshape((1, 1, vc.hidden_size))?
                    .broadcast_as((b, 1, vc.hidden_size))?;
                Tensor::cat(&[&class, &embeds], 1)?
            }
            None => embeds,
        };
        let x = x.broadcast_add(self.position_embedding.tensor())?;
        let mut x = match &self.pre_norm {
            Some(norm) => norm.forward(&x, vc.layer_norm_eps)?,
            None => x,
        };
        for layer in &self.layers {
            x = self.layer_forward(layer, &x)?;
        }
        Ok(x)
    }

    fn layer_forward(&self, layer: &EncoderLayer, x: &Tensor) -> Result<Tensor> {
        let vc = &self.config;
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
        let h = layer.fc1.forward(&layer.norm2.forward(&x, eps)?)?;
        let h = match vc.tower {
            TowerKind::Clip => quick_gelu(&h)?,
            TowerKind::Siglip => h.gelu()?,
            TowerKind::QwenVit => anyhow::bail!("Qwen2.5-VL's blocks are not CLIP-style layers"),
        };
        Ok((x + layer.fc2.forward(&h)?)?)
    }
}
