//! The entity workload: clients asking the built-in kinds through random nodes, all through
//! the run, and the entity checkers.
//!
//! Checked on every sample:
//! - `same-table`: nodes at the same configuration epoch compute the same shard table;
//! - `one-owner-per-epoch`: no two nodes serve one shard in the same epoch.
//!
//! After the heal: every shard is served, by its primary, and a final round of asks (every
//! key, through random nodes) all succeed (`serving-after-heal`, `ask-after-heal`).

use std::collections::BTreeMap;
use std::time::Duration;

use shoal::Node;
use shoal::entity::AskError;
use shoal::entity::builtin::{Counter, CounterCommand, Kv, KvCommand, KvReply};
use shoal_transport::NodeRng;

use crate::checker::Violation;

/// Keys per kind the workload touches.
pub const KEYS: u64 = 24;

/// One client operation: one ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Kv(String, KvCommand),
    Counter(String, CounterCommand),
}

/// The reply of an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Kv(KvReply),
    Counter(i64),
}

impl Op {
    /// The entity it addresses, as `kind/id`.
    pub fn entity(&self) -> String {
        match self {
            Op::Kv(k, _) => format!("kv/{k}"),
            Op::Counter(k, _) => format!("counter/{k}"),
        }
    }

    /// A read of the same entity.
    pub fn read_of(&self) -> Op {
        match self {
            Op::Kv(k, _) => Op::Kv(k.clone(), KvCommand::Get),
            Op::Counter(k, _) => Op::Counter(k.clone(), CounterCommand::Get),
        }
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Counter(k, CounterCommand::Add(d)) => write!(f, "counter/{k} add {d}"),
            Op::Counter(k, CounterCommand::Get) => write!(f, "counter/{k} get"),
            Op::Kv(k, KvCommand::Get) => write!(f, "kv/{k} get"),
            Op::Kv(k, KvCommand::Put(v)) => write!(f, "kv/{k} put {v}"),
            Op::Kv(k, KvCommand::Cas { expected, new }) => {
                write!(f, "kv/{k} cas {expected:?} -> {new}")
            }
            Op::Kv(k, KvCommand::Delete) => write!(f, "kv/{k} delete"),
        }
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Kv(KvReply::Value(v)) => write!(f, "{v:?}"),
            Reply::Kv(KvReply::CasFailed(v)) => write!(f, "cas-failed {v:?}"),
            Reply::Counter(n) => write!(f, "{n}"),
        }
    }
}

/// The values the clients last saw per kv key: compare-and-set expects one of them, so it
/// succeeds often enough to matter.
#[derive(Debug, Default)]
pub struct Seen(BTreeMap<String, Option<String>>);

impl Seen {
    pub fn note(&mut self, op: &Op, reply: &Reply) {
        if let (Op::Kv(k, _), Reply::Kv(KvReply::Value(v) | KvReply::CasFailed(v))) = (op, reply) {
            self.0.insert(k.clone(), v.clone());
        }
    }
}

/// A random operation; `seq` makes written values unique.
pub fn pick(rng: &NodeRng, seq: u64, seen: &Seen) -> Op {
    let key = rng.below(KEYS);
    let kv = format!("k{key}");
    match rng.below(20) {
        0..=6 => Op::Counter(format!("c{key}"), CounterCommand::Add(1)),
        7..=8 => Op::Counter(format!("c{key}"), CounterCommand::Get),
        9..=11 => Op::Kv(kv, KvCommand::Put(seq.to_string())),
        12..=14 => Op::Kv(kv, KvCommand::Get),
        15..=18 => {
            let expected = seen.0.get(&kv).cloned().flatten();
            Op::Kv(
                kv,
                KvCommand::Cas {
                    expected,
                    new: seq.to_string(),
                },
            )
        }
        _ => Op::Kv(kv, KvCommand::Delete),
    }
}

/// Runs `op` through `node`.
pub async fn run(node: &Node, op: &Op, timeout: Duration) -> Result<Reply, AskError> {
    match op {
        Op::Counter(k, c) => node
            .ask_timeout::<Counter>(k, *c, timeout)
            .await
            .map(Reply::Counter),
        Op::Kv(k, c) => node
            .ask_timeout::<Kv>(k, c.clone(), timeout)
            .await
            .map(Reply::Kv),
    }
}

/// After the heal: a read of every key through random nodes, recorded in `history`. A read
/// is safe to repeat: a client whose connection died under it (one opened before the heal,
/// say) asks again through another node, three times at most. Returns the reads that failed
/// all three.
pub async fn final_reads(
    client: impl Fn() -> Option<Node>,
    history: &mut crate::history::History,
    trace: &crate::trace::Trace,
) -> Vec<String> {
    let mut failed_after_heal = Vec::new();
    for k in 0..KEYS {
        for op in [
            Op::Counter(format!("c{k}"), CounterCommand::Get),
            Op::Kv(format!("k{k}"), KvCommand::Get),
        ] {
            for attempt in 1..=3 {
                let Some(node) = client() else {
                    break;
                };
                let id = history.call(&op);
                let result = run(&node, &op, Duration::from_secs(5)).await;
                let failed = match &result {
                    Ok(reply) => {
                        crate::trace_event!(trace, node.name(), "ask", "#{id} {op} ok {reply}");
                        None
                    }
                    Err(e) => {
                        crate::trace_event!(trace, node.name(), "ask", "#{id} {op} failed {e}");
                        Some(format!("{op} through {}: {e}", node.name()))
                    }
                };
                history.ret(id, result);
                match failed {
                    None => break,
                    Some(why) if attempt == 3 => failed_after_heal.push(why),
                    Some(_) => {}
                }
            }
        }
    }
    failed_after_heal
}

/// Outcomes of the workload.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    pub ok: u64,
    pub unavailable: u64,
    pub timeout: u64,
    pub other: u64,
}

impl Stats {
    pub fn record(&mut self, r: &Result<Reply, AskError>) {
        match r {
            Ok(_) => self.ok += 1,
            Err(AskError::Unavailable(_)) => self.unavailable += 1,
            Err(AskError::Timeout(_)) => self.timeout += 1,
            Err(_) => self.other += 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.ok + self.unavailable + self.timeout + self.other
    }
}

/// What one node says about its entities at a sample.
pub struct NodeEntities {
    pub name: String,
    pub epoch: u64,
    pub table: Option<shoal::sharding::ShardTable>,
    pub digest: Option<u64>,
    pub serving: Vec<u32>,
}

impl NodeEntities {
    pub fn of(node: &Node) -> Self {
        let table = node.entities().table();
        Self {
            name: node.name().to_string(),
            epoch: table.as_ref().map_or(0, |t| t.0),
            digest: table.as_ref().map(|t| t.1.digest()),
            table: table.map(|t| t.1),
            serving: node.entities().serving().iter().map(|s| s.0).collect(),
        }
    }
}

#[derive(Default)]
pub struct EntityChecker {
    violations: Vec<Violation>,
}

impl EntityChecker {
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    fn violate(&mut self, at: f64, checker: &'static str, what: String) {
        if self.violations.len() < 50 {
            self.violations.push(Violation { at, checker, what });
        }
    }

    pub fn on_sample(&mut self, at: f64, nodes: &[NodeEntities]) {
        let mut tables: BTreeMap<u64, (u64, &str)> = BTreeMap::new();
        for n in nodes {
            if let Some(d) = n.digest {
                match tables.get(&n.epoch) {
                    Some((other, who)) if *other != d => {
                        let what = format!(
                            "{} and {who} are both at epoch {} but computed different shard tables",
                            n.name, n.epoch
                        );
                        self.violate(at, "same-table", what);
                    }
                    Some(_) => {}
                    None => {
                        tables.insert(n.epoch, (d, &n.name));
                    }
                }
            }
        }
        // Per epoch, who serves each shard.
        let mut owners: BTreeMap<u64, Vec<Option<&str>>> = BTreeMap::new();
        for n in nodes {
            let slots = owners.entry(n.epoch).or_default();
            for &s in &n.serving {
                let s = s as usize;
                if slots.len() <= s {
                    slots.resize(s + 1, None);
                }
                if let Some(other) = slots[s].replace(&n.name) {
                    let what = format!(
                        "{} and {other} both serve shard {s} in epoch {}",
                        n.name, n.epoch
                    );
                    self.violate(at, "one-owner-per-epoch", what);
                }
            }
        }
    }
}

/// Whether every shard is served by its primary on exactly one node, all nodes agreeing on
/// the table. `Err` says what is missing.
pub fn serving_complete(nodes: &[NodeEntities], shards: u32) -> Result<(), String> {
    let Some(first) = nodes.first() else {
        return Err("no node is running".into());
    };
    for n in nodes {
        if n.digest.is_none() || n.digest != first.digest || n.epoch != first.epoch {
            return Err(format!(
                "{} has table {:?} at epoch {}, {} has {:?} at epoch {}",
                n.name, n.digest, n.epoch, first.name, first.digest, first.epoch
            ));
        }
    }
    let Some(table) = &first.table else {
        return Err("no shard table".into());
    };
    // Who serves each shard (the last node listed, as a map would keep); sampled four
    // times a gossip round, so a vector, not a map.
    let mut served: Vec<Option<&str>> = vec![None; shards as usize];
    for n in nodes {
        for &s in &n.serving {
            let Some(slot) = served.get_mut(s as usize) else {
                return Err(format!("{} serves shard {s}, outside 0..{shards}", n.name));
            };
            *slot = Some(&n.name);
        }
    }
    let missing: Vec<u32> = (0..shards)
        .filter(|&s| served[s as usize].is_none())
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "{} shards are served by no node (first: {:?})",
            missing.len(),
            missing.iter().take(5).collect::<Vec<_>>()
        ));
    }
    for (s, who) in served.iter().enumerate() {
        let Some(who) = *who else { continue };
        let primary = table.primary(shoal::sharding::ShardId(s as u32));
        if primary != Some(who) {
            return Err(format!(
                "shard {s} is served by {who}, its primary is {primary:?}"
            ));
        }
    }
    Ok(())
}
