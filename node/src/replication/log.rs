//! The primary's side of one shard in one epoch, as a plain state machine (no I/O, no
//! clock): it numbers writes, keeps the tail a lagging backup still needs, tracks what each
//! backup has stored and confirmed, and decides when a waiting reply may go.
//!
//! - A **write** (a command that changed its entity) gets the next sequence number. Its
//!   reply waits until a majority of the replica set (this node included) stored it:
//!   `committed` is the highest sequence number that is.
//! - A **read** (a command that changed nothing) waits for every write before it to be
//!   committed, and for a majority of the replica set to confirm, in a batch sent after the
//!   read ran, that they have not promised a newer epoch. No newer primary can then have
//!   served a write yet (it must fence a majority first), so the read was current when it
//!   ran. This needs no clock: see `docs/PROTOCOL.md`.

use std::collections::VecDeque;
use std::net::SocketAddr;

use super::wire::Entry;
use crate::entity::EntityRef;
use crate::storage::Version;

/// Where a backup stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// Must be installed (it missed writes, or was never installed in this epoch).
    Unsynced,
    /// Being installed up to `from`; writes after `from` follow from the tail.
    Syncing { from: u64 },
    /// Receives every write as it happens.
    InSync,
}

#[derive(Debug, Clone)]
pub(crate) struct Backup {
    pub name: String,
    pub addr: SocketAddr,
    pub progress: Progress,
    /// Every write up to this one is durable there.
    pub acked: u64,
    /// The newest batch in which it confirmed the epoch.
    pub confirmed: u64,
}

struct ReadWait<R> {
    seq: u64,
    /// Per backup, the batch whose confirmation counts (`u64::MAX`: not asked).
    needs: Vec<u64>,
    reply: R,
}

/// Entries kept for lagging backups at most; a backup further behind is installed again.
pub(crate) const MAX_TAIL: usize = 100_000;

/// See the module documentation. `R` is what a waiting reply is.
pub(crate) struct PrimaryLog<R> {
    pub epoch: u64,
    next_seq: u64,
    local: u64,
    committed: u64,
    /// Entries `tail_base + 1 ..= next_seq - 1`.
    tail: VecDeque<Entry>,
    tail_base: u64,
    pub backups: Vec<Backup>,
    writes: VecDeque<(u64, R)>,
    reads: VecDeque<ReadWait<R>>,
    majority: usize,
}

impl<R> PrimaryLog<R> {
    /// A log for `epoch`, with the other members of the replica set as backups.
    pub fn new(epoch: u64, backups: Vec<(String, SocketAddr)>) -> Self {
        let replicas = backups.len() + 1;
        let majority = replicas / 2 + 1;
        Self {
            epoch,
            next_seq: 1,
            local: 0,
            committed: 0,
            tail: VecDeque::new(),
            tail_base: 0,
            backups: backups
                .into_iter()
                .map(|(name, addr)| Backup {
                    name,
                    addr,
                    progress: Progress::Unsynced,
                    acked: 0,
                    confirmed: 0,
                })
                .collect(),
            writes: VecDeque::new(),
            reads: VecDeque::new(),
            majority,
        }
    }

    /// The same log, numbering its writes after `seq`: a primary that activates again in an
    /// epoch it already wrote in (its storage failed, then recovered) must not reuse a
    /// sequence number, or replicas holding the older write of an entity would ignore the
    /// newer one (max-merge) while acknowledging it.
    pub fn after(mut self, seq: u64) -> Self {
        self.next_seq = seq + 1;
        self.local = seq;
        self.committed = seq;
        self.tail_base = seq;
        self
    }

    pub fn majority(&self) -> usize {
        self.majority
    }

    /// The sequence number of the newest write (0: none).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Whether some write is not committed yet.
    pub fn pending(&self) -> bool {
        self.committed < self.last_seq()
    }

    pub fn backup(&self, name: &str) -> Option<usize> {
        self.backups.iter().position(|b| b.name == name)
    }

    /// Numbers a write and keeps it in the tail.
    pub fn assign(&mut self, entity: EntityRef, state: Option<bytes::Bytes>) -> Entry {
        let version = Version {
            epoch: self.epoch,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        let entry = Entry {
            entity,
            version,
            state,
        };
        if self.backups.is_empty() {
            // Nobody will ever need the tail (R = 1): keep it empty.
            self.tail_base = version.seq;
        } else {
            self.tail.push_back(entry.clone());
        }
        entry
    }

    /// This node stored writes up to `seq`.
    pub fn local_durable(&mut self, seq: u64) -> Vec<R> {
        self.local = self.local.max(seq);
        self.advance()
    }

    /// Backup `i` stored every write up to `applied`, in a reply to batch `batch`.
    pub fn acked(&mut self, i: usize, applied: u64, batch: u64) -> Vec<R> {
        let b = &mut self.backups[i];
        b.acked = b.acked.max(applied);
        b.confirmed = b.confirmed.max(batch);
        self.advance()
    }

    /// Backup `i` confirmed the epoch in batch `batch`.
    pub fn confirmed(&mut self, i: usize, batch: u64) -> Vec<R> {
        let b = &mut self.backups[i];
        b.confirmed = b.confirmed.max(batch);
        self.advance()
    }

    /// Backup `i` was installed up to `through`: it gets writes as they happen from now on,
    /// and the ones after `through` from the tail (returned).
    pub fn installed(&mut self, i: usize, through: u64) -> (Vec<Entry>, Vec<R>) {
        let b = &mut self.backups[i];
        b.progress = Progress::InSync;
        b.acked = b.acked.max(through);
        let rest = self.tail_after(through);
        (rest, self.advance())
    }

    /// Starts installing backup `i` up to the newest write, which it returns; the tail
    /// keeps every later write for it.
    pub fn start_sync(&mut self, i: usize) -> u64 {
        let from = self.last_seq();
        self.backups[i].progress = Progress::Syncing { from };
        from
    }

    /// Backup `i` must be installed again.
    pub fn unsynced(&mut self, i: usize) {
        self.backups[i].progress = Progress::Unsynced;
    }

    /// Entries after `seq` still in the tail.
    pub fn tail_after(&self, seq: u64) -> Vec<Entry> {
        let skip = seq.saturating_sub(self.tail_base) as usize;
        self.tail.iter().skip(skip).cloned().collect()
    }

    /// Waits for write `seq`; gives the reply back if it is committed already.
    pub fn wait_write(&mut self, seq: u64, reply: R) -> Option<R> {
        if seq <= self.committed {
            return Some(reply);
        }
        self.writes.push_back((seq, reply));
        None
    }

    /// Waits for a read that ran after write `seq`, with `needs` per backup; gives the reply
    /// back if it may go already.
    pub fn wait_read(&mut self, seq: u64, needs: Vec<u64>, reply: R) -> Option<R> {
        let w = ReadWait { seq, needs, reply };
        if self.reads.is_empty() && self.read_ready(&w) {
            return Some(w.reply);
        }
        self.reads.push_back(w);
        None
    }

    fn read_ready(&self, w: &ReadWait<R>) -> bool {
        if w.seq > self.committed {
            return false;
        }
        let confirmed = self
            .backups
            .iter()
            .zip(&w.needs)
            .filter(|(b, need)| **need != u64::MAX && b.confirmed >= **need)
            .count();
        confirmed + 1 >= self.majority
    }

    /// Recomputes `committed` and returns the replies that may go.
    fn advance(&mut self) -> Vec<R> {
        // The majority-th highest of what each replica stored is committed.
        let stored = std::iter::once(self.local).chain(self.backups.iter().map(|b| b.acked));
        let c = if self.backups.len() < 16 {
            let mut on_stack = [0u64; 16];
            let mut n = 0;
            for (slot, v) in on_stack.iter_mut().zip(stored) {
                *slot = v;
                n += 1;
            }
            let s = &mut on_stack[..n];
            s.sort_unstable_by(|a, b| b.cmp(a));
            s.get(self.majority - 1).copied()
        } else {
            let mut s: Vec<u64> = stored.collect();
            s.sort_unstable_by(|a, b| b.cmp(a));
            s.get(self.majority - 1).copied()
        };
        if let Some(c) = c {
            self.committed = self.committed.max(c.min(self.last_seq()));
        }
        let mut out = Vec::new();
        if self.writes.is_empty() && self.reads.is_empty() {
            self.trim();
            return out;
        }
        while self
            .writes
            .front()
            .is_some_and(|(s, _)| *s <= self.committed)
        {
            if let Some((_, r)) = self.writes.pop_front() {
                out.push(r);
            }
        }
        while self.reads.front().is_some_and(|w| self.read_ready(w)) {
            if let Some(w) = self.reads.pop_front() {
                out.push(w.reply);
            }
        }
        self.trim();
        out
    }

    /// Drops tail entries no backup needs any more; a backup that holds back more than
    /// [`MAX_TAIL`] entries is dropped from the tail and installed again later.
    fn trim(&mut self) {
        let keep_from = self
            .backups
            .iter()
            .map(|b| match b.progress {
                Progress::InSync => b.acked,
                Progress::Syncing { from } => from,
                Progress::Unsynced => u64::MAX,
            })
            .chain(std::iter::once(self.local))
            .min()
            .unwrap_or(self.local);
        while self.tail_base < keep_from && !self.tail.is_empty() {
            self.tail.pop_front();
            self.tail_base += 1;
        }
        if self.tail.len() > MAX_TAIL {
            let cut = self.last_seq() - MAX_TAIL as u64 / 2;
            for b in &mut self.backups {
                let behind = match b.progress {
                    Progress::InSync => b.acked < cut,
                    Progress::Syncing { from } => from < cut,
                    Progress::Unsynced => false,
                };
                if behind {
                    b.progress = Progress::Unsynced;
                }
            }
            while self.tail_base < cut.min(self.local) && !self.tail.is_empty() {
                self.tail.pop_front();
                self.tail_base += 1;
            }
        }
    }

    /// Ends the log: every reply still waiting, writes first.
    pub fn close(&mut self) -> (Vec<R>, Vec<R>) {
        (
            self.writes.drain(..).map(|(_, r)| r).collect(),
            self.reads.drain(..).map(|w| w.reply).collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }

    fn log3() -> PrimaryLog<&'static str> {
        let mut log = PrimaryLog::new(4, vec![("b".into(), addr()), ("c".into(), addr())]);
        for i in 0..2 {
            log.backups[i].progress = Progress::InSync;
        }
        log
    }

    fn e(id: &str) -> EntityRef {
        EntityRef::new("kv", id)
    }

    #[test]
    fn a_write_commits_on_a_majority_including_or_excluding_the_primary() {
        let mut log = log3();
        let w1 = log.assign(e("x"), None);
        assert_eq!(w1.version, Version { epoch: 4, seq: 1 });
        assert!(log.wait_write(1, "w1").is_none());
        assert!(
            log.local_durable(1).is_empty(),
            "one of three is not a majority"
        );
        assert_eq!(log.acked(0, 1, 1), vec!["w1"]);
        // Two backups without the primary also make a majority.
        log.assign(e("y"), None);
        assert!(log.wait_write(2, "w2").is_none());
        assert!(log.acked(0, 2, 2).is_empty());
        assert_eq!(log.acked(1, 2, 2), vec!["w2"]);
        assert_eq!(log.committed(), 2);
        assert!(!log.pending());
    }

    #[test]
    fn a_read_waits_for_earlier_writes_and_a_majority_confirming_after_it_ran() {
        let mut log = log3();
        log.assign(e("x"), None);
        // Ran after write 1; confirmations wanted from batch 5 (b) and 3 (c).
        assert!(log.wait_read(1, vec![5, 3], "r").is_none());
        assert!(
            log.confirmed(0, 4).is_empty(),
            "batch 4 was sent before the read"
        );
        assert!(log.confirmed(0, 5).is_empty(), "write 1 is not committed");
        assert!(log.local_durable(1).is_empty());
        assert_eq!(log.acked(1, 1, 2), vec!["r"]);
    }

    #[test]
    fn a_single_replica_answers_reads_at_once() {
        let mut log: PrimaryLog<&str> = PrimaryLog::new(1, vec![]);
        assert_eq!(log.wait_read(0, vec![], "r"), Some("r"));
        log.assign(e("x"), None);
        assert!(log.wait_write(1, "w").is_none());
        assert_eq!(log.local_durable(1), vec!["w"]);
    }

    #[test]
    fn the_tail_keeps_what_a_syncing_backup_will_need() {
        let mut log = log3();
        for i in 0..5 {
            log.assign(e(&format!("k{i}")), None);
        }
        log.local_durable(5);
        log.acked(0, 5, 1);
        let from = log.start_sync(1);
        assert_eq!(from, 5);
        log.assign(e("k5"), None);
        log.assign(e("k6"), None);
        let (rest, _) = log.installed(1, from);
        let seqs: Vec<u64> = rest.iter().map(|e| e.version.seq).collect();
        assert_eq!(seqs, vec![6, 7]);
        log.local_durable(7);
        log.acked(0, 7, 2);
        log.acked(1, 7, 2);
        assert!(
            log.tail_after(0).is_empty(),
            "all stored everywhere: tail empty"
        );
    }

    #[test]
    fn a_log_started_after_a_sequence_number_continues_from_it() {
        let backups = vec![("b".into(), addr()), ("c".into(), addr())];
        let mut log = PrimaryLog::new(4, backups).after(7);
        assert_eq!(log.last_seq(), 7);
        assert!(!log.pending());
        assert_eq!(log.start_sync(0), 7);
        let w = log.assign(e("x"), None);
        assert_eq!(w.version, Version { epoch: 4, seq: 8 });
        assert!(log.wait_write(8, "w").is_none());
        assert!(log.local_durable(8).is_empty());
        let (rest, released) = log.installed(0, 7);
        let seqs: Vec<u64> = rest.iter().map(|e| e.version.seq).collect();
        assert_eq!(seqs, vec![8], "write 8 follows from the tail");
        assert!(released.is_empty());
        assert_eq!(log.acked(0, 8, 1), vec!["w"]);
        assert_eq!(log.committed(), 8);
    }

    #[test]
    fn closing_returns_every_waiting_reply() {
        let mut log = log3();
        log.assign(e("x"), None);
        log.wait_write(1, "w");
        log.wait_read(1, vec![1, 1], "r");
        assert_eq!(log.close(), (vec!["w"], vec!["r"]));
    }
}
