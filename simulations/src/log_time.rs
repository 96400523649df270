//! Simulated time for the nodes' own logs (`RUST_LOG=... shoal-sim run ...`), so a log line
//! can be matched with the trace line of the same instant.

use std::sync::Mutex;

use tokio::time::Instant;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

static START: Mutex<Option<Instant>> = Mutex::new(None);

/// Marks the start of a run: log times count from here (call inside the simulated runtime).
pub fn mark_start() {
    *START.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
}

/// Formats the simulated seconds since [`mark_start`], as the trace does.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimTime;

impl FormatTime for SimTime {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        let start = *START.lock().unwrap_or_else(|e| e.into_inner());
        match start {
            Some(s) => write!(w, "{:>12.6}", (Instant::now() - s).as_secs_f64()),
            None => write!(w, "{:>12}", "-"),
        }
    }
}
