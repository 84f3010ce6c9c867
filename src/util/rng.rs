//! Seeded random numbers for reproducible weights and shuffles.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A seeded generator with a normal sampler.
pub struct SeededRng {
    rng: StdRng,
}

impl SeededRng {
    /// A generator fully determined by `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// A standard normal sample (Box–Muller).
    pub fn normal(&mut self) -> f32 {
        let u1: f64 = self.rng.random::<f64>().max(f64::MIN_POSITIVE);
        let u2: f64 = self.rng.random::<f64>();
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }

    /// `n` samples from N(mean, std²).
    pub fn normal_vec(&mut self, n: usize, mean: f32, std: f32) -> Vec<f32> {
        (0..n).map(|_| mean + std * self.normal()).collect()
    }

    /// A uniform integer in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        self.rng.random_range(0..n)
    }

    /// The underlying generator.
    pub fn inner(&mut self) -> &mut StdRng {
        &mut self.rng
    }
}
