//! The clients' history: every operation's call and completion in simulated time, and the
//! per-entity linearizability check over it at the end of a run.
//!
//! An operation that failed in a way that may have taken effect (`Unavailable`, `Timeout`:
//! the write may have been stored before contact was lost) is recorded with an unknown
//! outcome; a failed read is dropped (it changed nothing). Because every write is in the
//! history, a linearizable history also shows that no acknowledged write was lost: the reads
//! after the heal must see all of them.

use std::collections::BTreeMap;

use shoal::entity::AskError;
use shoal::entity::builtin::{CounterCommand, KvCommand, KvReply};
use tokio::time::Instant;

use crate::checker::Violation;
use crate::linearizability::{self, CounterModel, KvModel, Operation, Verdict};
use crate::workload::{Op, Reply};

/// Model steps allowed per entity before the check gives up on it (`unknown`).
pub const MAX_STEPS: u64 = 2_000_000;

struct Entry {
    op: Op,
    call: u64,
    ret: Option<(u64, Result<Reply, AskError>)>,
}

/// Operations recorded so far, by client (one client per operation).
pub struct History {
    start: Instant,
    entries: Vec<Entry>,
}

/// What the check found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HistoryStats {
    pub entities: usize,
    pub operations: usize,
    /// Operations whose outcome is unknown.
    pub unknown_outcomes: usize,
    /// Entities whose check ran out of steps.
    pub undecided: usize,
}

impl History {
    pub fn new(start: Instant) -> Self {
        Self {
            start,
            entries: Vec::new(),
        }
    }

    fn now(&self) -> u64 {
        (Instant::now() - self.start).as_nanos() as u64
    }

    /// Records the call of `op`; returns its client id.
    pub fn call(&mut self, op: &Op) -> usize {
        let call = self.now();
        self.entries.push(Entry {
            op: op.clone(),
            call,
            ret: None,
        });
        self.entries.len() - 1
    }

    /// Records the completion of client `id`.
    pub fn ret(&mut self, id: usize, result: Result<Reply, AskError>) {
        let at = self.now();
        if let Some(e) = self.entries.get_mut(id) {
            e.ret = Some((at, result));
        }
    }

    /// Operations called at or after `since` that failed, described.
    pub fn failed_since(&self, since: Instant) -> Vec<String> {
        let from = since.saturating_duration_since(self.start).as_nanos() as u64;
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.call >= from)
            .filter_map(|(client, e)| match &e.ret {
                Some((_, Err(err))) => Some(format!(
                    "#{client} {} at {:.3}s: {err}",
                    e.op,
                    e.call as f64 / 1e9
                )),
                _ => None,
            })
            .collect()
    }

    /// Checks every entity's history; a violation per entity that is not linearizable.
    pub fn check(&self, at: f64) -> (Vec<Violation>, HistoryStats) {
        let mut kv: BTreeMap<&str, Vec<Operation<KvCommand, KvReply>>> = BTreeMap::new();
        let mut counters: BTreeMap<&str, Vec<Operation<CounterCommand, i64>>> = BTreeMap::new();
        let mut stats = HistoryStats::default();
        for (client, e) in self.entries.iter().enumerate() {
            let client = client as u64;
            let outcome = match &e.ret {
                Some((ret, Ok(reply))) => Some(Some((*ret, reply.clone()))),
                // Failed for sure before it ran: nothing to record.
                Some((_, Err(err))) if !may_have_run(err) => None,
                // Still running at the end, or failed after it may have run.
                _ => Some(None),
            };
            let Some(outcome) = outcome else { continue };
            match (&e.op, outcome) {
                (Op::Kv(k, c), Some((ret, Reply::Kv(r)))) => kv
                    .entry(k)
                    .or_default()
                    .push(Operation::ok(client, e.call, ret, c.clone(), r)),
                (Op::Kv(_, KvCommand::Get), None) => continue,
                (Op::Kv(k, c), None) => {
                    kv.entry(k)
                        .or_default()
                        .push(Operation::unknown(client, e.call, c.clone()));
                    stats.unknown_outcomes += 1;
                }
                (Op::Counter(k, c), Some((ret, Reply::Counter(n)))) => counters
                    .entry(k)
                    .or_default()
                    .push(Operation::ok(client, e.call, ret, *c, n)),
                (Op::Counter(_, CounterCommand::Get), None) => continue,
                (Op::Counter(k, c), None) => {
                    counters
                        .entry(k)
                        .or_default()
                        .push(Operation::unknown(client, e.call, *c));
                    stats.unknown_outcomes += 1;
                }
                (op, Some((_, reply))) => {
                    tracing::error!(%op, %reply, "a reply of the wrong kind");
                    continue;
                }
            }
            stats.operations += 1;
        }
        stats.entities = kv.len() + counters.len();
        let mut violations = Vec::new();
        let mut judge = |entity: String, verdict: Verdict| match verdict {
            Verdict::Linearizable => {}
            Verdict::Unknown => stats.undecided += 1,
            Verdict::NotLinearizable(why) => violations.push(Violation {
                at,
                checker: "linearizable",
                what: format!("{entity} (times in simulated ns): {why}"),
            }),
        };
        for (k, ops) in &kv {
            judge(
                format!("kv/{k}"),
                linearizability::check(&KvModel, ops, MAX_STEPS),
            );
        }
        for (k, ops) in &counters {
            judge(
                format!("counter/{k}"),
                linearizability::check(&CounterModel, ops, MAX_STEPS),
            );
        }
        (violations, stats)
    }
}

/// Whether a failed ask may still have taken effect.
fn may_have_run(e: &AskError) -> bool {
    matches!(e, AskError::Unavailable(_) | AskError::Timeout(_))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn kv(cmd: KvCommand) -> Op {
        Op::Kv("k".into(), cmd)
    }

    async fn step() {
        tokio::time::advance(Duration::from_millis(10)).await;
    }

    /// Runs `ops` one after the other; each with its result.
    async fn sequential(ops: Vec<(Op, Result<Reply, AskError>)>) -> History {
        let mut h = History::new(Instant::now());
        for (op, result) in ops {
            let id = h.call(&op);
            step().await;
            h.ret(id, result);
            step().await;
        }
        h
    }

    fn value(v: Option<&str>) -> Result<Reply, AskError> {
        Ok(Reply::Kv(KvReply::Value(v.map(str::to_string))))
    }

    #[tokio::test(start_paused = true)]
    async fn an_acknowledged_write_the_next_read_misses_is_a_violation() {
        let h = sequential(vec![
            (kv(KvCommand::Put("1".into())), value(Some("1"))),
            (kv(KvCommand::Get), value(None)),
        ])
        .await;
        let (violations, stats) = h.check(1.0);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].checker, "linearizable");
        assert!(
            violations[0].what.starts_with("kv/k"),
            "{}",
            violations[0].what
        );
        assert_eq!((stats.entities, stats.operations), (1, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_timed_out_may_or_may_not_have_happened() {
        for seen in [None, Some("1")] {
            let h = sequential(vec![
                (kv(KvCommand::Put("1".into())), Err(AskError::Timeout(2000))),
                (kv(KvCommand::Get), value(seen)),
            ])
            .await;
            let (violations, stats) = h.check(1.0);
            assert!(violations.is_empty(), "{seen:?}: {violations:?}");
            assert_eq!(stats.unknown_outcomes, 1);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failed_reads_and_refused_writes_are_left_out() {
        let h = sequential(vec![
            (
                kv(KvCommand::Get),
                Err(AskError::Unavailable("minority".into())),
            ),
            (
                kv(KvCommand::Put("1".into())),
                Err(AskError::Rejected("no".into())),
            ),
            (kv(KvCommand::Get), value(None)),
        ])
        .await;
        let (violations, stats) = h.check(1.0);
        assert!(violations.is_empty(), "{violations:?}");
        assert_eq!((stats.operations, stats.unknown_outcomes), (1, 0));
        assert_eq!(
            h.failed_since(h.start).len(),
            2,
            "both failures are listed for asks-never-fail"
        );
    }
}
