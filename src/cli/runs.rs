//! `tunescope runs`: list run directories with their state and last metrics.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::run::{list_runs, Record, RunState};
use crate::util::process::pid_alive;

#[derive(Debug, Args)]
pub struct RunsArgs {
    /// Directory holding run directories.
    #[arg(long, default_value = "runs")]
    runs: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: RunsArgs) -> Result<()> {
    let runs = list_runs(&args.runs);
    let mut rows = Vec::new();
    for run in &runs {
        let status = run.read_status().ok();
        let log = run.read_records().unwrap_or_default();
        let last_loss = log.iter().rev().find_map(|r| match r {
            Record::Train(m) => Some(m.loss),
            _ => None,
        });
        let mut state = status
            .as_ref()
            .map_or("unknown".to_string(), |s| s.state.as_str().to_string());
        if let Some(s) = &status {
            if s.state == RunState::Running && !s.pid.is_some_and(pid_alive) {
                state = "dead".into();
            }
        }
        rows.push(serde_json::json!({
            "run": crate::run::sequence::display_name(run.path()),
            "path": run.path(),
            "state": state,
            "step": status.as_ref().map(|s| s.step),
            "total_steps": status.as_ref().map(|s| s.total_steps),
            "loss": last_loss,
            "updated_at": status.as_ref().map(|s| s.updated_at.clone()),
            "error": status.as_ref().and_then(|s| s.last_error.clone()),
        }));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("no runs in {}", args.runs.display());
        return Ok(());
    }
    println!(
        "{:<40} {:<9} {:>11} {:>9}  updated",
        "run", "state", "step", "loss"
    );
    for row in rows {
        let step = format!(
            "{}/{}",
            row["step"].as_u64().unwrap_or(0),
            row["total_steps"].as_u64().unwrap_or(0)
        );
        let loss = row["loss"]
            .as_f64()
            .map_or("-".into(), |l| format!("{l:.4}"));
        println!(
            "{:<40} {:<9} {:>11} {:>9}  {}",
            row["run"].as_str().unwrap_or("?"),
            row["state"].as_str().unwrap_or("?"),
            step,
            loss,
            row["updated_at"].as_str().unwrap_or("")
        );
        if let Some(error) = row["error"].as_str() {
            println!("    last error: {error}");
        }
    }
    Ok(())
}
