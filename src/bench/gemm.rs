//! GEMM micro-benchmark (`tunescope bench --gemm`): GFLOP/s of the three products of a linear
//! layer (forward `x·Wᵀ`, input gradient `g·W`, weight gradient `gᵀ·x`) for SmolLM2-135M's
//! weight shapes, under both threadings of [`crate::model::ops::gemm`].

use std::time::Instant;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::median;
use crate::model::ops::gemm::{self, Operand, Threading};

/// SmolLM2-135M's linear weights as (name, out, in).
pub const SMOLLM2_SHAPES: [(&str, usize, usize); 5] = [
    ("q/o 576×576", 576, 576),
    ("k/v 192×576", 192, 576),
    ("gate/up 1536×576", 1536, 576),
    ("down 576×1536", 576, 1536),
    ("lm_head 49152×576", 49152, 576),
];

/// The three products of a linear layer.
pub const PRODUCTS: [&str; 3] = ["forward", "input-grad", "weight-grad"];

/// One product measured under both threadings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GemmTiming {
    pub weight: String,
    pub product: String,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// Median GFLOP/s with the output split over candle's pool ([`Threading::Pool`]).
    pub pool_gflops: f64,
    /// Median GFLOP/s with the backend threading itself ([`Threading::Backend`]).
    pub backend_gflops: f64,
}

/// The whole micro-benchmark.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GemmReport {
    pub backend: String,
    pub threads: usize,
    pub rows: usize,
    pub reps: usize,
    pub timings: Vec<GemmTiming>,
}

/// (m, n, k, A transposed, B transposed) of `product` for a weight of `out × in` and `rows`
/// input rows, with A and B as stored: x or g (rows × in / rows × out) and W (out × in).
fn dims(product: &str, rows: usize, out: usize, inp: usize) -> (usize, usize, usize, bool, bool) {
    match product {
        "forward" => (rows, out, inp, false, true),
        "input-grad" => (rows, inp, out, false, false),
        _ => (out, inp, rows, true, false),
    }
}

/// Median seconds of `reps` calls (after one untimed call).
fn time(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed().as_secs_f64());
    }
    Ok(median(&times))
}

/// Measures every product of every shape in `shapes` with `rows` input rows: every product
/// with the pool split (after an untimed pass), then every product with the backend's own
/// threading. Changing OpenBLAS's thread count wakes its own threads, which then spin for
/// about 2^28 cycles (`OPENBLAS_THREAD_TIMEOUT`) before they sleep, taking a core from
/// whatever runs meanwhile: measured product by product, alternating the threadings, the
/// pool's figures came out at half speed for whichever products that spin overlapped.
pub fn run(rows: usize, reps: usize, shapes: &[(&str, usize, usize)]) -> Result<GemmReport> {
    if rows == 0 || reps == 0 {
        bail!("bench --gemm needs --batch × --seq ≥ 1 and --steps ≥ 1");
    }
    measure_all(rows, 1, shapes, Threading::Pool)?;
    let pool = measure_all(rows, reps, shapes, Threading::Pool)?;
    let backend = measure_all(rows, reps, shapes, Threading::Backend)?;
    let timings = shapes
        .iter()
        .flat_map(|&(name, out, inp)| {
            PRODUCTS
                .iter()
                .map(move |&product| (name, product, dims(product, rows, out, inp)))
        })
        .zip(pool.into_iter().zip(backend))
        .map(
            |((name, product, (m, n, k, _, _)), (pool_gflops, backend_gflops))| GemmTiming {
                weight: name.to_string(),
                product: product.to_string(),
                m,
                n,
                k,
                pool_gflops,
                backend_gflops,
            },
        )
        .collect();
    Ok(GemmReport {
        backend: gemm::backend_name().to_string(),
        threads: gemm::pool_threads(),
        rows,
        reps,
        timings,
    })
}

/// GFLOP/s of every product (in [`PRODUCTS`] order) of every shape with `threading`.
fn measure_all(
    rows: usize,
    reps: usize,
    shapes: &[(&str, usize, usize)],
    threading: Threading,
) -> Result<Vec<f64>> {
    let mut gflops = Vec::new();
    for &(_, out, inp) in shapes {
        let x = vec![0.5f32; rows * inp];
        let g = vec![0.25f32; rows * out];
        let w = vec![0.125f32; out * inp];
        for product in PRODUCTS {
            let (m, n, k, ta, tb) = dims(product, rows, out, inp);
            let (a, lda, b, ldb) = match product {
                "forward" => (&x, inp, &w, inp),
                "input-grad" => (&g, out, &w, inp),
                _ => (&g, out, &x, inp),
            };
            let mut c = vec![0f32; m * n];
            let seconds = time(reps, || {
                let op_a = Operand {
                    data: a,
                    ld: lda,
                    trans: ta,
                };
                let op_b = Operand {
                    data: b,
                    ld: ldb,
                    trans: tb,
                };
                gemm::sgemm_with(m, n, k, op_a, op_b, 0.0, &mut c, n, threading)?;
                Ok(())
            })?;
            gflops.push(2.0 * (m * n * k) as f64 / seconds.max(1e-12) / 1e9);
        }
    }
    Ok(gflops)
}

/// The micro-benchmark as a Markdown table with a header line.
pub fn render(report: &GemmReport) -> String {
    let mut out = format!(
        "GEMM backend {} · {} threads · {} rows · median of {} calls after 1\n\n",
        report.backend, report.threads, report.rows, report.reps
    );
    out.push_str("| weight | product | m×n×k | pool GFLOP/s | backend GFLOP/s |\n");
    out.push_str("|---|---|---|---|---|\n");
    for t in &report.timings {
        out.push_str(&format!(
            "| {} | {} | {}×{}×{} | {:.1} | {:.1} |\n",
            t.weight, t.product, t.m, t.n, t.k, t.pool_gflops, t.backend_gflops
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_every_product_of_every_shape() {
        let report = run(9, 1, &[("tiny", 5, 3), ("wide", 7, 11)]).unwrap();
        assert_eq!(report.timings.len(), 6);
        let wg = &report.timings[5];
        assert_eq!(
            (wg.product.as_str(), wg.m, wg.n, wg.k),
            ("weight-grad", 7, 11, 9)
        );
        assert!(report
            .timings
            .iter()
            .all(|t| t.pool_gflops > 0.0 && t.backend_gflops > 0.0));
        assert!(render(&report).contains("| wide | input-grad | 9×11×7 |"));
    }
}
