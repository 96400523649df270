//! The node's metrics, served at `/metrics` in the OpenMetrics text format Prometheus reads.
//!
//! Two kinds of figure: events, counted as they happen by the code that sees them
//! ([`NodeMetrics`]: messages, commands, asks, handoffs), and state, read from the node when
//! scraped ([`render`]: members, shards, active entities, phi, QUIC connections and bytes).
//! Every node has its own counters, so several nodes in one process (tests, the simulator,
//! an embedding service) never mix their figures.
//!
//! Counting changes nothing the node does, and creating the counters must not either: they
//! hold no std `HashMap` (each new one draws fresh hash keys, which shifts the keys of every
//! map made after it and changes the simulator's runs). prometheus-client's `Family` is one,
//! so the labelled families are plain lists built at scrape time (`scrape.rs`).

mod scrape;

use std::collections::BTreeMap;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

pub use scrape::render;

/// The counters of one entity kind, resolved once so that counting is one atomic add.
#[derive(Clone)]
pub(crate) struct KindMetrics {
    /// Commands run by this kind's entities on this node.
    pub commands: Counter,
    /// Entity messages (tells, asks, forwards) received from other nodes.
    pub messages_in: Counter,
    /// Entity messages sent to other nodes.
    pub messages_out: Counter,
    /// Tells dropped here because their entity's mailbox was full.
    pub tells_dropped: Counter,
    pub asks_ok: Histogram,
    pub asks_failed: Histogram,
}

impl KindMetrics {
    fn new() -> Self {
        // Ask latency buckets: 25 µs to about 6.5 s.
        let histogram = || Histogram::new(exponential_buckets(25e-6, 2.0, 19));
        Self {
            commands: Counter::default(),
            messages_in: Counter::default(),
            messages_out: Counter::default(),
            tells_dropped: Counter::default(),
            asks_ok: histogram(),
            asks_failed: histogram(),
        }
    }
}

/// Event counters of one node.
pub(crate) struct NodeMetrics {
    kinds: BTreeMap<String, KindMetrics>,
    /// Counters for kinds this node does not host (a message naming an unknown kind).
    unknown: KindMetrics,
    /// Shards that started serving here (after recovery or a handoff).
    pub(crate) activations: Counter,
    /// Shards this node stopped serving (handed over or lost).
    pub(crate) step_downs: Counter,
}

impl NodeMetrics {
    /// Counters for each kind in `kinds`.
    pub(crate) fn new<'a>(kinds: impl IntoIterator<Item = &'a str>) -> Arc<Self> {
        Arc::new(Self {
            kinds: kinds
                .into_iter()
                .map(|k| (k.to_string(), KindMetrics::new()))
                .collect(),
            unknown: KindMetrics::new(),
            activations: Counter::default(),
            step_downs: Counter::default(),
        })
    }

    /// The counters of `kind` (those of "unknown" for a kind this node does not host).
    pub(crate) fn kind(&self, kind: &str) -> &KindMetrics {
        self.kinds.get(kind).unwrap_or(&self.unknown)
    }

    /// Every kind's counters, "unknown" last.
    pub(crate) fn kinds(&self) -> impl Iterator<Item = (&str, &KindMetrics)> {
        self.kinds
            .iter()
            .map(|(k, m)| (k.as_str(), m))
            .chain(std::iter::once(("unknown", &self.unknown)))
    }
}
