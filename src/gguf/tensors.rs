//! Tensor names (llama.cpp → Hugging Face) and llama.cpp's q/k row permutation.

use anyhow::{bail, Result};
use candle_core::Tensor;

/// The Hugging Face name of a llama.cpp tensor name (`blk.3.attn_q.weight` →
/// `model.layers.3.self_attn.q_proj.weight`); `None` for names without an equivalent.
pub fn hf_name(gguf_name: &str) -> Option<String> {
    let (stem, suffix) = gguf_name.rsplit_once('.')?;
    if !matches!(suffix, "weight" | "bias") {
        return None;
    }
    let mapped = match stem {
        "token_embd" => "model.embed_tokens".to_string(),
        "output_norm" => "model.norm".to_string(),
        "output" => "lm_head".to_string(),
        _ => {
            let rest = stem.strip_prefix("blk.")?;
            let (layer, part) = rest.split_once('.')?;
            let layer: usize = layer.parse().ok()?;
            let module = match part {
                "attn_q" => "self_attn.q_proj",
                "attn_k" => "self_attn.k_proj",
                "attn_v" => "self_attn.v_proj",
                "attn_output" => "self_attn.o_proj",
                "attn_q_norm" => "self_attn.q_norm",
                "attn_k_norm" => "self_attn.k_norm",
                "ffn_gate" => "mlp.gate_proj",
                "ffn_up" => "mlp.up_proj",
                "ffn_down" => "mlp.down_proj",
                "attn_norm" => "input_layernorm",
                "ffn_norm" => "post_attention_layernorm",
                _ => return None,
            };
            format!("model.layers.{layer}.{module}")
        }
    };
    Some(format!("{mapped}.{suffix}"))
}

/// Which rotary permutation a tensor carries in a Llama GGUF: `Some(Q)` for `attn_q`, `Some(K)`
/// for `attn_k` (weights and biases alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotary {
    Q,
    K,
}

/// Whether a llama.cpp tensor name is a q or k projection.
pub fn rotary_kind(gguf_name: &str) -> Option<Rotary> {
    let stem = gguf_name.rsplit_once('.')?.0;
    if stem.ends_with(".attn_q") {
        Some(Rotary::Q)
    } else if stem.ends_with(".attn_k") {
        Some(Rotary::K)
    } else {
        None
    }
}

fn head_shape(t: &Tensor, n_head: usize, inner: [usize; 2]) -> Result<Vec<usize>> {
    let rows = t.dim(0)?;
    if n_head == 0 || rows % (2 * n_head) != 0 {
        bail!(
            "cannot split {rows} rows of shape {:?} into {n_head} heads of even size",
            t.dims()
        );
    }
    let mut shape = vec![n_head];
    shape.extend(
        inner
            .iter()
            .map(|&d| if d == 0 { rows / n_head / 2 } else { d }),
    );
    shape.extend_from_slice(&t.dims()[1..]);
    Ok(shape)
}

/// llama.cpp's permutation (`convert_hf_to_gguf.py`): rows viewed as
/// `(n_head, 2, head_dim/2, ...)`, axes 1 and 2 swapped. Turns Hugging Face's half-split rotary
/// layout into the interleaved one.
pub fn permute_rows(t: &Tensor, n_head: usize) -> Result<Tensor> {
    let shape = head_shape(t, n_head, [2, 0])?;
    Ok(t.reshape(shape)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(t.shape())?)
}

/// The exact inverse of [`permute_rows`]: rows viewed as `(n_head, head_dim/2, 2, ...)`, axes 1
/// and 2 swapped back.
pub fn unpermute_rows(t: &Tensor, n_head: usize) -> Result<Tensor> {
    let shape = head_shape(t, n_head, [0, 2])?;
    Ok(t.reshape(shape)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(t.shape())?)
}

/// Sort key that keeps a model's tensors in reading order: embeddings, layers 0, 1, ... 10, then
/// the final norm and head.
pub fn order_key(hf_name: &str) -> (u8, usize, String) {
    if let Some(rest) = hf_name.strip_prefix("model.layers.") {
        if let Some((layer, _)) = rest.split_once('.') {
            if let Ok(layer) = layer.parse() {
                return (1, layer, hf_name.to_string());
            }
        }
    }
    let group = if hf_name.starts_with("model.embed_tokens") {
        0
    } else {
        2
    };
    (group, 0, hf_name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn names_map() {
        assert_eq!(
            hf_name("blk.12.attn_output.weight").as_deref(),
            Some("model.layers.12.self_attn.o_proj.weight")
        );
        assert_eq!(
            hf_name("blk.0.attn_q.bias").as_deref(),
            Some("model.layers.0.self_attn.q_proj.bias")
        );
        assert_eq!(hf_name("output.weight").as_deref(), Some("lm_head.weight"));
        assert_eq!(hf_name("rope_freqs.weight"), None);
        assert_eq!(hf_name("blk.x.attn_q.weight"), None);
    }

    #[test]
    fn permutation_round_trips() {
        let t = Tensor::arange(0f32, 8.0 * 3.0, &Device::Cpu)
            .unwrap()
            .reshape((8, 3))
            .unwrap();
        let p = permute_rows(&t, 2).unwrap();
        // head 0 rows [0,1,2,3] → interleaved [0,2,1,3]
        let first: Vec<f32> = p.get(1).unwrap().to_vec1().unwrap();
        assert_eq!(first, vec![6.0, 7.0, 8.0]);
        let back = unpermute_rows(&p, 2).unwrap();
        assert_eq!(back.to_vec2::<f32>().unwrap(), t.to_vec2::<f32>().unwrap());
    }
}
