//! The AdamW update as one pass over f32 slices (weights, gradient, both moments), spread over
//! candle's thread pool; the arithmetic mirrors the tensor-op version in
//! `crate::train::optimizer` operation by operation.

/// Hyper-parameters of one update, with the bias corrections of its step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWStep {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// `1 − β₁ᵗ`.
    pub bias1: f64,
    /// `1 − β₂ᵗ`.
    pub bias2: f64,
    /// Factor applied to the gradient first (gradient clipping); 1 leaves it as it is.
    pub grad_scale: f64,
}

/// Elements per work unit handed to a thread.
const CHUNK: usize = 1 << 14;

struct Ptr(*mut f32);
unsafe impl Sync for Ptr {}
unsafe impl Send for Ptr {}

/// Updates `m`, `v` and `weights` in place from `grad` scaled by `step.grad_scale` (`g`):
/// `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
/// `w ← w·(1 − lr·wd) − lr · (m/bias1) / (√(v/bias2) + ε)`.
pub fn adamw_update(
    weights: &mut [f32],
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    step: &AdamWStep,
) {
    let n = weights.len();
    assert!(
        grad.len() == n && m.len() == n && v.len() == n,
        "adamw_update: slices of different lengths"
    );
    let k = Constants::new(step);
    if n < 4 * CHUNK || candle_core::utils::get_num_threads() <= 1 {
        k.apply(weights, grad, m, v);
        return;
    }
    let (w, mp, vp) = (
        Ptr(weights.as_mut_ptr()),
        Ptr(m.as_mut_ptr()),
        Ptr(v.as_mut_ptr()),
    );
    let (w, mp, vp) = (&w, &mp, &vp);
    candle_core::utils::barrier_pool().execute_chunked(n.div_ceil(CHUNK), |chunks| {
        for c in chunks {
            let start = c * CHUNK;
            let len = CHUNK.min(n - start);
            // SAFETY: chunks are disjoint ranges inside the slices, which outlive the call
            // (`execute_chunked` returns after every worker finished).
            let (ws, ms, vs) = unsafe {
                (
                    std::slice::from_raw_parts_mut(w.0.add(start), len),
                    std::slice::from_raw_parts_mut(mp.0.add(start), len),
                    std::slice::from_raw_parts_mut(vp.0.add(start), len),
                )
            };
            k.apply(ws, &grad[start..start + len], ms, vs);
        }
    });
}

/// The update's constants as the tensor version rounds them (candle's affine ops take f64
/// factors and apply them in f32; `t / x` is `t · (1/x)`).
#[derive(Clone, Copy)]
struct Constants {
    b1: f32,
    one_minus_b1: f32,
    b2: f32,
    one_minus_b2: f32,
    inv_bias1: f32,
    inv_bias2: f32,
    eps: f32,
    lr: f32,
    decay: Option<f32>,
    grad_scale: f32,
}

impl Constants {
    fn new(s: &AdamWStep) -> Self {
        Self {
            b1: s.beta1 as f32,
            one_minus_b1: (1.0 - s.beta1) as f32,
            b2: s.beta2 as f32,
            one_minus_b2: (1.0 - s.beta2) as f32,
            inv_bias1: (1.0 / s.bias1) as f32,
            inv_bias2: (1.0 / s.bias2) as f32,
            eps: s.eps as f32,
            lr: s.lr as f32,
            decay: (s.weight_decay > 0.0).then_some((1.0 - s.lr * s.weight_decay) as f32),
            grad_scale: s.grad_scale as f32,
        }
    }

    #[inline]
    fn apply(&self, w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        for (((w, &g), m), v) in w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            // As `tensor * scale` rounds it (candle's affine with no offset).
            let g = g * self.grad_scale;
            *m = *m * self.b1 + g * self.one_minus_b1;
            *v = *v * self.b2 + g * g * self.one_minus_b2;
            let denom = (*v * self.inv_bias2).sqrt() + self.eps;
            let step = (*m * self.inv_bias1) / denom;
            let decayed = match self.decay {
                Some(d) => *w * d,
                None => *w,
            };
            *w = decayed - step * self.lr;
        }
    }
}
