//! The fused CPU ops against their explicit compositions: forward values and gradients (candle
//! backward through both) agree within 1e-5 in f32 on random inputs of odd sizes, and each fused
//! backward agrees with finite differences.

use candle_core::{DType, Device, Tensor, Var};
use tunescope::model::ops;

const TOLERANCE: f32 = 1e-5;

/// Deterministic pseudo-random values in [-scale, scale) (a 64-bit LCG; no global state).
fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let unit = (state >> 40) as f32 / (1u64 << 24) as f32;
            (2.0 * unit - 1.0) * scale
        })
        .collect()
}

fn tensor(dims: &[usize], seed: u64, scale: f32) -> Tensor {
    let n = dims.iter().product();
    Tensor::from_vec(values(n, seed, scale), dims, &Device::Cpu).unwrap()
}

fn var(dims: &[usize], seed: u64, scale: f32) -> Var {
    Var::from_tensor(&tensor(dims, seed, scale)).unwrap()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Largest `|a − b| / max(1, |b|)`.
fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    flat(a)
        .iter()
        .zip(flat(b))
        .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
        .fold(0.0, f32::max)
}

/// `Σ out ⊙ upstream` with a fixed random upstream gradient.
fn weighted_sum(out: &Tensor, seed: u64) -> Tensor {
    let upstream = tensor(out.dims(), seed, 1.0);
    (out * upstream).unwrap().sum_all().unwrap()
}

/// Runs `fused` and `composed` on the same variables and compares values and gradients; also
/// checks the fused kernel ran.
fn check_against_composition(
    name: &str,
    vars: &[&Var],
    fused: &dyn Fn() -> Tensor,
    composed: &dyn Fn() -> Tensor,
) {
    let calls = ops::fused_calls_on_this_thread();
    let a = fused();
    assert!(
        ops::fused_calls_on_this_thread() > calls,
        "{name}: the fused kernel did not run"
    );
    let b = composed();
    let diff = max_diff(&a, &b);
    assert!(diff <= TOLERANCE, "{name}: forward differs by {diff}");
    let ga = if a.rank() == 0 {
        a.backward()
    } else {
        weighted_sum(&a, 99).backward()
    }
    .unwrap();
    let gb = if b.rank() == 0 {
        b.backward()
    } else {
        weighted_sum(&b, 99).backward()
    }
    .unwrap();
    for (i, v) in vars.iter().enumerate() {
        let x = ga
            .get(v.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no fused grad {i}"));
        let y = gb
            .get(v.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no composed grad {i}"));
        let diff = max_diff(x, y);
        assert!(diff <= TOLERANCE, "{name}: gradient {i} differs by {diff}");
    }
}

/// Central finite differences of `f` against the fused gradient of `var`, at the three
/// elements with the largest gradients.
fn check_finite_differences(name: &str, var: &Var, f: &dyn Fn() -> Tensor) {
    let loss = |out: Tensor| -> Tensor {
        if out.rank() == 0 {
            out
        } else {
            weighted_sum(&out, 7)
        }
    };
    let grads = loss(f()).backward().unwrap();
    let grad = flat(grads.get(var.as_tensor()).unwrap());
    let original = var.as_tensor().copy().unwrap();
    let base = flat(&original);
    let mut order: Vec<usize> = (0..grad.len()).collect();
    order.sort_by(|&a, &b| grad[b].abs().total_cmp(&grad[a].abs()));
    for &index in order.iter().take(3) {
        let eps = 1e-2f32;
        let eval = |delta: f32| -> f64 {
            let mut v = base.clone();
            v[index] += delta;
            var.set(&Tensor::from_vec(v, original.shape(), &Device::Cpu).unwrap())
                .unwrap();
            loss(f()).to_scalar::<f32>().unwrap() as f64
        };
        let numeric = (eval(eps) - eval(-eps)) / (2.0 * eps as f64);
        var.set(&original).unwrap();
        let analytic = grad[index] as f64;
        let rel = (numeric - analytic).abs() / analytic.abs().max(1e-3);
        assert!(
            rel <= 1e-2,
            "{name}[{index}]: analytic {analytic:.6e} numeric {numeric:.6e} rel {rel:.2e}"
        );
    }
}

#[test]
fn rms_norm_matches_composition_for_input_and_weight() {
    for (dims, seed) in [
        (vec![3, 5, 7], 1u64),
        (vec![1, 1, 64], 2),
        (vec![13, 33], 3),
    ] {
        let h = *dims.last().unwrap();
        let x = var(&dims, seed, 2.0);
        let w = var(&[h], seed + 100, 1.5);
        check_against_composition(
            "rms_norm",
            &[&x, &w],
            &|| ops::rms_norm(x.as_tensor(), w.as_tensor(), 1e-6).unwrap(),
            &|| ops::rms_norm_composed(x.as_tensor(), w.as_tensor(), 1e-6).unwrap(),
        );
    }
    // A frozen weight gets no gradient from the fused op.
    let x = var(&[4, 9], 5, 1.0);
    let w = tensor(&[9], 6, 1.0);
    let grads = weighted_sum(&ops::rms_norm(x.as_tensor(), &w, 1e-5).unwrap(), 1)
        .backward()
        .unwrap();
    assert!(grads.get(&w).is_none());
    assert!(grads.get(x.as_tensor()).is_some());
}

#[test]
fn rms_norm_finite_differences() {
    let x = var(&[3, 11], 8, 1.0);
    let w = var(&[11], 9, 1.0);
    let f = || ops::rms_norm(x.as_tensor(), w.as_tensor(), 1e-5).unwrap();
    check_finite_differences("rms_norm x", &x, &f);
    check_finite_differences("rms_norm w", &w, &f);
}

#[test]
fn softmax_matches_composition() {
    for (dims, seed) in [
        (vec![2, 3, 5, 9], 11u64),
        (vec![7, 1], 12),
        (vec![5, 129], 13),
    ] {
        let x = var(&dims, seed, 4.0);
        check_against_composition(
            "softmax",
            &[&x],
            &|| ops::softmax_last_dim(x.as_tensor()).unwrap(),
            &|| ops::softmax_last_dim_composed(x.as_tensor()).unwrap(),
        );
    }
}

#[test]
fn softmax_finite_differences() {
    let x = var(&[3, 7], 14, 2.0);
    check_finite_differences("softmax", &x, &|| {
        ops::softmax_last_dim(x.as_tensor()).unwrap()
    });
}

/// A causal mask `(B, 1, T, S)` with left padding in row 1 and a fully hidden query row.
fn attention_mask(b: usize, t: usize, s: usize) -> Tensor {
    let mut data = Vec::new();
    for row in 0..b {
        for q in 0..t {
            for k in 0..s {
                let hidden = k > q + (s - t) || (row == 1 && k < 2) || (row == 2 && q == 0);
                data.push(if hidden { -1e9f32 } else { 0.0 });
            }
        }
    }
    Tensor::from_vec(data, (b, 1, t, s), &Device::Cpu).unwrap()
}

#[test]
fn masked_softmax_matches_composition() {
    let scale = 1.0 / (10f64).sqrt();
    for (b, h, t, s) in [(3usize, 2usize, 5usize, 7usize), (1, 3, 4, 4), (3, 1, 1, 9)] {
        let scores = var(&[b, h, t, s], (b * 10 + h) as u64, 3.0);
        let mask = attention_mask(b, t, s);
        check_against_composition(
            "masked_softmax",
            &[&scores],
            &|| ops::masked_softmax(scores.as_tensor(), &mask, scale).unwrap(),
            &|| ops::masked_softmax_composed(scores.as_tensor(), &mask, scale).unwrap(),
        );
        // The same bias given per head.
        let full = mask
            .broadcast_as((b, h, t, s))
            .unwrap()
            .contiguous()
            .unwrap();
        let a = ops::masked_softmax(scores.as_tensor(), &full, scale).unwrap();
        let c = ops::masked_softmax_composed(scores.as_tensor(), &mask, scale).unwrap();
        assert!(max_diff(&a, &c) <= TOLERANCE);
    }
}

#[test]
fn masked_softmax_finite_differences() {
    let scores = var(&[2, 2, 3, 5], 21, 2.0);
    let mask = attention_mask(2, 3, 5);
    check_finite_differences("masked_softmax", &scores, &|| {
        ops::masked_softmax(scores.as_tensor(), &mask, 0.7).unwrap()
    });
}

/// cos/sin tables `(B, 1, T, D)` as the decoder builds them (halves repeated) from positions.
fn rope_tables(b: usize, t: usize, d: usize, offset: usize) -> (Tensor, Tensor) {
    let half = d / 2;
    let mut angles = Vec::new();
    for row in 0..b {
        for pos in 0..t {
            let p = (pos + row * offset) as f32;
            let freqs: Vec<f32> = (0..half)
                .map(|i| p / 10000f32.powf(2.0 * i as f32 / d as f32))
                .collect();
            angles.extend_from_slice(&freqs);
            angles.extend_from_slice(&freqs);
        }
    }
    let a = Tensor::from_vec(angles, (b, 1, t, d), &Device::Cpu).unwrap();
    (a.cos().unwrap(), a.sin().unwrap())
}

#[test]
fn rope_matches_composition() {
    for (b, h, t, d) in [
        (3usize, 2usize, 5usize, 10usize),
        (2, 3, 7, 6),
        (1, 1, 1, 2),
    ] {
        let x = var(&[b, h, t, d], (b + h + t + d) as u64, 2.0);
        let (cos, sin) = rope_tables(b, t, d, 3);
        check_against_composition(
            "rope",
            &[&x],
            &|| ops::rope(x.as_tensor(), &cos, &sin).unwrap(),
            &|| ops::rope_composed(x.as_tensor(), &cos, &sin).unwrap(),
        );
        // Arbitrary tables (halves not repeated) shared by every batch row.
        let cos1 = tensor(&[1, 1, t, d], 31, 1.0);
        let sin1 = tensor(&[1, 1, t, d], 32, 1.0);
        check_against_composition(
            "rope (shared tables)",
            &[&x],
            &|| ops::rope(x.as_tensor(), &cos1, &sin1).unwrap(),
            &|| ops::rope_composed(x.as_tensor(), &cos1, &sin1).unwrap(),
        );
    }
}

#[test]
fn rope_finite_differences() {
    let x = var(&[2, 2, 3, 6], 41, 1.0);
    let (cos, sin) = rope_tables(2, 3, 6, 2);
    check_finite_differences("rope", &x, &|| {
        ops::rope(x.as_tensor(), &cos, &sin).unwrap()
    });
}

/// Splitting `(B, T, n·D)` into heads `(B, n, T, D)`, turned or not, against reshape,
/// transpose and the composed rope; per-row and shared tables; one head and several.
#[test]
fn to_heads_matches_composition() {
    for (b, t, n, d) in [
        (3usize, 5usize, 2usize, 10usize),
        (2, 7, 3, 6),
        (1, 1, 1, 2),
    ] {
        let x = var(&[b, t, n * d], (b + t + n + d) as u64, 2.0);
        let plain = || {
            x.as_tensor()
                .reshape((b, t, n, d))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        check_against_composition(
            "to_heads",
            &[&x],
            &|| ops::to_heads(x.as_tensor(), n, None).unwrap(),
            &plain,
        );
        let (cos, sin) = rope_tables(b, t, d, 3);
        let (cos1, sin1) = (
            tensor(&[1, 1, t, d], 33, 1.0),
            tensor(&[1, 1, t, d], 34, 1.0),
        );
        for (label, cos, sin) in [("rope", &cos, &sin), ("shared tables", &cos1, &sin1)] {
            check_against_composition(
                &format!("to_heads with {label}"),
                &[&x],
                &|| ops::to_heads(x.as_tensor(), n, Some((cos, sin))).unwrap(),
                &|| ops::rope_composed(&plain(), cos, sin).unwrap(),
            );
        }
    }
}

#[test]
fn to_heads_finite_differences() {
    let x = var(&[2, 3, 12], 42, 1.0);
    let (cos, sin) = rope_tables(2, 3, 6, 2);
    check_finite_differences("to_heads", &x, &|| {
        ops::to_heads(x.as_tensor(), 2, Some((&cos, &sin))).unwrap()
    });
}

#[test]
fn swiglu_matches_composition() {
    for (dims, seed) in [
        (vec![3, 7, 11], 51u64),
        (vec![1, 5000], 52),
        (vec![2, 3, 4099], 53),
    ] {
        let g = var(&dims, seed, 4.0);
        let u = var(&dims, seed + 1, 2.0);
        check_against_composition(
            "swiglu",
            &[&g, &u],
            &|| ops::swiglu(g.as_tensor(), u.as_tensor()).unwrap(),
            &|| ops::swiglu_composed(g.as_tensor(), u.as_tensor()).unwrap(),
        );
    }
}

#[test]
fn swiglu_with_one_operand_frozen_matches_composition() {
    // The backward has a path per set of wanted gradients: both, the gate's only, the up's only.
    let dims = [2, 3, 4099];
    let (g, u) = (var(&dims, 55, 4.0), var(&dims, 56, 2.0));
    let (g_plain, u_plain) = (g.as_tensor().copy().unwrap(), u.as_tensor().copy().unwrap());
    check_against_composition(
        "swiglu, up frozen",
        &[&g],
        &|| ops::swiglu(g.as_tensor(), &u_plain).unwrap(),
        &|| ops::swiglu_composed(g.as_tensor(), &u_plain).unwrap(),
    );
    check_against_composition(
        "swiglu, gate frozen",
        &[&u],
        &|| ops::swiglu(&g_plain, u.as_tensor()).unwrap(),
        &|| ops::swiglu_composed(&g_plain, u.as_tensor()).unwrap(),
    );
}

#[test]
fn swiglu_finite_differences() {
    let g = var(&[3, 5], 61, 3.0);
    let u = var(&[3, 5], 62, 2.0);
    let f = || ops::swiglu(g.as_tensor(), u.as_tensor()).unwrap();
    check_finite_differences("swiglu gate", &g, &f);
    check_finite_differences("swiglu up", &u, &f);
}

fn targets(n: usize, vocab: usize, seed: u64) -> Tensor {
    let ids: Vec<u32> = values(n, seed, 1.0)
        .into_iter()
        .map(|v| (((v + 1.0) / 2.0) * vocab as f32) as u32 % vocab as u32)
        .collect();
    Tensor::from_vec(ids, n, &Device::Cpu).unwrap()
}

#[test]
fn cross_entropy_matches_composition() {
    for (n, vocab, seed) in [(13usize, 37usize, 71u64), (1, 5, 72), (9, 1031, 73)] {
        let logits = var(&[n, vocab], seed, 6.0);
        let t = targets(n, vocab, seed + 1);
        check_against_composition(
            "cross_entropy",
            &[&logits],
            &|| ops::cross_entropy_sum(logits.as_tensor(), &t).unwrap(),
            &|| ops::cross_entropy_sum_composed(logits.as_tensor(), &t).unwrap(),
        );
        // Scaled upstream gradient (the trainer divides the sum by the label count).
        let a = (ops::cross_entropy_sum(logits.as_tensor(), &t).unwrap() * 0.25).unwrap();
        let b = (ops::cross_entropy_sum_composed(logits.as_tensor(), &t).unwrap() * 0.25).unwrap();
        let (ga, gb) = (a.backward().unwrap(), b.backward().unwrap());
        let diff = max_diff(
            ga.get(logits.as_tensor()).unwrap(),
            gb.get(logits.as_tensor()).unwrap(),
        );
        assert!(
            diff <= TOLERANCE,
            "scaled cross-entropy gradient differs by {diff}"
        );
    }
    let logits = tensor(&[2, 4], 1, 1.0);
    let bad = Tensor::new(&[1u32, 4], &Device::Cpu).unwrap();
    assert!(ops::cross_entropy_sum(&logits, &bad).is_err());
}

#[test]
fn cross_entropy_finite_differences() {
    let logits = var(&[4, 9], 81, 2.0);
    let t = targets(4, 9, 82);
    check_finite_differences("cross_entropy", &logits, &|| {
        ops::cross_entropy_sum(logits.as_tensor(), &t).unwrap()
    });
}

#[test]
fn large_inputs_use_the_thread_pool_and_still_match() {
    // Big enough to cross the parallel threshold of every kernel.
    let x = var(&[64, 9, 130], 91, 2.0);
    let w = var(&[130], 92, 1.0);
    check_against_composition(
        "rms_norm (large)",
        &[&x, &w],
        &|| ops::rms_norm(x.as_tensor(), w.as_tensor(), 1e-6).unwrap(),
        &|| ops::rms_norm_composed(x.as_tensor(), w.as_tensor(), 1e-6).unwrap(),
    );
    let logits = var(&[40, 1500], 93, 5.0);
    let t = targets(40, 1500, 94);
    check_against_composition(
        "cross_entropy (large)",
        &[&logits],
        &|| ops::cross_entropy_sum(logits.as_tensor(), &t).unwrap(),
        &|| ops::cross_entropy_sum_composed(logits.as_tensor(), &t).unwrap(),
    );
}

#[test]
fn bf16_inputs_stay_close_to_the_composition() {
    let x = tensor(&[4, 6, 16], 101, 2.0).to_dtype(DType::BF16).unwrap();
    let w = tensor(&[16], 102, 1.0).to_dtype(DType::BF16).unwrap();
    let a = ops::rms_norm(&x, &w, 1e-6).unwrap();
    let b = ops::rms_norm_composed(&x, &w, 1e-6).unwrap();
    assert_eq!(a.dtype(), DType::BF16);
    assert!(max_diff(&a, &b) <= 2e-2);
    let a = ops::swiglu(&x, &x).unwrap();
    let b = ops::swiglu_composed(&x, &x).unwrap();
    assert!(max_diff(&a, &b) <= 2e-2);
}

mod adamw {
    use std::collections::{BTreeMap, HashMap};

    use candle_core::{DType, Tensor, Var};
    use tunescope::recipe::OptimizerSpec;
    use tunescope::train::optimizer::AdamW;

    use super::{flat, tensor};

    /// Runs `steps` updates with the fused and the tensor-op AdamW on copies of the same
    /// weights and gradients; returns the largest difference of weights and of state.
    fn compare(dtype: DType, weight_decay: f64, steps: usize) -> (f32, f32) {
        let shapes: [&[usize]; 3] = [&[3, 7], &[70_001], &[5]];
        let spec = OptimizerSpec {
            lr: 1e-2,
            weight_decay,
            ..OptimizerSpec::default()
        };
        let make = || -> BTreeMap<String, Var> {
            shapes
                .iter()
                .enumerate()
                .map(|(i, dims)| {
                    let t = tensor(dims, 200 + i as u64, 1.0).to_dtype(dtype).unwrap();
                    (format!("p{i}"), Var::from_tensor(&t).unwrap())
                })
                .collect()
        };
        let (fused_vars, plain_vars) = (make(), make());
        let mut fused = AdamW::with_fused(&fused_vars, &spec, true).unwrap();
        let mut plain = AdamW::with_fused(&plain_vars, &spec, false).unwrap();
        for step in 0..steps {
            let grads: HashMap<String, Tensor> = shapes
                .iter()
                .enumerate()
                .map(|(i, dims)| {
                    let seed = 1000 * step as u64 + i as u64;
                    (format!("p{i}"), tensor(dims, seed, 0.5))
                })
                .collect();
            let lr = 1e-2 * (1.0 - step as f64 / (2 * steps) as f64);
            // Every other step clips (scales the gradients inside the update).
            let grad_scale = if step % 2 == 1 { 0.37 } else { 1.0 };
            fused.update_scaled(&grads, lr, grad_scale).unwrap();
            plain.update_scaled(&grads, lr, grad_scale).unwrap();
        }
        let diff = |a: &Tensor, b: &Tensor| -> f32 {
            flat(a)
                .iter()
                .zip(flat(b))
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max)
        };
        let mut weights = 0f32;
        for (name, var) in &fused_vars {
            weights = weights.max(diff(var.as_tensor(), plain_vars[name].as_tensor()));
            let a = fused.weights_f32(name).unwrap().unwrap();
            let b = plain.weights_f32(name).unwrap().unwrap();
            weights = weights.max(diff(&a, &b));
        }
        let (sa, sb) = (fused.state_tensors(), plain.state_tensors());
        assert_eq!(
            sa.keys().collect::<std::collections::BTreeSet<_>>(),
            sb.keys().collect()
        );
        let state = sa.iter().map(|(k, t)| diff(t, &sb[k])).fold(0f32, f32::max);
        (weights, state)
    }

    #[test]
    fn fused_update_matches_tensor_ops_after_several_steps() {
        let (w, s) = compare(DType::F32, 0.0, 6);
        assert!(w <= 1e-6 && s <= 1e-6, "weights {w}, state {s}");
        let (w, s) = compare(DType::F32, 0.1, 6);
        assert!(w <= 1e-6 && s <= 1e-6, "with decay: weights {w}, state {s}");
    }

    #[test]
    fn fused_update_with_bf16_master_weights_matches() {
        // The f32 master copies and moments agree to 1e-6; the bf16 weights are their rounding.
        let (w, s) = compare(DType::BF16, 0.01, 5);
        assert!(w <= 1e-6 && s <= 1e-6, "weights {w}, state {s}");
    }

    #[test]
    fn fused_state_round_trips_through_checkpoint_tensors() {
        let spec = OptimizerSpec::default();
        let vars: BTreeMap<String, Var> = [(
            "w".to_string(),
            Var::from_tensor(&tensor(&[4, 3], 300, 1.0)).unwrap(),
        )]
        .into_iter()
        .collect();
        let mut opt = AdamW::with_fused(&vars, &spec, true).unwrap();
        let grads: HashMap<String, Tensor> = [("w".to_string(), tensor(&[4, 3], 301, 1.0))]
            .into_iter()
            .collect();
        opt.update(&grads, 1e-3).unwrap();
        let saved = opt.state_tensors();
        let mut restored = AdamW::with_fused(&vars, &spec, false).unwrap();
        restored.load_state(&saved, opt.step).unwrap();
        let mut again = AdamW::with_fused(&vars, &spec, true).unwrap();
        again
            .load_state(&restored.state_tensors(), opt.step)
            .unwrap();
        for (k, t) in again.state_tensors() {
            assert_eq!(flat(&t), flat(&saved[&k]), "{k}");
        }
    }
}
