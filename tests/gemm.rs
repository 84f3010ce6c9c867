//! The one GEMM entry point (`ops::gemm::sgemm`) against a naive triple loop for every
//! transpose combination, odd sizes, padded rows and accumulation, under both threadings; and
//! the linear layer built on it against candle's `x.matmul(&w.t())` and finite differences.

use std::sync::Mutex;

use candle_core::{Device, Tensor, Var};
use tunescope::model::linear::{frozen_matmul, Linear, Param};
use tunescope::model::ops::{self, gemm};

/// Tests that switch process-wide settings (fused ops, threading) hold this.
static GLOBAL: Mutex<()> = Mutex::new(());

/// Deterministic pseudo-random values in [-1, 1) (a 64-bit LCG).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// `op(M)[i][j]` of a row-major store with row distance `ld`.
fn at(data: &[f32], ld: usize, trans: bool, i: usize, j: usize) -> f64 {
    (if trans {
        data[j * ld + i]
    } else {
        data[i * ld + j]
    }) as f64
}

/// One sgemm case against the triple loop in f64.
#[allow(clippy::too_many_arguments)]
fn check_case(m: usize, n: usize, k: usize, ta: bool, tb: bool, pad: usize, beta: f32) {
    let (a_rows, a_cols) = if ta { (k, m) } else { (m, k) };
    let (b_rows, b_cols) = if tb { (n, k) } else { (k, n) };
    let (lda, ldb, ldc) = (a_cols + pad, b_cols + pad, n + pad);
    let a = values(a_rows * lda, 1 + m as u64);
    let b = values(b_rows * ldb, 2 + n as u64);
    let c0 = values(m * ldc, 3 + k as u64);
    for threading in [gemm::Threading::Pool, gemm::Threading::Backend] {
        let mut c = c0.clone();
        let op_a = gemm::Operand {
            data: &a,
            ld: lda,
            trans: ta,
        };
        let op_b = gemm::Operand {
            data: &b,
            ld: ldb,
            trans: tb,
        };
        gemm::sgemm_with(m, n, k, op_a, op_b, beta, &mut c, ldc, threading).unwrap();
        for i in 0..m {
            for j in 0..ldc {
                let got = c[i * ldc + j] as f64;
                if j >= n {
                    assert_eq!(got, c0[i * ldc + j] as f64, "padding written at ({i},{j})");
                    continue;
                }
                let dot: f64 = (0..k)
                    .map(|p| at(&a, lda, ta, i, p) * at(&b, ldb, tb, p, j))
                    .sum();
                let want = dot + beta as f64 * c0[i * ldc + j] as f64;
                let tol = 1e-5 * (k as f64 + 1.0);
                assert!(
                    (got - want).abs() <= tol,
                    "m {m} n {n} k {k} ta {ta} tb {tb} pad {pad} beta {beta} {threading:?}: \
                     ({i},{j}) {got} vs {want}"
                );
            }
        }
    }
}

#[test]
fn sgemm_matches_the_triple_loop_for_all_transposes_and_odd_sizes() {
    let sizes = [
        (1, 1, 1),
        (7, 1, 65),
        (1, 129, 7),
        (65, 7, 129),
        (129, 65, 7),
        (130, 129, 65),
    ];
    for (m, n, k) in sizes {
        for ta in [false, true] {
            for tb in [false, true] {
                check_case(m, n, k, ta, tb, 0, 0.0);
                check_case(m, n, k, ta, tb, 3, 0.5);
            }
        }
    }
}

#[test]
fn sgemm_large_enough_to_split_over_the_pool() {
    // Over the parallel threshold in both directions of the split (rows and columns).
    check_case(257, 96, 200, false, true, 1, 0.0);
    check_case(48, 301, 160, true, false, 0, 1.0);
}

#[test]
fn sgemm_with_empty_inner_dimension_scales_c() {
    let mut c = vec![2.0f32; 6];
    gemm::sgemm(
        2,
        3,
        0,
        gemm::Operand::plain(&[], 0),
        gemm::Operand::plain(&[], 3),
        0.5,
        &mut c,
        3,
    )
    .unwrap();
    assert_eq!(c, vec![1.0; 6]);
    gemm::sgemm(
        2,
        3,
        0,
        gemm::Operand::plain(&[], 0),
        gemm::Operand::plain(&[], 3),
        0.0,
        &mut c,
        3,
    )
    .unwrap();
    assert_eq!(c, vec![0.0; 6]);
}

#[test]
fn sgemm_refuses_buffers_too_short_for_their_shape() {
    let a = vec![0f32; 11];
    let b = vec![0f32; 12];
    let mut c = vec![0f32; 9];
    let err = gemm::sgemm(
        3,
        3,
        4,
        gemm::Operand::plain(&a, 4),
        gemm::Operand::plain(&b, 3),
        0.0,
        &mut c,
        3,
    )
    .unwrap_err();
    assert!(err.to_string().contains("A needs 3 rows of 4"), "{err}");
    let a = vec![0f32; 12];
    let err = gemm::sgemm(
        3,
        3,
        4,
        gemm::Operand::plain(&a, 3),
        gemm::Operand::plain(&b, 3),
        0.0,
        &mut c,
        3,
    )
    .unwrap_err();
    assert!(err.to_string().contains("ld 3"), "{err}");
    let err = gemm::sgemm(
        3,
        3,
        4,
        gemm::Operand::plain(&a, 4),
        gemm::Operand::plain(&b, 3),
        0.0,
        &mut c[..8],
        3,
    )
    .unwrap_err();
    assert!(err.to_string().contains("C needs"), "{err}");
}

#[test]
fn backend_name_is_one_of_the_three() {
    assert!(["gemm-crate", "openblas", "mkl"].contains(&gemm::backend_name()));
}

fn tensor(rows: usize, cols: usize, seed: u64) -> Tensor {
    Tensor::from_vec(values(rows * cols, seed), (rows, cols), &Device::Cpu).unwrap()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * (1.0 + y.abs()),
            "{what}[{i}]: {x} vs {y}"
        );
    }
}

/// The gradients of `Σ ours ⊙ u` and `Σ theirs ⊙ u` for each named variable: of its shape and
/// within 1e-5.
fn assert_same_gradients(ours: Tensor, theirs: Tensor, u: &Tensor, vars: [(&str, &Var); 2]) {
    let g_ours = (ours * u).unwrap().sum_all().unwrap().backward().unwrap();
    let g_theirs = (theirs * u).unwrap().sum_all().unwrap().backward().unwrap();
    for (name, v) in vars {
        let a = g_ours.get(v.as_tensor()).unwrap();
        assert_eq!(a.dims(), v.dims(), "{name} shape");
        let want = flat(g_theirs.get(v.as_tensor()).unwrap());
        assert_close(&flat(a), &want, 1e-5, name);
    }
}

/// Value and both gradients of sum(Linear(x) ⊙ u) through the layer and through candle.
#[test]
fn trainable_linear_matches_candles_matmul_and_its_backward() {
    let _guard = GLOBAL.lock().unwrap();
    ops::set_fused(true);
    for (rows, out, inp) in [(7, 5, 3), (65, 129, 33), (130, 17, 96)] {
        let x = Var::from_tensor(&tensor(rows, inp, 10)).unwrap();
        let w = Var::from_tensor(&tensor(out, inp, 11)).unwrap();
        let u = tensor(rows, out, 12);
        let layer = Linear::new(Param::Trainable(w.clone()), None);
        let before = ops::fused_calls_on_this_thread();
        let ours = layer.forward(x.as_tensor()).unwrap();
        assert!(
            ops::fused_calls_on_this_thread() > before,
            "the GEMM op was not used"
        );
        let theirs = x.as_tensor().matmul(&w.as_tensor().t().unwrap()).unwrap();
        assert_close(&flat(&ours), &flat(&theirs), 1e-5, "value");
        assert_same_gradients(ours, theirs, &u, [("dx", &x), ("dW", &w)]);
    }
}

/// A batch of sequences `(B, T, in)` goes through the op as it is: the value is `(B, T, out)`,
/// equal to candle's matmul over the flattened rows, and so are both gradients; a transposed
/// (non-contiguous) input is read correctly too.
#[test]
fn linear_takes_inputs_of_any_rank() {
    let _guard = GLOBAL.lock().unwrap();
    ops::set_fused(true);
    let (b, t, inp, out) = (3, 5, 7, 4);
    let x = Var::from_tensor(&tensor(b * t, inp, 70).reshape((b, t, inp)).unwrap()).unwrap();
    let w = Var::from_tensor(&tensor(out, inp, 71)).unwrap();
    let u = tensor(b * t, out, 72).reshape((b, t, out)).unwrap();
    let ours = gemm::linear(x.as_tensor(), w.as_tensor()).unwrap();
    assert_eq!(ours.dims(), &[b, t, out]);
    let theirs = x
        .as_tensor()
        .reshape((b * t, inp))
        .unwrap()
        .matmul(&w.as_tensor().t().unwrap())
        .unwrap()
        .reshape((b, t, out))
        .unwrap();
    assert_close(&flat(&ours), &flat(&theirs), 1e-5, "value");
    assert_same_gradients(ours, theirs, &u, [("dx", &x), ("dW", &w)]);
    let strided = x.as_tensor().transpose(0, 1).unwrap();
    let ours = gemm::linear(&strided, w.as_tensor()).unwrap();
    let theirs = strided
        .contiguous()
        .unwrap()
        .reshape((b * t, inp))
        .unwrap()
        .matmul(&w.as_tensor().t().unwrap())
        .unwrap();
    assert_eq!(ours.dims(), &[t, b, out]);
    assert_close(&flat(&ours), &flat(&theirs), 1e-5, "transposed input");
}

#[test]
fn an_unread_linear_computes_no_value_and_the_linears_gradients() {
    let _guard = GLOBAL.lock().unwrap();
    ops::set_fused(true);
    let (b, t, inp, out) = (2, 3, 6, 5);
    let x = Var::from_tensor(&tensor(b * t, inp, 80).reshape((b, t, inp)).unwrap()).unwrap();
    let w = Var::from_tensor(&tensor(out, inp, 81)).unwrap();
    let u = tensor(b * t, out, 82).reshape((b, t, out)).unwrap();
    let unread = gemm::linear_unread(x.as_tensor(), w.as_tensor(), None).unwrap();
    assert_eq!(unread.dims(), &[b, t, out]);
    assert!(
        flat(&unread).iter().all(|&v| v == 0.0),
        "an unread value is zeros"
    );
    let read = gemm::linear(x.as_tensor(), w.as_tensor()).unwrap();
    assert!(flat(&read).iter().any(|&v| v != 0.0));
    assert_same_gradients(unread, read, &u, [("dx", &x), ("dW", &w)]);
}

#[test]
fn trainable_linear_gradients_match_finite_differences() {
    let _guard = GLOBAL.lock().unwrap();
    ops::set_fused(true);
    let (rows, out, inp) = (5, 4, 6);
    let xv = values(rows * inp, 20);
    let wv = values(out * inp, 21);
    let u = tensor(rows, out, 22);
    let loss = |xv: &[f32], wv: &[f32]| -> f64 {
        let x = Tensor::from_slice(xv, (rows, inp), &Device::Cpu).unwrap();
        let w = Tensor::from_slice(wv, (out, inp), &Device::Cpu).unwrap();
        let y = gemm::linear(&x, &w).unwrap();
        (y * &u)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64
    };
    let x = Var::from_slice(&xv, (rows, inp), &Device::Cpu).unwrap();
    let w = Var::from_slice(&wv, (out, inp), &Device::Cpu).unwrap();
    let y = gemm::linear(x.as_tensor(), w.as_tensor()).unwrap();
    let grads = (y * &u).unwrap().sum_all().unwrap().backward().unwrap();
    let eps = 1e-2f32;
    for (which, base, var) in [(0, &xv, &x), (1, &wv, &w)] {
        let analytic = flat(grads.get(var.as_tensor()).unwrap());
        for i in 0..base.len() {
            let (mut plus, mut minus) = (base.clone(), base.clone());
            plus[i] += eps;
            minus[i] -= eps;
            let numeric = if which == 0 {
                (loss(&plus, &wv) - loss(&minus, &wv)) / (2.0 * eps as f64)
            } else {
                (loss(&xv, &plus) - loss(&xv, &minus)) / (2.0 * eps as f64)
            };
            assert!(
                (analytic[i] as f64 - numeric).abs() < 2e-3,
                "operand {which} [{i}]: {} vs {numeric}",
                analytic[i]
            );
        }
    }
}

#[test]
fn frozen_linear_yields_no_weight_gradient() {
    let _guard = GLOBAL.lock().unwrap();
    ops::set_fused(true);
    let x = Var::from_tensor(&tensor(9, 6, 30)).unwrap();
    let w = tensor(4, 6, 31);
    let layer = Linear::new(Param::Frozen(w.clone()), None);
    let y = layer.forward(x.as_tensor()).unwrap();
    let grads = y.sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&w).is_none());
    // d(sum y)/dx[r][c] = sum over outputs of W[o][c].
    let col_sums = flat(&w.sum(0).unwrap());
    let dx = flat(grads.get(x.as_tensor()).unwrap());
    for (i, v) in dx.iter().enumerate() {
        assert!((v - col_sums[i % 6]).abs() < 1e-5);
    }
    let y2 = frozen_matmul(x.as_tensor(), &w).unwrap();
    assert_close(
        &flat(&y2),
        &flat(&layer.forward(x.as_tensor()).unwrap()),
        0.0,
        "frozen_matmul",
    );
}

#[test]
fn input_without_graph_gets_only_the_weight_gradient() {
    let _guard = GLOBAL.lock().unwrap();
    ops::set_fused(true);
    let x = tensor(8, 3, 40);
    let w = Var::from_tensor(&tensor(2, 3, 41)).unwrap();
    let y = gemm::linear(&x, w.as_tensor()).unwrap();
    let grads = y.sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&x).is_none());
    // d(sum y)/dW[o][c] = sum over rows of x[r][c].
    let want = flat(&x.sum(0).unwrap());
    let dw = flat(grads.get(w.as_tensor()).unwrap());
    for (i, v) in dw.iter().enumerate() {
        assert!((v - want[i % 3]).abs() < 1e-5);
    }
}

/// With a gradient sink, the weight gradient (used twice, so it must add up) lands in the sink
/// under the weight's id, equal to the one candle's store gets without a sink; the store then
/// holds the input's gradient only.
#[test]
fn a_grad_sink_takes_the_weight_gradient_instead_of_the_store() {
    use std::sync::Arc;
    use tunescope::model::grad_sink::GradSink;
    let _guard = GLOBAL.lock().unwrap();
    ops::set_fused(true);
    let x = Var::from_tensor(&tensor(7, 5, 60)).unwrap();
    let x2 = tensor(7, 5, 62);
    let w = Var::from_tensor(&tensor(4, 5, 61)).unwrap();
    let u = tensor(7, 4, 63);
    let loss = |sink: Option<&Arc<GradSink>>| {
        let a = gemm::linear_with_grad_sink(x.as_tensor(), w.as_tensor(), sink).unwrap();
        let b = gemm::linear_with_grad_sink(&x2, w.as_tensor(), sink).unwrap();
        ((a * &u).unwrap() + b.sqr().unwrap())
            .unwrap()
            .sum_all()
            .unwrap()
    };
    let plain = loss(None).backward().unwrap();
    let sink = Arc::new(GradSink::new());
    let store = loss(Some(&sink)).backward().unwrap();
    assert!(store.get(w.as_tensor()).is_none());
    let mut aside = sink.take();
    assert_eq!(aside.len(), 1);
    let dw = aside
        .remove(&w.id())
        .expect("the weight's gradient is in the sink");
    assert_close(
        &flat(&dw),
        &flat(plain.get(w.as_tensor()).unwrap()),
        1e-6,
        "dW",
    );
    assert_close(
        &flat(store.get(x.as_tensor()).unwrap()),
        &flat(plain.get(x.as_tensor()).unwrap()),
        0.0,
        "dx",
    );
}

#[test]
fn transposed_and_offset_inputs_are_read_correctly() {
    let _guard = GLOBAL.lock().unwrap();
    ops::set_fused(true);
    // A transposed view (copied to rows) and a narrowed view (rows with padding and an offset).
    let xt = tensor(6, 9, 50).t().unwrap();
    let wide = tensor(5, 10, 51).narrow(1, 2, 6).unwrap();
    let ours = gemm::linear(&xt, &wide).unwrap();
    let theirs = xt.matmul(&wide.t().unwrap()).unwrap();
    assert_close(&flat(&ours), &flat(&theirs), 1e-5, "strided");
}

#[test]
fn composed_ops_keep_candles_matmul() {
    let _guard = GLOBAL.lock().unwrap();
    ops::set_fused(false);
    let x = tensor(4, 3, 60);
    let w = Var::from_tensor(&tensor(2, 3, 61)).unwrap();
    let layer = Linear::new(Param::Trainable(w), None);
    let before = ops::fused_calls_on_this_thread();
    let y = layer.forward(&x);
    let after = ops::fused_calls_on_this_thread();
    ops::set_fused(true);
    assert_eq!(y.unwrap().dims(), &[4, 2]);
    assert_eq!(after, before, "composed mode ran the GEMM op");
    assert!(!gemm::handles(
        &x.to_dtype(candle_core::DType::BF16).unwrap(),
        &x
    ));
}

#[test]
fn bench_gemm_prints_the_backend_and_every_product() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tunescope"))
        .args([
            "bench", "--gemm", "--steps", "1", "--batch", "1", "--seq", "2", "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["backend"], gemm::backend_name());
    assert_eq!(report["rows"], 2);
    // Five SmolLM2-135M weight shapes × three products.
    assert_eq!(report["timings"].as_array().unwrap().len(), 15);
}

#[test]
fn bench_refuses_an_unknown_gemm_threading() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tunescope"))
        .args(["bench", "--gemm", "--gemm-threading", "rayon"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown --gemm-threading `rayon`; expected pool or backend"),
        "{err}"
    );
}

#[test]
fn sgemm_uninit_writes_every_element_and_reads_none() {
    // NaN stands for whatever a fresh buffer holds: a backend that read C with beta 0 would
    // carry it into the result (0 · NaN is NaN).
    for (m, n, k) in [(65, 129, 7), (512, 192, 64), (3, 5, 0)] {
        let a = values(m * k, 11);
        let b = values(n * k, 12);
        let mut want = vec![0f32; m * n];
        let op_a = gemm::Operand {
            data: &a,
            ld: k,
            trans: false,
        };
        let op_b = gemm::Operand {
            data: &b,
            ld: k,
            trans: true,
        };
        gemm::sgemm(m, n, k, op_a, op_b, 0.0, &mut want, n).unwrap();
        let mut c = vec![std::mem::MaybeUninit::new(f32::NAN); m * n];
        gemm::sgemm_uninit(m, n, k, op_a, op_b, &mut c, n).unwrap();
        // SAFETY: every element was initialised (to NaN) before the call.
        let got: Vec<f32> = c.iter().map(|v| unsafe { v.assume_init() }).collect();
        assert_eq!(got, want, "m {m} n {n} k {k}");
    }
}
