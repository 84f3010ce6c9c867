//! `tunescope interpolate RUN`: WiSE-FT along a finished run — each α probed and scored, the
//! learning against forgetting curve as a table, and the chosen α written out as a model.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use crate::interpolate::{best_alpha, parse_alphas, AlphaPoint, Interpolation};

#[derive(Debug, Args)]
pub struct InterpolateArgs {
    /// A finished run directory.
    run: PathBuf,
    /// The points: a list (`0,0.5,1`) or a range (`0:1:0.1`, end included). 0 = base, 1 = tuned.
    #[arg(long, default_value = "0:1:0.1")]
    alphas: String,
    /// Write the model at this α (`best`: the largest Δ target + Δ held-out among the points).
    #[arg(long, value_name = "ALPHA|best", requires = "out")]
    write: Option<String>,
    /// Directory the model of --write goes to (written atomically).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the points as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: InterpolateArgs) -> Result<()> {
    let alphas = parse_alphas(&args.alphas)?;
    let written = match args.write.as_deref() {
        None | Some("best") => None,
        Some(text) => Some(parse_alphas(text)?[0]),
    };
    let mut interpolation = Interpolation::open(&args.run)?;
    let mut points = Vec::with_capacity(alphas.len());
    for alpha in alphas {
        let point = interpolation.score(alpha)?;
        if !args.json {
            eprintln!("α {alpha:.2}: {:.1} s", point.seconds);
        }
        points.push(point);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&points)?);
    } else {
        print!("{}", table(&points));
    }
    if let (Some(choice), Some(out)) = (args.write.as_deref(), &args.out) {
        let alpha = match written {
            Some(alpha) => alpha,
            None => match best_alpha(&points) {
                Some(alpha) => alpha,
                None => bail!("--write {choice}: no point has both a target and a held-out score"),
            },
        };
        interpolation.write_model(alpha, out)?;
        eprintln!("wrote the model at α {alpha:.3} to {}", out.display());
    }
    Ok(())
}

fn opt(v: Option<f64>, signed: bool, decimals: usize) -> String {
    match v {
        Some(v) if signed => format!("{v:+.decimals$}"),
        Some(v) => format!("{v:.decimals$}"),
        None => "n/a".into(),
    }
}

/// The points as a table, best α marked.
pub fn table(points: &[AlphaPoint]) -> String {
    let best = best_alpha(points);
    let mut text = format!(
        "{:>6}  {:>14}  {:>14}  {:>19}  {:>10}\n",
        "α", "Δ target (pp)", "Δ held-out (pp)", "held-out num. mass", "KL held-out"
    );
    for p in points {
        let mark = if Some(p.alpha) == best {
            "  ← best"
        } else {
            ""
        };
        text.push_str(&format!(
            "{:>6.2}  {:>14}  {:>14}  {:>19}  {:>10}{mark}\n",
            p.alpha,
            opt(p.delta_target, true, 1),
            opt(p.delta_heldout, true, 1),
            opt(p.heldout_numeric_mass, false, 4),
            opt(p.heldout_kl, false, 4),
        ));
    }
    text
}
