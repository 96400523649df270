//! Checkers of cluster configurations (epochs agreed by a majority).
//!
//! Safety, checked on every configuration any node learns:
//! - `one-config-per-epoch`: across all nodes and the whole run, an epoch has one value;
//! - `epochs-grow`: each node learns epochs in increasing order, restarts included (its state
//!   is durable);
//! - `minority-never-commits`: while a two-way partition leaves a group without a majority of
//!   the configuration, no node of that group learns a new epoch.
//!
//! Liveness after the heal is part of [`crate::checker::agreement`]: every running node knows
//! the same newest epoch, and its members are exactly the running incarnations.
//!
//! It also times the protocol: how long after a node starts its join is committed, and how
//! long after a crash the removal (or the replacement by a restart) is committed.

use std::collections::{BTreeMap, BTreeSet};

use shoal::membership::{Committed, MemberId};

use crate::checker::Violation;

/// Seconds of slack after a partition starts: datagrams delivered in the same instant may
/// still be processed.
const PARTITION_SLACK: f64 = 0.05;

#[derive(Debug, Clone)]
struct Seen {
    digest: u64,
    members: String,
    names: Vec<String>,
    by: String,
    at: f64,
}

/// A crash and when its removal was committed.
#[derive(Debug, Clone, PartialEq)]
pub struct Removal {
    pub id: MemberId,
    pub crashed_at: f64,
    /// Seconds from the crash to the first committed epoch without it.
    pub removed_after: Option<f64>,
    /// Whether that epoch replaced it by a newer incarnation (a restart) rather than removing
    /// it because it stayed down.
    pub replaced: bool,
}

#[derive(Default)]
pub struct ConfigChecker {
    violations: Vec<Violation>,
    epochs: BTreeMap<u64, Seen>,
    last_epoch: BTreeMap<String, u64>,
    /// The sides of the two-way partition in force, and since when.
    partition: Option<(Vec<Vec<String>>, f64)>,
    started: BTreeMap<MemberId, f64>,
    /// Seconds from start to the commit that made each incarnation a member.
    pub joins: Vec<(MemberId, f64)>,
    pub removals: Vec<Removal>,
}

impl ConfigChecker {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// The newest epoch committed anywhere.
    pub fn newest(&self) -> u64 {
        self.epochs.keys().next_back().copied().unwrap_or(0)
    }

    pub fn commits(&self) -> usize {
        self.epochs.len()
    }

    fn violate(&mut self, at: f64, checker: &'static str, what: String) {
        if self.violations.len() < 50 {
            self.violations.push(Violation { at, checker, what });
        }
    }

    pub fn started(&mut self, at: f64, id: MemberId) {
        self.started.insert(id, at);
    }

    pub fn crashed(&mut self, at: f64, id: MemberId) {
        self.removals.push(Removal {
            id,
            crashed_at: at,
            removed_after: None,
            replaced: false,
        });
    }

    /// A two-way partition into `groups` started.
    pub fn partitioned(&mut self, at: f64, groups: &[Vec<String>]) {
        self.partition = Some((groups.to_vec(), at));
    }

    pub fn healed(&mut self) {
        self.partition = None;
    }

    pub fn on_commit(&mut self, at: f64, node: &str, c: &Committed) {
        let epoch = c.epoch();
        let digest = c.config.digest();
        let members = c.config.describe();
        let first_time = !self.epochs.contains_key(&epoch);
        match self.epochs.get(&epoch) {
            Some(seen) if seen.digest != digest => {
                let what = format!(
                    "epoch {epoch} has two values: {} learned [{}] at {:.3}s, {node} learned [{members}] at {at:.3}s",
                    seen.by, seen.members, seen.at
                );
                self.violate(at, "one-config-per-epoch", what);
            }
            Some(_) => {}
            None => {
                self.first_commit(at, c);
                self.epochs.insert(
                    epoch,
                    Seen {
                        digest,
                        members: members.clone(),
                        names: c.config.members.iter().map(|m| m.id.name.clone()).collect(),
                        by: node.to_string(),
                        at,
                    },
                );
            }
        }
        if let Some(last) = self.last_epoch.get(node).copied()
            && epoch <= last
        {
            self.violate(
                at,
                "epochs-grow",
                format!("{node} learned epoch {epoch} after epoch {last}"),
            );
        }
        self.last_epoch.insert(node.to_string(), epoch);
        // A side of a two-way partition can commit epoch E only if it holds a majority of
        // epoch E-1's members (they are the acceptors). Checked on the first commit of each
        // epoch made during the partition, on the side of the node that learned it.
        if let Some((groups, since)) = &self.partition
            && first_time
            && at > since + PARTITION_SLACK
            && let Some(prev) = self.epochs.get(&(epoch - 1))
            && let Some(side) = groups.iter().find(|g| g.iter().any(|n| n == node))
        {
            let held = prev.names.iter().filter(|m| side.contains(m)).count();
            let majority = prev.names.len() / 2 + 1;
            if held < majority {
                let what = format!(
                    "epoch {epoch} [{members}] was committed at {at:.3}s on the side {side:?} of the partition made at {since:.3}s, which holds only {held} of the {} members of epoch {}",
                    prev.names.len(),
                    epoch - 1
                );
                self.violate(at, "minority-never-commits", what);
            }
        }
    }

    /// Timing of the first commit of an epoch anywhere.
    fn first_commit(&mut self, at: f64, c: &Committed) {
        let now: BTreeSet<&MemberId> = c.config.members.iter().map(|m| &m.id).collect();
        for id in &now {
            if let Some(start) = self.started.remove(*id) {
                self.joins.push(((*id).clone(), at - start));
            }
        }
        for r in &mut self.removals {
            if r.removed_after.is_none() && !now.contains(&r.id) && r.crashed_at <= at {
                r.removed_after = Some(at - r.crashed_at);
                r.replaced = now.iter().any(|m| m.name == r.id.name);
            }
        }
    }
}

/// The median of a list of seconds.
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}
