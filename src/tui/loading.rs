//! Opening the recipe's model off the loop (a hub model may download for minutes), with the
//! download's progress shown on the status line instead of printed behind the alternate screen.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::app::App;
use super::model_state::ModelState;
use crate::model::progress::DownloadProgress;
use crate::plan::StepShape;
use crate::select::TrainableSpec;
use crate::util::format::human_bytes;

/// A model to open for the Model pane.
#[derive(Debug, Clone)]
pub struct ModelRequest {
    /// Which request this is; answers to older ones are dropped.
    pub generation: u64,
    pub spec: String,
    pub trainable: TrainableSpec,
    pub shape: StepShape,
}

impl ModelRequest {
    /// Opens the model (blocking: run it on a worker thread).
    pub fn open(&self) -> Result<ModelState, String> {
        ModelState::open(&self.spec, &self.trainable, self.shape).map_err(|e| format!("{e:#}"))
    }
}

impl App {
    /// Applies an opened model (or its error), unless a newer request replaced it.
    pub fn model_loaded(&mut self, generation: u64, result: Result<ModelState, String>) -> bool {
        if generation != self.model_generation {
            return false;
        }
        self.activity = None;
        match result {
            Ok(state) => self.model = Some(state),
            Err(e) => self.model_error = Some(e),
        }
        true
    }
}

/// Download progress as one status line, sent at most every 100 ms (and at each start and end).
pub struct StatusProgress {
    send: Box<dyn Fn(String) + Send + Sync>,
    state: Mutex<(String, usize, usize, Option<Instant>)>,
}

impl StatusProgress {
    /// Progress lines go to `send`.
    pub fn new(send: impl Fn(String) + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Self {
            send: Box::new(send),
            state: Mutex::new((String::new(), 0, 0, None)),
        })
    }
}

impl DownloadProgress for StatusProgress {
    fn started(&self, file: &str, bytes: usize) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) =
            (file.to_string(), 0, bytes, Some(Instant::now()));
        (self.send)(format!(
            "downloading {file} ({})",
            human_bytes(bytes as u64)
        ));
    }

    fn advanced(&self, _file: &str, bytes: usize) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.1 += bytes;
        if state
            .3
            .is_some_and(|t| t.elapsed() < Duration::from_millis(100))
        {
            return;
        }
        state.3 = Some(Instant::now());
        let (file, done, total) = (&state.0, state.1, state.2.max(1));
        (self.send)(format!(
            "downloading {file}: {} of {} ({:.0}%)",
            human_bytes(done as u64),
            human_bytes(total as u64),
            done as f64 * 100.0 / total as f64
        ));
    }

    fn finished(&self, file: &str) {
        (self.send)(format!("downloaded {file}"));
    }
}
