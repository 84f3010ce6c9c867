//! The interpolation view's state and its worker: WiSE-FT along a finished run, α from the base
//! (0) to the tuned weights (1) in steps of 0.1. Points already in the run's cache show at once;
//! the others are probed and scored on a worker thread that owns the opened
//! [`Interpolation`](crate::interpolate::Interpolation), one job at a time, so the loop never
//! waits on a model. Drawing lives in `panes::interpolation`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};

use crate::interpolate::{best_alpha, cached, AlphaPoint, Interpolation};

/// The α grid of the view: 0, 0.1, …, 1.
pub const ALPHAS: usize = 11;

/// The α of grid index `i`.
pub fn alpha_at(i: usize) -> f64 {
    i as f64 / (ALPHAS - 1) as f64
}

/// What the view asks of its worker.
#[derive(Debug, Clone, PartialEq)]
pub enum Job {
    /// Probe and score the point at α.
    Score(f64),
    /// Write the model at α to a directory.
    Write(f64, PathBuf),
}

/// What the worker reports back.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// The run and its base references are ready (the slow first step).
    Opened(PathBuf),
    /// A point was probed and scored.
    Scored(PathBuf, AlphaPoint),
    /// The model at α was written.
    Written(PathBuf, f64, PathBuf),
    /// A job (or opening) failed.
    Failed(PathBuf, String),
}

/// A worker the loop should start: the run and the jobs it will receive.
pub struct WorkerStart {
    pub run: PathBuf,
    pub jobs: Receiver<Job>,
}

/// The view of one finished run.
#[derive(Clone)]
pub struct InterpolationView {
    pub run: PathBuf,
    /// Grid index under the cursor.
    pub cursor: usize,
    /// Points known, by grid index.
    pub points: BTreeMap<usize, AlphaPoint>,
    /// Grid indices asked for and not yet back.
    pub pending: BTreeSet<usize>,
    /// Whether the worker has opened the run (until then jobs wait in its queue).
    pub opened: bool,
    /// The last failure, shown in the view.
    pub error: Option<String>,
    jobs: Sender<Job>,
}

impl InterpolationView {
    /// A view of `run` with the points its cache holds, and the worker to start for the rest.
    pub fn open(run: &Path) -> (Self, WorkerStart) {
        let (jobs, receiver) = channel();
        let points = (0..ALPHAS)
            .filter_map(|i| Some((i, cached(run, alpha_at(i)).ok()??)))
            .collect();
        let view = Self {
            run: run.to_path_buf(),
            cursor: ALPHAS - 1,
            points,
            pending: BTreeSet::new(),
            opened: false,
            error: None,
            jobs,
        };
        let start = WorkerStart {
            run: run.to_path_buf(),
            jobs: receiver,
        };
        (view, start)
    }

    /// The α under the cursor.
    pub fn alpha(&self) -> f64 {
        alpha_at(self.cursor)
    }

    /// Asks for the point at grid index `i` unless it is known or already asked for.
    pub fn request(&mut self, i: usize) {
        if self.points.contains_key(&i) || self.pending.contains(&i) {
            return;
        }
        if self.jobs.send(Job::Score(alpha_at(i))).is_ok() {
            self.pending.insert(i);
        } else {
            self.error = Some("the interpolation worker has stopped".into());
        }
    }

    /// Asks for every point not yet known.
    pub fn request_all(&mut self) {
        for i in 0..ALPHAS {
            self.request(i);
        }
    }

    /// Asks for the model at `alpha` to be written to `out`.
    pub fn write(&self, alpha: f64, out: PathBuf) -> bool {
        self.jobs.send(Job::Write(alpha, out)).is_ok()
    }

    /// The known points in α order.
    pub fn sorted_points(&self) -> Vec<AlphaPoint> {
        self.points.values().cloned().collect()
    }

    /// The best α among the known points (largest Δ target + Δ held-out).
    pub fn best(&self) -> Option<f64> {
        best_alpha(&self.sorted_points())
    }

    /// Applies a worker's report; false when it belongs to another run.
    pub fn apply(&mut self, update: &Update) -> bool {
        match update {
            Update::Opened(run) if *run == self.run => self.opened = true,
            Update::Scored(run, point) if *run == self.run => {
                let i = grid_index(point.alpha);
                self.pending.remove(&i);
                self.points.insert(i, point.clone());
            }
            Update::Failed(run, why) if *run == self.run => {
                self.pending.clear();
                self.error = Some(why.clone());
            }
            Update::Written(run, ..) if *run == self.run => {}
            _ => return false,
        }
        true
    }
}

/// The grid index nearest to `alpha`.
pub fn grid_index(alpha: f64) -> usize {
    ((alpha * (ALPHAS - 1) as f64).round().max(0.0) as usize).min(ALPHAS - 1)
}

/// The worker's body: opens the run, then does each job until the view (the sender) is gone.
/// Runs on a thread of its own; `report` sends updates back to the loop.
pub fn work(start: WorkerStart, report: impl Fn(Update)) {
    let run = start.run;
    let mut interpolation = match Interpolation::open(&run) {
        Ok(i) => i,
        Err(e) => return report(Update::Failed(run, format!("{e:#}"))),
    };
    report(Update::Opened(run.clone()));
    while let Ok(job) = start.jobs.recv() {
        let update = match job {
            Job::Score(alpha) => match interpolation.score(alpha) {
                Ok(point) => Update::Scored(run.clone(), point),
                Err(e) => Update::Failed(run.clone(), format!("α {alpha:.1}: {e:#}")),
            },
            Job::Write(alpha, out) => match interpolation.write_model(alpha, &out) {
                Ok(()) => Update::Written(run.clone(), alpha, out),
                Err(e) => Update::Failed(run.clone(), format!("writing α {alpha:.1}: {e:#}")),
            },
        };
        report(update);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_runs_from_base_to_tuned_in_tenths() {
        assert_eq!(alpha_at(0), 0.0);
        assert_eq!(alpha_at(ALPHAS - 1), 1.0);
        assert_eq!(grid_index(0.3), 3);
        assert_eq!(grid_index(0.7000001), 7);
        assert_eq!(grid_index(2.0), ALPHAS - 1);
    }
}
