//! The trace: one line per event in simulated time, and a running hash of all lines.
//!
//! A line is `seconds node kind fields`, with seconds since the start of the run to the
//! microsecond. Lines carry no wall time, no pointers and no ciphertext (packets appear by
//! size only), so the same seed on the same build gives the same lines, and the hash printed
//! at the end identifies the run.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

struct Inner {
    start: Instant,
    hash: ring::digest::Context,
    lines: u64,
    out: Option<BufWriter<File>>,
    /// Kept in memory too, when asked (tests compare traces).
    memory: Option<Vec<String>>,
    scratch: String,
}

/// A shared trace. Cheap to clone.
#[derive(Clone)]
pub struct Trace {
    inner: Arc<Mutex<Inner>>,
}

impl Trace {
    /// A trace starting now; lines also go to `path` if given.
    pub fn new(path: Option<&Path>) -> std::io::Result<Self> {
        let out = match path {
            Some(p) => Some(BufWriter::new(File::create(p)?)),
            None => None,
        };
        Ok(Self {
            inner: Arc::new(Mutex::new(Inner {
                start: Instant::now(),
                hash: ring::digest::Context::new(&ring::digest::SHA256),
                lines: 0,
                out,
                memory: None,
                scratch: String::new(),
            })),
        })
    }

    /// Keeps every line in memory as well (see [`Trace::lines`]).
    pub fn keep_in_memory(&self) {
        self.lock().memory = Some(Vec::new());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one event: `node` is who it concerns (`-` for the world), `kind` a short
    /// dotted name, `fields` free text of `key=value` pairs.
    pub fn event(&self, node: &str, kind: &str, fields: std::fmt::Arguments<'_>) {
        let mut g = self.lock();
        let t = g.start.elapsed();
        let mut line = std::mem::take(&mut g.scratch);
        line.clear();
        let _ = write!(
            line,
            "{:>6}.{:06} {node} {kind} {fields}",
            t.as_secs(),
            t.subsec_micros()
        );
        g.hash.update(line.as_bytes());
        g.hash.update(b"\n");
        g.lines += 1;
        if let Some(out) = &mut g.out {
            let _ = writeln!(out, "{line}");
        }
        if let Some(mem) = &mut g.memory {
            mem.push(line.clone());
        }
        g.scratch = line;
    }

    /// Seconds since the start of the run.
    pub fn now_secs(&self) -> f64 {
        self.lock().start.elapsed().as_secs_f64()
    }

    pub fn line_count(&self) -> u64 {
        self.lock().lines
    }

    /// The hash of every line so far, hex.
    pub fn hash_hex(&self) -> String {
        let digest = self.lock().hash.clone().finish();
        digest.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Lines kept in memory (empty unless [`Trace::keep_in_memory`] was called).
    pub fn lines(&self) -> Vec<String> {
        self.lock().memory.clone().unwrap_or_default()
    }

    pub fn flush(&self) {
        if let Some(out) = &mut self.lock().out {
            let _ = out.flush();
        }
    }
}

/// `trace_event!(trace, node, kind, "fmt", args)`: records a line.
#[macro_export]
macro_rules! trace_event {
    ($trace:expr, $node:expr, $kind:expr, $($arg:tt)*) => {
        $trace.event($node, $kind, format_args!($($arg)*))
    };
}
