//! The bench report as a Markdown table.

use super::{BenchReport, PytorchReference};

/// Human-readable count (`26.5M`).
fn count(n: usize) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.2}B", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.1}M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1}K", n / 1e3)
    } else {
        format!("{n}")
    }
}

/// A positive number with about three significant digits.
fn sig3(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else if x >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// Seconds with a unit that keeps three significant digits.
fn secs(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.2} s")
    } else {
        format!("{:.1} ms", s * 1e3)
    }
}

/// The report as a Markdown table plus a header line.
pub fn render_table(report: &BenchReport) -> String {
    let c = &report.config;
    let mut out = format!(
        "model {} · batch {} × seq {} · {} · {} · {} threads{} · median of {} steps after {} warm-up · {} ops · GEMM {} ({} threading){}\n\n",
        c.model,
        c.batch,
        c.seq,
        c.dtype,
        c.device,
        report.threads,
        c.pool_threads
            .map_or(String::new(), |n| format!(" (CANDLE_NUM_THREADS={n})")),
        c.steps,
        c.warmup,
        if c.fused { "fused" } else { "composed" },
        report.gemm_backend,
        c.gemm_threading,
        if c.activation_checkpointing {
            " · activation checkpointing"
        } else {
            ""
        }
    );
    out.push_str(
        "| recipe | trainable | step | forward | backward | optimizer | tokens/s | GFLOP/step | GFLOP/s | peak RSS | above load | probe prompts/s | probe tok/s | decode tok/s |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in &report.results {
        let gib = |b: u64| format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64);
        let rss = r.peak_rss_bytes.map_or("n/a".to_string(), gib);
        // What the steps added to the loaded model: activations, gradients, AdamW moments.
        let above = match (r.peak_rss_bytes, r.rss_before_steps_bytes) {
            (Some(peak), Some(before)) => gib(peak.saturating_sub(before)),
            _ => "n/a".to_string(),
        };
        let (pps, tps, dps) = r
            .probe
            .map_or(("n/a".into(), "n/a".into(), "n/a".into()), |p| {
                (
                    format!("{:.2}", p.prompts_per_s),
                    format!("{:.1}", p.generated_tokens_per_s),
                    format!("{:.1}", p.decode_tokens_per_s),
                )
            });
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.recipe,
            count(r.trainable_params),
            secs(r.times.step),
            secs(r.times.forward),
            secs(r.times.backward),
            secs(r.times.optimizer),
            r.tokens_per_s,
            sig3(r.flops_per_step.total() / 1e9),
            sig3(r.gflops_per_s),
            rss,
            above,
            pps,
            tps,
            dps
        ));
    }
    if let Some(reference) = &report.pytorch {
        out.push_str(&pytorch_table(report, reference));
    }
    out
}

/// The side-by-side table against PyTorch's figures, with the cost of full tuning against
/// `sa-proj` on both sides when both were measured.
fn pytorch_table(report: &BenchReport, reference: &PytorchReference) -> String {
    let gib = |b: u64| format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64);
    let mut out = format!(
        "\nagainst PyTorch {} ({} threads, same batch × seq):\n\n\
         | recipe | tunescope tok/s | PyTorch tok/s | ratio | tunescope peak RSS | PyTorch peak RSS |\n\
         |---|---|---|---|---|---|\n",
        reference.torch, reference.threads
    );
    for r in &report.results {
        let Some(theirs) = reference.recipes.get(&r.recipe) else {
            out.push_str(&format!(
                "| {} | {:.0} | not measured | | | |\n",
                r.recipe, r.tokens_per_s
            ));
            continue;
        };
        out.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.2}× | {} | {} |\n",
            r.recipe,
            r.tokens_per_s,
            theirs.tokens_per_s,
            r.tokens_per_s / theirs.tokens_per_s.max(1e-12),
            r.peak_rss_bytes.map_or("n/a".to_string(), gib),
            gib(theirs.peak_rss_bytes)
        ));
    }
    let ours = |name: &str| {
        report
            .results
            .iter()
            .find(|r| r.recipe == name)
            .map(|r| r.times.step)
    };
    let theirs = |name: &str| reference.recipes.get(name).map(|r| r.step_s);
    if let (Some(full), Some(sa), Some(full_pt), Some(sa_pt)) = (
        ours("full-llm"),
        ours("sa-proj"),
        theirs("full-llm"),
        theirs("sa-proj"),
    ) {
        out.push_str(&format!(
            "\nfull-llm step / sa-proj step: tunescope {:.2}, PyTorch {:.2}\n",
            full / sa.max(1e-12),
            full_pt / sa_pt.max(1e-12)
        ));
    }
    out
}
