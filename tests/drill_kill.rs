//! Drill: the real binary is killed with SIGKILL at seeded random moments (many of them during
//! checkpoint writes) and resumed with `train --resume` until it finishes. The final weights
//! equal an uninterrupted run's bit for bit, every step's loss is the same, and both readers
//! (`RunDir::read_records` and a `RunReader` that followed the run through every kill) see each
//! step exactly once.
#![cfg(unix)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::TinyModel;
use tunescope::model::Architecture;
use tunescope::recipe::Recipe;
use tunescope::run::reader::RunReader;
use tunescope::run::{Record, RunDir, RunState};

const STEPS: usize = 60;
/// Kills aimed for; after them the run is left to finish.
const KILLS: usize = 50;

/// Seeded splitmix64: the kill moments are the same on every run of the drill.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// 24 short counting examples.
fn write_data(dir: &Path) -> PathBuf {
    let lines: String = (1..=24)
        .map(|i| {
            let n = i % 5 + 1;
            let prompt = format!("how many apple : {}", vec!["apple"; n].join(" "));
            serde_json::json!({"prompt": prompt, "response": n.to_string()}).to_string() + "\n"
        })
        .collect();
    let path = dir.join("data.jsonl");
    std::fs::write(&path, lines).unwrap();
    path
}

/// A checkpoint after every step (two kept), so kills land during checkpoint writes and prunes.
fn write_recipe(tiny: &TinyModel, dir: &Path) -> PathBuf {
    let recipe = Recipe {
        name: "drill".into(),
        model: Some(tiny.spec_str()),
        data: Some(write_data(dir).to_string_lossy().into_owned()),
        max_steps: Some(STEPS),
        batch_size: 4,
        checkpoint_every: 1,
        keep_checkpoints: 2,
        trainable: tunescope::select::preset("sa-proj").unwrap(),
        output_dir: dir.join("runs").to_string_lossy().into_owned(),
        ..Recipe::default()
    };
    let path = dir.join("recipe.yaml");
    std::fs::write(&path, recipe.to_yaml().unwrap()).unwrap();
    path
}

/// `train` into `run_dir`: a new run while it has no recipe snapshot, else `--resume`.
fn train_command(recipe: &Path, run_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tunescope"));
    if run_dir.join("recipe.yaml").is_file() {
        cmd.arg("train").arg("--resume").arg(run_dir);
    } else {
        cmd.arg("train").arg(recipe).arg("--run-dir").arg(run_dir);
    }
    cmd.arg("--plain")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

fn train_to_the_end(recipe: &Path, run_dir: &Path) {
    let out = train_command(recipe, run_dir).output().unwrap();
    assert!(
        out.status.success(),
        "train into {} failed:\n{}",
        run_dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn final_weights(run_dir: &Path) -> Vec<u8> {
    let path = run_dir.join("final/model.safetensors");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// (step, loss) of every `train` record.
fn train_losses(run: &RunDir) -> Vec<(usize, f64)> {
    run.read_records()
        .unwrap()
        .iter()
        .filter_map(|r| match r {
            Record::Train(m) => Some((m.step, m.loss)),
            _ => None,
        })
        .collect()
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// Whether a checkpoint temporary (`checkpoints/.step-N.tmp`) made since `since` exists: a
/// checkpoint is being written, or was when its writer died.
fn new_checkpoint_temporary(run_dir: &Path, since: SystemTime) -> bool {
    std::fs::read_dir(run_dir.join("checkpoints"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .any(|e| {
            e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= since)
        })
}

/// Temporaries (`.NAME.tmp-PID`, `.step-N.tmp`) anywhere under `dir`.
fn temporaries(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if entry.file_name().to_string_lossy().contains(".tmp") {
                found.push(path.clone());
            }
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
    found
}

#[test]
fn kill_9_at_random_moments_then_resume_gives_the_same_model() {
    let started = Instant::now();
    let tiny = TinyModel::new(Architecture::Qwen2, 19);
    let tmp = tempfile::tempdir().unwrap();
    let recipe = write_recipe(&tiny, tmp.path());

    // Training is deterministic on the CPU: two uninterrupted runs give the same bytes.
    let reference = tmp.path().join("reference");
    let t0 = Instant::now();
    train_to_the_end(&recipe, &reference);
    let clean_run = t0.elapsed();
    let again = tmp.path().join("again");
    train_to_the_end(&recipe, &again);
    assert!(
        final_weights(&reference) == final_weights(&again),
        "two uninterrupted runs of the same recipe differ: training is not deterministic"
    );
    let reference_run = RunDir::open(&reference).unwrap();
    let reference_losses = train_losses(&reference_run);
    assert_eq!(reference_losses.len(), STEPS);

    // Start-up time (process, model, data, lock, records) measured by resuming a finished run:
    // it trains nothing and exports again.
    let t0 = Instant::now();
    train_to_the_end(&recipe, &again);
    let startup = t0.elapsed().as_millis().max(1) as u64;
    let step_ms = (clean_run.as_millis() as u64)
        .saturating_sub(startup)
        .max(STEPS as u64) as f64
        / STEPS as f64;

    // Kill moments: a quarter during start-up, the rest among the next steps and their
    // checkpoint writes, spread so that the kills last until the run's end.
    let mut rng = Rng(0x6b69_6c6c);
    let drilled = tmp.path().join("drilled");
    let run = || RunDir::open(&drilled).ok();
    let mut follower: Option<RunReader> = None;
    let (mut kills, mut launches, mut finished) = (0usize, 0usize, false);
    let (mut mid_checkpoint, mut torn_tails, mut before_first_checkpoint) = (0usize, 0usize, 0);
    let mut restarts = 0usize;
    while !finished {
        launches += 1;
        assert!(launches <= 2 * KILLS, "the drilled run does not finish");
        let reached = run().and_then(|r| r.latest_checkpoint());
        restarts += usize::from(run().is_some() && reached.is_none());
        let reached = reached.unwrap_or(0);
        let launched = SystemTime::now();
        let mut child = train_command(&recipe, &drilled).spawn().unwrap();
        if kills < KILLS {
            let budget = step_ms * (STEPS - reached) as f64 / (KILLS - kills) as f64;
            match rng.below(4) {
                // During start-up (the first kills: before the first checkpoint).
                _ if kills < 3 => sleep_ms(rng.below(startup / 2 + 1)),
                0 => sleep_ms(rng.below(startup)),
                // Aimed at a checkpoint write: as soon as its temporary appears, within 1 ms.
                1 => {
                    let deadline =
                        Instant::now() + Duration::from_millis(startup + (4.0 * budget) as u64);
                    while Instant::now() < deadline
                        && !new_checkpoint_temporary(&drilled, launched)
                        && child.try_wait().unwrap().is_none()
                    {
                        std::thread::sleep(Duration::from_micros(100));
                    }
                    std::thread::sleep(Duration::from_micros(rng.below(1000)));
                }
                _ => sleep_ms(startup + rng.below((2.0 * budget) as u64 + 1)),
            }
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
                before_first_checkpoint +=
                    usize::from(run().and_then(|r| r.latest_checkpoint()).is_none());
                if let Some(r) = run() {
                    mid_checkpoint += usize::from(new_checkpoint_temporary(&drilled, launched));
                    let text = std::fs::read(r.metrics_path()).unwrap_or_default();
                    torn_tails += usize::from(!text.is_empty() && !text.ends_with(b"\n"));
                }
            }
        }
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            finished = true;
        } else if out.status.code().is_some() {
            panic!(
                "a resume after {kills} kills failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // A reader that follows the run through every kill and rewrite.
        if let Some(dir) = run() {
            follower
                .get_or_insert_with(|| RunReader::new(dir))
                .refresh();
        }
    }
    let run = run().unwrap();
    assert_eq!(run.read_status().unwrap().state, RunState::Finished);
    let leftovers = temporaries(run.path());
    assert!(
        leftovers.is_empty(),
        "temporaries of killed writers are left behind: {leftovers:?}"
    );

    assert!(
        final_weights(&drilled) == final_weights(&reference),
        "after {kills} kills the final weights differ from an uninterrupted run's"
    );
    assert_eq!(
        train_losses(&run),
        reference_losses,
        "each step once, with the uninterrupted run's loss"
    );
    let log = run.read_records().unwrap();
    assert_eq!(log.unknown, 0, "{log:?}");
    let finished_records = log
        .iter()
        .filter(|r| matches!(r, Record::Finished { .. }))
        .count();
    assert!(finished_records >= 1, "{log:?}");

    let steps_seen = |reader: &RunReader| -> Vec<usize> {
        reader
            .snapshot()
            .loss
            .iter()
            .map(|(x, _)| *x as usize)
            .collect()
    };
    let all: Vec<usize> = (1..=STEPS).collect();
    let mut follower = follower.expect("the run directory exists");
    follower.refresh();
    assert_eq!(steps_seen(&follower), all, "the following reader");
    let mut fresh = RunReader::new(run.clone());
    fresh.refresh();
    assert_eq!(steps_seen(&fresh), all, "a fresh reader");

    eprintln!(
        "kill drill: survived {kills} kills (SIGKILL) over {launches} launches of a {STEPS}-step \
         run with a checkpoint each step: {mid_checkpoint} left a checkpoint half-written, \
         {torn_tails} a torn metrics line, {before_first_checkpoint} came before the first \
         checkpoint ({restarts} resumes started over from step 0); final weights bit-identical to an uninterrupted run; start-up {startup} ms, \
         {step_ms:.1} ms a step; drill {:.1}s",
        started.elapsed().as_secs_f64()
    );
    // Kills are timed from the measured step time; under a loaded CI machine the run can reach
    // its end before the last planned kills land (the count is printed above).
    assert!(kills >= KILLS / 2, "only {kills} of {KILLS} kills landed");
}
