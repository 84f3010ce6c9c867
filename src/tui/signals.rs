//! SIGINT, SIGTERM and SIGHUP as one awaitable source for the loop (which then restores the
//! terminal; detached runs, in their own sessions, keep running).

use anyhow::Result;

/// The signals that end the workbench.
pub struct Signals {
    #[cfg(unix)]
    streams: [(tokio::signal::unix::Signal, &'static str); 3],
}

impl Signals {
    /// Starts listening (needs a tokio runtime with its I/O driver).
    pub fn new() -> Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                streams: [
                    (signal(SignalKind::interrupt())?, "SIGINT"),
                    (signal(SignalKind::terminate())?, "SIGTERM"),
                    (signal(SignalKind::hangup())?, "SIGHUP"),
                ],
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// The name of the next signal; never resolves without signals.
    pub async fn next(signals: &mut Option<Self>) -> &'static str {
        #[cfg(unix)]
        if let Some(signals) = signals {
            let [(a, an), (b, bn), (c, cn)] = &mut signals.streams;
            return tokio::select! {
                _ = a.recv() => an,
                _ = b.recv() => bn,
                _ = c.recv() => cn,
            };
        }
        let _ = signals;
        std::future::pending().await
    }
}
