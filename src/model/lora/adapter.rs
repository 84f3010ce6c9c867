//! One LoRA adapter on a linear layer: `Δy = dropout(x)·Aᵀ·Bᵀ·scale`, with `A` `(r, in)`
//! initialised as PEFT does (Kaiming-uniform with a = √5, i.e. U(−1/√in, 1/√in)) and `B`
//! `(out, r)` zero, so a fresh adapter leaves the layer's output exactly as it was.

use std::sync::{Arc, Mutex};

use anyhow::Result;
use candle_core::{DType, Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::model::linear::Param;

/// Turns adapter dropout on for one training forward and seeds it: every mask is a function of
/// the run's seed, the optimizer step, the micro-batch and the order of the adapter calls, so a
/// resumed run draws the same masks. Off (probe, evaluation, generation) no dropout applies.
#[derive(Debug)]
pub struct DropoutSwitch {
    seed: u64,
    /// `(key of this forward, calls so far)` while a training forward runs.
    state: Mutex<Option<(u64, u64)>>,
}

impl DropoutSwitch {
    /// A switch, off, whose masks derive from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            state: Mutex::new(None),
        }
    }

    /// Turns dropout on for the forward of micro-batch `micro` of optimizer step `step`.
    pub fn begin(&self, step: usize, micro: usize) {
        let key = mix(mix(self.seed, step as u64), micro as u64);
        if let Ok(mut state) = self.state.lock() {
            *state = Some((key, 0));
        }
    }

    /// Turns dropout off.
    pub fn end(&self) {
        if let Ok(mut state) = self.state.lock() {
            *state = None;
        }
    }

    /// Where the masks stand: `(key of this forward, masks drawn so far)`, `None` when off.
    /// Activation checkpointing takes it before a layer's forward and puts it back while it
    /// recomputes that layer in backward, so the recomputed masks are the same.
    pub fn position(&self) -> Option<(u64, u64)> {
        self.state.lock().ok().and_then(|state| *state)
    }

    /// Sets where the masks stand (see [`DropoutSwitch::position`]).
    pub fn set_position(&self, position: Option<(u64, u64)>) {
        if let Ok(mut state) = self.state.lock() {
            *state = position;
        }
    }

    /// The seed of the next mask, or `None` when dropout is off.
    fn next_seed(&self) -> Option<u64> {
        let mut state = self.state.lock().ok()?;
        let (key, calls) = state.as_mut()?;
        *calls += 1;
        Some(mix(*key, *calls))
    }
}

/// SplitMix64 of `a` combined with `b`: a well-spread seed from two numbers.
pub(crate) fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A stable seed for the adapter of `module` (FNV-1a of its name, mixed with `seed`).
pub(crate) fn module_seed(seed: u64, module: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for byte in module.bytes() {
        h = (h ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    mix(seed, h)
}

/// The low-rank update of one linear layer.
#[derive(Debug, Clone)]
pub struct LoraAdapter {
    /// `(r, in)`.
    pub a: Param,
    /// `(out, r)`.
    pub b: Param,
    /// `alpha / r` (or `alpha / √r` with rsLoRA).
    pub scale: f64,
    /// Dropout probability on the adapter's input while training.
    pub dropout: f32,
    /// The decoder's training switch; `None` in a frozen copy (no dropout ever).
    pub switch: Option<Arc<DropoutSwitch>>,
}

impl LoraAdapter {
    /// A fresh trainable adapter: `A` seeded Kaiming-uniform, `B` zero; returns the `Var`s too.
    pub fn init(
        shape: (usize, usize),
        r: usize,
        seed: u64,
        dtype: DType,
        device: &Device,
    ) -> Result<(Var, Var)> {
        let (out_dim, in_dim) = shape;
        let bound = 1.0 / (in_dim as f32).sqrt();
        let mut rng = StdRng::seed_from_u64(seed);
        let values: Vec<f32> = (0..r * in_dim)
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        let a = Tensor::from_vec(values, (r, in_dim), device)?.to_dtype(dtype)?;
        let b = Tensor::zeros((out_dim, r), dtype, device)?;
        Ok((Var::from_tensor(&a)?, Var::from_tensor(&b)?))
    }

    /// `dropout(x)·Aᵀ·Bᵀ·scale` for `x` of shape `(rows, in)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let seed = match &self.switch {
            Some(switch) if self.dropout > 0.0 => switch.next_seed(),
            _ => None,
        };
        let x = match seed {
            Some(seed) => dropout(x, self.dropout, seed)?,
            None => x.clone(),
        };
        let h = x.matmul(&self.a.tensor().t()?)?;
        let y = h.matmul(&self.b.tensor().t()?)?;
        Ok((y * self.scale)?)
    }

    /// `scale·B·A` `(out, in)` in f32: what folding adds to the base weight.
    pub fn delta_f32(&self) -> Result<Tensor> {
        let a = self.a.tensor().to_dtype(DType::F32)?;
        let b = self.b.tensor().to_dtype(DType::F32)?;
        Ok((b.matmul(&a)? * self.scale)?)
    }
}

/// Inverted dropout as `torch.nn.Dropout`: zeroes each element with probability `p` and scales
/// the rest by `1 / (1 - p)`; the mask is drawn from `seed` on the host.
fn dropout(x: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
    let mut rng = StdRng::seed_from_u64(seed);
    let keep = 1.0 / (1.0 - p);
    let mask: Vec<f32> = (0..x.elem_count())
        .map(|_| if rng.random::<f32>() < p { 0.0 } else { keep })
        .collect();
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    Ok((x * mask)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropout_keeps_the_expected_share_and_scales_it() {
        let x = Tensor::ones((100, 100), DType::F32, &Device::Cpu).unwrap();
        let y = dropout(&x, 0.25, 7).unwrap();
        let values = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let zeros = values.iter().filter(|v| **v == 0.0).count();
        assert!((2000..3000).contains(&zeros), "{zeros} zeros of 10000");
        assert!(values
            .iter()
            .all(|v| *v == 0.0 || (*v - 1.0 / 0.75).abs() < 1e-6));
        // Same seed, same mask.
        let again = dropout(&x, 0.25, 7).unwrap();
        assert_eq!(
            again.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            values
        );
    }

    #[test]
    fn switch_seeds_differ_per_call_and_repeat_per_step() {
        let switch = DropoutSwitch::new(3);
        assert_eq!(switch.next_seed(), None);
        switch.begin(5, 1);
        let first = (switch.next_seed(), switch.next_seed());
        assert_ne!(first.0, first.1);
        switch.begin(5, 1);
        assert_eq!((switch.next_seed(), switch.next_seed()), first);
        switch.end();
        assert_eq!(switch.next_seed(), None);
    }

    #[test]
    fn init_bounds_follow_kaiming_uniform_with_a_sqrt5() {
        let (a, b) = LoraAdapter::init((6, 16), 4, 1, DType::F32, &Device::Cpu).unwrap();
        let values = a
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(values.iter().all(|v| v.abs() < 0.25));
        assert!(values.iter().any(|v| v.abs() > 0.15));
        assert_eq!(b.as_tensor().dims(), &[6, 4]);
        assert_eq!(
            b.as_tensor().sum_all().unwrap().to_scalar::<f32>().unwrap(),
            0.0
        );
    }
}
