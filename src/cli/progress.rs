//! Hub download progress on the command line: one indicatif bar per file, on stderr.

use std::sync::{Arc, Mutex};

use indicatif::{ProgressBar, ProgressStyle};

use crate::model::progress::{set_download_progress, DownloadProgress};

/// Draws each hub download as a bar on stderr.
#[derive(Default)]
pub struct Bars {
    bar: Mutex<Option<ProgressBar>>,
}

impl DownloadProgress for Bars {
    fn started(&self, file: &str, bytes: usize) {
        let bar = ProgressBar::new(bytes as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:24} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(file.to_string());
        *self.bar.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar);
    }

    fn advanced(&self, _file: &str, bytes: usize) {
        if let Some(bar) = &*self.bar.lock().unwrap_or_else(|e| e.into_inner()) {
            bar.inc(bytes as u64);
        }
    }

    fn finished(&self, _file: &str) {
        if let Some(bar) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).take() {
            bar.finish();
        }
    }
}

/// Shows hub downloads as bars when stderr is a terminal.
pub fn install() {
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        set_download_progress(Some(Arc::new(Bars::default())));
    }
}
