//! The `/metrics` document: the event counters, and the figures read from the node now.

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use super::NodeMetrics;
use crate::node::Node;

/// A labelled family in a fixed order (prometheus-client's `Family` is a hash map, and this
/// keeps the output stable from one scrape to the next).
#[derive(Debug)]
struct Series<L, M>(Vec<(L, M)>);

impl<L, M> EncodeMetric for Series<L, M>
where
    L: EncodeLabelSet,
    M: EncodeMetric + TypedMetric,
{
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, metric) in &self.0 {
            metric.encode(encoder.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        M::TYPE
    }
}

type One = [(&'static str, String); 1];

fn gauge(value: f64) -> Gauge<f64, std::sync::atomic::AtomicU64> {
    let g = Gauge::default();
    g.set(value);
    g
}

fn counter(value: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(value);
    c
}

/// A gauge family with one series per value of `label`.
fn gauges(
    label: &'static str,
    rows: impl IntoIterator<Item = (String, f64)>,
) -> Series<One, Gauge<f64, std::sync::atomic::AtomicU64>> {
    Series(
        rows.into_iter()
            .map(|(v, n)| -> (One, _) { ([(label, v)], gauge(n)) })
            .collect(),
    )
}

/// A counter family with one series per value of `label`.
fn counters(
    label: &'static str,
    rows: impl IntoIterator<Item = (String, u64)>,
) -> Series<One, Counter> {
    Series(
        rows.into_iter()
            .map(|(v, n)| -> (One, _) { ([(label, v)], counter(n)) })
            .collect(),
    )
}

/// The event counters, labelled by kind.
fn events(r: &mut Registry, m: &NodeMetrics) {
    let per_kind = |f: fn(&super::KindMetrics) -> &Counter| {
        counters(
            "kind",
            m.kinds().map(|(k, km)| (k.to_string(), f(km).get())),
        )
    };
    r.register(
        "commands",
        "Commands run by entities hosted on this node",
        per_kind(|k| &k.commands),
    );
    r.register(
        "messages_in",
        "Entity messages received from other nodes",
        per_kind(|k| &k.messages_in),
    );
    r.register(
        "messages_out",
        "Entity messages sent to other nodes",
        per_kind(|k| &k.messages_out),
    );
    r.register(
        "tells_dropped",
        "Tells dropped because their entity's mailbox was full (tells are at most once)",
        per_kind(|k| &k.tells_dropped),
    );
    let asks: Vec<([(&str, String); 2], Histogram)> = m
        .kinds()
        .flat_map(|(k, km)| {
            [("ok", &km.asks_ok), ("error", &km.asks_failed)].map(|(o, h)| {
                (
                    [("kind", k.to_string()), ("outcome", o.to_string())],
                    h.clone(),
                )
            })
        })
        .collect();
    r.register(
        "ask_duration_seconds",
        "Asks made through this node, from call to reply (outcome ok or error)",
        Series(asks),
    );
    r.register(
        "handoffs",
        "Shards that started serving on this node after a recovery or a handoff",
        counter(m.activations.get()),
    );
    r.register(
        "step_downs",
        "Shards this node stopped serving as primary (handed over or lost)",
        counter(m.step_downs.get()),
    );
}

/// Members, configuration, shards, entities, failure detection.
fn cluster_state(r: &mut Registry, node: &Node) {
    let view = node.view();
    let mut statuses: Vec<(String, f64)> = ["joining", "up", "leaving", "failed"]
        .map(|s| (s.to_string(), 0.0))
        .into();
    for m in &view.members {
        let status = if m.live {
            m.status.to_string()
        } else {
            "failed".into()
        };
        if let Some(row) = statuses.iter_mut().find(|(s, _)| *s == status) {
            row.1 += 1.0;
        }
    }
    r.register(
        "members",
        "Nodes this node knows of, by status (failed: its failure detector lost them)",
        gauges("status", statuses),
    );
    let (epoch, in_majority) = node.membership().majority().unwrap_or((0, false));
    r.register(
        "config_epoch",
        "The newest committed configuration epoch this node knows (0: none yet)",
        gauge(epoch as f64),
    );
    r.register(
        "in_majority",
        "1 if this node sees a majority of the configuration's members live, else 0",
        gauge(if in_majority { 1.0 } else { 0.0 }),
    );
    let stats = node.entities().stats();
    r.register(
        "active_entities",
        "Entities active (in memory) on this node, by kind",
        gauges(
            "kind",
            stats.active.iter().map(|(k, n)| (k.clone(), *n as f64)),
        ),
    );
    r.register(
        "shards",
        "Shards on this node by role: primary (serving), recovering, draining (handing over), replica (a backup copy), failed (storage)",
        gauges(
            "state",
            [
                ("primary", stats.serving),
                ("recovering", stats.recovering),
                ("draining", stats.draining),
                ("replica", stats.backups),
                ("failed", stats.failed),
            ]
            .map(|(s, n)| (s.to_string(), n as f64)),
        ),
    );
    r.register(
        "handoffs_in_progress",
        "Shards changing hands on this node now (taking over or handing over)",
        gauge(stats.handoffs_in_progress() as f64),
    );
    r.register(
        "replication_pending_writes",
        "Writes this node stored as primary that a majority of their replica set has not yet stored",
        gauge(stats.pending_writes as f64),
    );
    r.register(
        "failure_detector_phi",
        "Suspicion of each peer: time since its last heartbeat over its mean heartbeat interval",
        gauges("peer", node.membership().phi()),
    );
}

/// QUIC connections and bytes, gossip.
fn transport(r: &mut Registry, node: &Node) {
    let t = node.transport().stats();
    r.register(
        "quic_connections",
        "Live QUIC connections to other nodes",
        gauge(t.connections as f64),
    );
    r.register(
        "quic_connections_opened",
        "QUIC connections established (dialed or accepted)",
        counter(t.connections_opened),
    );
    r.register(
        "quic_sent_bytes",
        "UDP payload bytes sent on QUIC connections",
        counter(t.sent_bytes),
    );
    r.register(
        "quic_received_bytes",
        "UDP payload bytes received on QUIC connections",
        counter(t.received_bytes),
    );
    r.register(
        "gossip_rounds",
        "Gossip rounds this node started",
        counter(t.gossip_rounds),
    );
    r.register(
        "gossip_messages",
        "Gossip messages (requests and answers) sent and received",
        counters(
            "direction",
            [
                ("sent".to_string(), t.gossip_sent),
                ("received".to_string(), t.gossip_received),
            ],
        ),
    );
}

/// The node's metrics in the OpenMetrics text format.
pub fn render(node: &Node) -> String {
    let mut r = Registry::with_prefix("shoal");
    events(&mut r, node.metrics());
    cluster_state(&mut r, node);
    transport(&mut r, node);
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode_registry(&mut out, &r);
    let _ = encode_eof(&mut out);
    out
}
