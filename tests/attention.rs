//! Fused causal attention against the composition of candle ops (values and the gradients of
//! q, k and v within 1e-5 in f32; padding masks, grouped-query heads, a sliding window, cached
//! keys), its backward against finite differences, a whole decoder with fused and composed
//! attention, and cached decoding (in-place KV buffers, few-row products) against the full
//! forward, token for token.

mod common;

use std::collections::HashSet;
use std::sync::Mutex;

use candle_core::{DType, Device, IndexOp, Tensor, Var};
use tunescope::model::decoder::Inputs;
use tunescope::model::generate::{generate, GenerateOptions};
use tunescope::model::ops::{self, AttentionMask};
use tunescope::model::tiny::TinySpec;
use tunescope::model::{Architecture, Model};

use common::TinyModel;

const TOLERANCE: f32 = 1e-5;

/// Tests that switch fused attention on and off run one at a time.
static SWITCH: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SWITCH.lock().unwrap_or_else(|e| e.into_inner())
}

/// Deterministic values in [-scale, scale).
fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(99);
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

fn var(dims: &[usize], seed: u64) -> Var {
    let n = dims.iter().product();
    Var::from_vec(values(n, seed, 1.0), dims, &Device::Cpu).unwrap()
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

/// One attention problem: sizes, padding and mask.
struct Case {
    name: &'static str,
    batch: usize,
    heads: usize,
    kv_heads: usize,
    queries: usize,
    past: usize,
    dim: usize,
    /// Per row: (left padding, right padding) among the keys.
    padding: Vec<(usize, usize)>,
    window: Option<usize>,
}

impl Case {
    fn keys(&self) -> usize {
        self.past + self.queries
    }

    fn mask(&self) -> AttentionMask {
        let rows: Vec<Vec<bool>> = self
            .padding
            .iter()
            .map(|&(left, right)| {
                (0..self.keys())
                    .map(|s| s >= left && s < self.keys() - right)
                    .collect()
            })
            .collect();
        AttentionMask::new(&rows, self.past, self.window).unwrap()
    }

    /// `Σ out ⊙ upstream`, the upstream zero at queries that see no key (padding queries,
    /// whose gradient the loss never asks for).
    fn loss(&self, out: &Tensor, seed: u64) -> Tensor {
        let mask = self.mask();
        let (b, t, h, d) = out.dims4().unwrap();
        let mut up = values(b * t * h * d, seed, 1.0);
        for bi in 0..b {
            for ti in 0..t {
                if !(0..self.keys()).any(|s| mask.visible(bi, ti, s)) {
                    let at = (bi * t) * h * d + ti * h * d;
                    up[at..at + h * d].fill(0.0);
                }
            }
        }
        let up = Tensor::from_vec(up, out.shape(), &Device::Cpu).unwrap();
        (out * up).unwrap().sum_all().unwrap()
    }

    fn operands(&self, seed: u64) -> [Var; 3] {
        [
            var(&[self.batch, self.heads, self.queries, self.dim], seed),
            var(
                &[self.batch, self.kv_heads, self.keys(), self.dim],
                seed + 1,
            ),
            var(
                &[self.batch, self.kv_heads, self.keys(), self.dim],
                seed + 2,
            ),
        ]
    }
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "plain, several tiles",
            batch: 2,
            heads: 2,
            kv_heads: 2,
            queries: 70,
            past: 0,
            dim: 20,
            padding: vec![(0, 0), (0, 0)],
            window: None,
        },
        Case {
            name: "grouped-query, left and right padding",
            batch: 3,
            heads: 6,
            kv_heads: 2,
            queries: 37,
            past: 0,
            dim: 16,
            padding: vec![(5, 0), (0, 7), (0, 0)],
            window: None,
        },
        Case {
            name: "sliding window, one key/value head",
            batch: 2,
            heads: 4,
            kv_heads: 1,
            queries: 41,
            past: 0,
            dim: 8,
            padding: vec![(3, 0), (0, 0)],
            window: Some(9),
        },
        Case {
            name: "cached keys before the queries",
            batch: 2,
            heads: 4,
            kv_heads: 2,
            queries: 3,
            past: 66,
            dim: 12,
            padding: vec![(4, 0), (0, 0)],
            window: None,
        },
    ]
}

#[test]
fn a_replayed_attention_hands_back_the_recorded_result_with_the_same_gradients() {
    let _guard = lock();
    ops::set_fused_attention(true);
    for (i, case) in cases().iter().enumerate() {
        let [q, k, v] = case.operands(10 * i as u64 + 3);
        let mask = case.mask();
        let scale = 1.0 / (case.dim as f64).sqrt();
        let plain = ops::causal_attention(&q, &k, &v, &mask, scale).unwrap();
        let plain_grads = case.loss(&plain, 6).backward().unwrap();
        // Recorded from operands without a graph, as a checkpointed layer's forward runs.
        let memo = std::sync::Arc::new(ops::AttentionMemo::default());
        let record = ops::MemoUse::Record(memo.clone());
        let detached = [&q, &k, &v].map(|x| x.as_tensor().detach());
        let [qd, kd, vd] = &detached;
        ops::causal_attention_with_memo(qd, kd, vd, &mask, scale, Some(&record)).unwrap();
        assert!(memo.is_kept(), "{}", case.name);
        // Replayed over other queries: the recorded output comes back, so nothing was computed.
        let replay = ops::MemoUse::Replay(memo.clone());
        let other_q = (q.as_tensor() * 2.0).unwrap();
        let replayed =
            ops::causal_attention_with_memo(&other_q, &k, &v, &mask, scale, Some(&replay)).unwrap();
        assert!(!memo.is_kept(), "{}: replayed once", case.name);
        assert_eq!(flat(&replayed), flat(&plain), "{}", case.name);
        // Replayed over the same operands: the backward is the plain one's.
        ops::causal_attention_with_memo(qd, kd, vd, &mask, scale, Some(&record)).unwrap();
        let replayed =
            ops::causal_attention_with_memo(&q, &k, &v, &mask, scale, Some(&replay)).unwrap();
        let grads = case.loss(&replayed, 6).backward().unwrap();
        for (x, label) in [(&q, "q"), (&k, "k"), (&v, "v")] {
            let diff = max_diff(
                grads.get(x.as_tensor()).unwrap(),
                plain_grads.get(x.as_tensor()).unwrap(),
            );
            assert!(
                diff == 0.0,
                "{}: gradient of {label} differs by {diff}",
                case.name
            );
        }
    }
}

#[test]
fn fused_attention_matches_composition_with_gradients() {
    let _guard = lock();
    ops::set_fused_attention(true);
    for (i, case) in cases().iter().enumerate() {
        let [q, k, v] = case.operands(10 * i as u64);
        let mask = case.mask();
        let scale = 1.0 / (case.dim as f64).sqrt();
        let calls = ops::fused_calls_on_this_thread();
        let fused = ops::causal_attention(&q, &k, &v, &mask, scale).unwrap();
        assert!(ops::fused_calls_on_this_thread() > calls, "{}", case.name);
        let composed = ops::causal_attention_composed(&q, &k, &v, &mask, scale).unwrap();
        let diff = max_diff(&fused, &composed);
        assert!(
            diff <= TOLERANCE,
            "{}: forward differs by {diff}",
            case.name
        );
        let ga = case.loss(&fused, 5).backward().unwrap();
        let gb = case.loss(&composed, 5).backward().unwrap();
        for (x, label) in [(&q, "q"), (&k, "k"), (&v, "v")] {
            let a = ga.get(x.as_tensor()).unwrap();
            let b = gb.get(x.as_tensor()).unwrap();
            let diff = max_diff(a, b);
            assert!(
                diff <= TOLERANCE,
                "{}: gradient of {label} differs by {diff}",
                case.name
            );
        }
    }
}

#[test]
fn fused_attention_backward_matches_finite_differences() {
    let _guard = lock();
    ops::set_fused_attention(true);
    let case = Case {
        name: "tiny",
        batch: 2,
        heads: 2,
        kv_heads: 1,
        queries: 5,
        past: 0,
        dim: 4,
        padding: vec![(1, 0), (0, 1)],
        window: None,
    };
    let ops_vars = case.operands(3);
    let mask = case.mask();
    let f = || {
        let out =
            ops::causal_attention(&ops_vars[0], &ops_vars[1], &ops_vars[2], &mask, 0.5).unwrap();
        case.loss(&out, 8)
    };
    let grads = f().backward().unwrap();
    for (index, x) in ops_vars.iter().enumerate() {
        let grad = flat(grads.get(x.as_tensor()).unwrap());
        let original = x.as_tensor().copy().unwrap();
        let base = flat(&original);
        for i in (0..base.len()).step_by(3) {
            let eps = 1e-2f32;
            let eval = |delta: f32| -> f64 {
                let mut v = base.clone();
                v[i] += delta;
                x.set(&Tensor::from_vec(v, original.shape(), &Device::Cpu).unwrap())
                    .unwrap();
                f().to_scalar::<f32>().unwrap() as f64
            };
            let numeric = (eval(eps) - eval(-eps)) / (2.0 * eps as f64);
            x.set(&original).unwrap();
            let analytic = grad[i] as f64;
            let err = (numeric - analytic).abs() / analytic.abs().max(1e-1);
            assert!(
                err <= 1e-2,
                "operand {index}[{i}]: analytic {analytic:.6e} numeric {numeric:.6e}"
            );
        }
    }
}

/// Left-padded ids and mask of three prompts of different lengths.
fn padded_batch(vocab: u32) -> (Tensor, Tensor) {
    let lengths = [9usize, 6, 3];
    let width = 9;
    let mut ids = Vec::new();
    let mut mask = Vec::new();
    for (row, &len) in lengths.iter().enumerate() {
        for t in 0..width {
            let real = t >= width - len;
            ids.push(if real {
                (7 + 13 * row + 5 * t) as u32 % vocab
            } else {
                0
            });
            mask.push(u32::from(real));
        }
    }
    let dev = Device::Cpu;
    (
        Tensor::from_vec(ids, (3, width), &dev).unwrap(),
        Tensor::from_vec(mask, (3, width), &dev).unwrap(),
    )
}

#[test]
fn decoder_logits_and_gradients_agree_with_composed_attention() {
    let _guard = lock();
    let dev = Device::Cpu;
    for arch in [Architecture::Llama, Architecture::Qwen2] {
        let tiny = TinyModel::new(arch, 4);
        let model = Model::open(&tiny.spec_str()).unwrap();
        let trainable: HashSet<String> = ["model.layers.0.self_attn.q_proj.weight"]
            .iter()
            .chain(&["model.layers.1.self_attn.k_proj.weight"])
            .map(|s| s.to_string())
            .collect();
        let decoder = model.decoder(&trainable, DType::F32, &dev).unwrap();
        let (ids, mask) = padded_batch(model.config.vocab_size as u32);
        let valid = common::valid_rows(&mask);
        let run = |fused: bool| {
            ops::set_fused_attention(fused);
            let logits = decoder.forward(&Inputs::text(&ids, Some(&mask))).unwrap();
            // Loss at real tokens only.
            let weights: Vec<f32> = valid
                .iter()
                .flat_map(|row| row.iter().map(|&v| f32::from(u8::from(v))))
                .collect();
            let weights = Tensor::from_vec(weights, (3, 9, 1), &dev).unwrap();
            let loss = logits.broadcast_mul(&weights).unwrap().sum_all().unwrap();
            let grads = decoder.trainable_grads(&loss.backward().unwrap()).unwrap();
            (logits, grads)
        };
        let calls = ops::fused_calls_on_this_thread();
        let (fused, fused_grads) = run(true);
        assert!(ops::fused_calls_on_this_thread() > calls);
        let (composed, composed_grads) = run(false);
        ops::set_fused_attention(true);
        for (row, r) in valid.iter().enumerate() {
            for (t, &real) in r.iter().enumerate() {
                if real {
                    let d = common::max_abs_diff(
                        &fused.i((row, t)).unwrap(),
                        &composed.i((row, t)).unwrap(),
                    );
                    assert!(d <= 1e-4, "{arch:?}: logits differ by {d} at ({row}, {t})");
                }
            }
        }
        for name in decoder.vars().keys() {
            let a = &fused_grads[name];
            let b = &composed_grads[name];
            let d = max_diff(a, b);
            assert!(d <= 1e-4, "{arch:?}: gradient of {name} differs by {d}");
        }
    }
}

#[test]
fn cached_decoding_matches_the_full_forward_token_for_token() {
    let _guard = lock();
    ops::set_fused_attention(true);
    let dev = Device::Cpu;
    for (arch, seed) in [(Architecture::Llama, 2u64), (Architecture::Qwen3, 3)] {
        let mut spec = TinySpec::new(arch, seed);
        spec.num_heads = 6;
        spec.num_kv_heads = 2;
        spec.hidden_size = 96;
        let tiny = TinyModel::with_spec(spec);
        let model = Model::open(&tiny.spec_str()).unwrap();
        // A trainable weight as well: decoding reads it like the frozen ones.
        let trainable: HashSet<String> = ["model.layers.1.mlp.up_proj.weight".to_string()].into();
        let decoder = model.decoder(&trainable, DType::F32, &dev).unwrap();
        let prompt: Vec<u32> = vec![5, 17, 42, 8, 99, 3];
        let options = GenerateOptions {
            max_new_tokens: 12,
            ..Default::default()
        };
        let generated = generate(&decoder, &prompt, &options, |_| Ok(())).unwrap();
        // The same tokens by full forwards of the growing sequence, logits compared each step.
        let mut seq = prompt.clone();
        let mut cache = decoder.new_cache_with_capacity(1, 2);
        let mut input = Tensor::new(prompt.as_slice(), &dev)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        for &token in &generated {
            let ids = Tensor::new(seq.as_slice(), &dev)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let full = decoder.forward(&Inputs::text(&ids, None)).unwrap();
            let full_last = full.i((0, seq.len() - 1)).unwrap();
            let cached = decoder
                .forward_cached(&input, None, &mut cache, None)
                .unwrap()
                .i(0)
                .unwrap();
            let d = max_diff(&cached, &full_last);
            assert!(d <= TOLERANCE, "{arch:?}: cached logits differ by {d}");
            let best = full_last.argmax(0).unwrap().to_scalar::<u32>().unwrap();
            assert_eq!(best, token, "{arch:?}: generated token differs");
            seq.push(token);
            input = Tensor::new(&[token], &dev).unwrap().unsqueeze(0).unwrap();
        }
    }
}

#[test]
fn small_matmul_matches_matmul() {
    let dev = Device::Cpu;
    for (rows, k, n) in [
        (1usize, 37usize, 131usize),
        (8, 64, 300),
        (3, 5, 7),
        (16, 576, 70),
        (15, 9, 33),
    ] {
        let x = Tensor::from_vec(values(rows * k, 1, 1.0), (rows, k), &dev).unwrap();
        let w = Tensor::from_vec(values(n * k, 2, 1.0), (n, k), &dev).unwrap();
        let fast = ops::small_matmul(&x, &w).unwrap().unwrap();
        let slow = x.matmul(&w.t().unwrap()).unwrap();
        assert!(max_diff(&fast, &slow) <= TOLERANCE);
    }
    let x = Tensor::zeros((ops::SMALL_MATMUL_MAX_ROWS + 1, 4), DType::F32, &dev).unwrap();
    let w = Tensor::zeros((3, 4), DType::F32, &dev).unwrap();
    assert!(
        ops::small_matmul(&x, &w).unwrap().is_none(),
        "one row more than the most: not taken"
    );
}
