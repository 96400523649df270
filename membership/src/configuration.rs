//! Cluster configurations: `(epoch, members)`, and the evidence that one was committed.
//!
//! A configuration names its members by incarnation (`MemberId`: name and generation), so a
//! node that restarts is a new member and its old incarnation's place is void. Epoch N+1 is
//! committed only with the agreement of a majority of epoch N's members (see `paxos.rs`);
//! a [`Committed`] record carries which acceptors agreed, so that whoever receives it can
//! check that they were a majority of the configuration before it.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// One incarnation of a node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MemberId {
    pub name: String,
    pub generation: u64,
}

impl MemberId {
    pub fn new(name: impl Into<String>, generation: u64) -> Self {
        Self {
            name: name.into(),
            generation,
        }
    }
}

impl std::fmt::Display for MemberId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}", self.name, self.generation)
    }
}

/// A member and the address it serves on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ConfigMember {
    pub id: MemberId,
    pub addr: SocketAddr,
}

/// A cluster configuration.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Configuration {
    /// Grows by one with every change.
    pub epoch: u64,
    /// Drawn when the cluster was bootstrapped; configurations of different lineages belong
    /// to different clusters and never mix.
    pub lineage: u64,
    /// Sorted by id; names are unique.
    pub members: Vec<ConfigMember>,
    /// How entities are placed; fixed when the cluster is bootstrapped.
    pub placement: Placement,
    /// Earlier epochs whose replica sets may still hold the newest copy of some shard,
    /// newest last; always at least the previous epoch (empty for the genesis). A new
    /// primary recovers a shard from these, newest first (see `docs/PROTOCOL.md`).
    pub history: Vec<PastEpoch>,
}

/// An earlier epoch's members, kept in the configuration for shard recovery.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PastEpoch {
    pub epoch: u64,
    pub members: Vec<ConfigMember>,
}

/// How entities are placed on members: fixed for the life of a cluster, because every node
/// must compute the same shard table from the same members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Placement {
    /// Number of shards (default 1024).
    pub shards: u32,
    /// Points per member on the consistent-hashing ring (default 256).
    pub vnodes: u32,
    /// Replicas per shard, the primary included (default 3).
    pub replicas: u32,
}

impl Default for Placement {
    fn default() -> Self {
        Self {
            shards: 1024,
            vnodes: 256,
            replicas: 3,
        }
    }
}

/// A short fingerprint of a configuration, gossiped next to its epoch.
pub type Digest = u64;

impl Configuration {
    /// Epoch 1 of a new cluster: its founder alone, default placement.
    pub fn genesis(lineage: u64, founder: ConfigMember) -> Self {
        Self::genesis_with(lineage, founder, Placement::default())
    }

    /// Epoch 1 of a new cluster with the given placement.
    pub fn genesis_with(lineage: u64, founder: ConfigMember, placement: Placement) -> Self {
        Self {
            epoch: 1,
            lineage,
            members: vec![founder],
            placement,
            history: Vec::new(),
        }
    }

    /// Votes needed among this configuration's members to commit the next one.
    pub fn majority(&self) -> usize {
        self.members.len() / 2 + 1
    }

    pub fn contains(&self, id: &MemberId) -> bool {
        self.members.iter().any(|m| &m.id == id)
    }

    pub fn member_named(&self, name: &str) -> Option<&ConfigMember> {
        self.members.iter().find(|m| m.id.name == name)
    }

    pub fn ids(&self) -> BTreeSet<MemberId> {
        self.members.iter().map(|m| m.id.clone()).collect()
    }

    /// The next configuration: `removes` out, `adds` in (an added name replaces any member
    /// of the same name). Its history is this epoch alone, as if every shard had settled
    /// here; see [`Configuration::keep_history`].
    pub fn next(&self, adds: &[ConfigMember], removes: &[MemberId]) -> Configuration {
        let mut members: Vec<ConfigMember> = self
            .members
            .iter()
            .filter(|m| !removes.contains(&m.id))
            .filter(|m| !adds.iter().any(|a| a.id.name == m.id.name))
            .cloned()
            .collect();
        members.extend(adds.iter().cloned());
        members.sort();
        members.dedup_by(|a, b| a.id.name == b.id.name);
        Configuration {
            epoch: self.epoch + 1,
            lineage: self.lineage,
            members,
            placement: self.placement,
            history: vec![PastEpoch {
                epoch: self.epoch,
                members: self.members.clone(),
            }],
        }
    }

    /// Keeps `previous`'s history in this (its successor's): some shard may not have been
    /// recovered in `previous`'s epoch yet, so its newest copy may be in an older epoch's
    /// replica set.
    pub fn keep_history(&mut self, previous: &Configuration) {
        let mut history = previous.history.clone();
        history.append(&mut self.history);
        self.history = history;
    }

    /// A stable fingerprint (FNV-1a over the postcard encoding).
    pub fn digest(&self) -> Digest {
        let bytes = postcard::to_allocvec(self).unwrap_or_default();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    }

    /// `n1#5, n2#7`: for logs.
    pub fn describe(&self) -> String {
        self.members
            .iter()
            .map(|m| m.id.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A configuration known to be committed, with the evidence: who accepted it, among the
/// members of the configuration before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    pub config: Configuration,
    /// The members of epoch `config.epoch - 1` (empty for the genesis).
    pub prev_members: Vec<MemberId>,
    pub prev_digest: Option<Digest>,
    /// The acceptors whose `Accepted` made the commit.
    pub quorum: Vec<MemberId>,
}

impl Committed {
    pub fn genesis(config: Configuration) -> Self {
        let quorum = config.members.iter().map(|m| m.id.clone()).collect();
        Self {
            config,
            prev_members: Vec::new(),
            prev_digest: None,
            quorum,
        }
    }

    pub fn epoch(&self) -> u64 {
        self.config.epoch
    }

    /// Checks the evidence: the quorum is a majority of the previous members, and, when the
    /// receiver knows the previous configuration, that it is the one this builds on.
    pub fn verify(&self, previous: Option<&Configuration>) -> Result<(), String> {
        self.verify_with_slack(previous, 0)
    }

    /// [`Committed::verify`] with a weakened majority: only the simulator's planted bug
    /// passes a non-zero `slack`.
    #[doc(hidden)]
    pub fn verify_with_slack(
        &self,
        previous: Option<&Configuration>,
        slack: usize,
    ) -> Result<(), String> {
        let c = &self.config;
        if c.members.is_empty() {
            return Err(format!("epoch {} has no members", c.epoch));
        }
        if c.epoch == 1 {
            let founders: BTreeSet<&MemberId> = c.members.iter().map(|m| &m.id).collect();
            let quorum: BTreeSet<&MemberId> = self.quorum.iter().collect();
            return if c.members.len() == 1 && founders == quorum && self.prev_members.is_empty() {
                Ok(())
            } else {
                Err("a genesis configuration has exactly its founder, who committed it".into())
            };
        }
        let prev: BTreeSet<&MemberId> = self.prev_members.iter().collect();
        let voters: BTreeSet<&MemberId> = self.quorum.iter().filter(|q| prev.contains(q)).collect();
        if voters.len() < (prev.len() / 2 + 1).saturating_sub(slack).max(1) {
            return Err(format!(
                "epoch {} was accepted by {} of the {} members of epoch {}: not a majority",
                c.epoch,
                voters.len(),
                prev.len(),
                c.epoch - 1
            ));
        }
        if let Some(p) = previous
            && p.epoch + 1 == c.epoch
        {
            if p.lineage != c.lineage {
                return Err(format!(
                    "epoch {} belongs to cluster lineage {:x}, ours is {:x}",
                    c.epoch, c.lineage, p.lineage
                ));
            }
            let known: BTreeSet<&MemberId> = p.members.iter().map(|m| &m.id).collect();
            if known != prev || self.prev_digest != Some(p.digest()) {
                return Err(format!(
                    "epoch {} does not build on the epoch {} this node knows",
                    c.epoch, p.epoch
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, generation: u64) -> ConfigMember {
        ConfigMember {
            id: MemberId::new(name, generation),
            addr: "127.0.0.1:1".parse().unwrap(),
        }
    }

    #[test]
    fn next_adds_removes_and_replaces_by_name() {
        let c1 = Configuration::genesis(7, m("a", 1));
        let c2 = c1.next(&[m("b", 1), m("c", 1)], &[]);
        assert_eq!(c2.epoch, 2);
        assert_eq!(c2.describe(), "a#1, b#1, c#1");
        assert_eq!(c2.majority(), 2);
        // b restarted as generation 2: the new incarnation replaces the old one.
        let c3 = c2.next(&[m("b", 2)], &[MemberId::new("c", 1)]);
        assert_eq!(c3.describe(), "a#1, b#2");
        assert_ne!(c2.digest(), c3.digest());
        assert_eq!(
            c3.digest(),
            c2.next(&[m("b", 2)], &[MemberId::new("c", 1)]).digest()
        );
    }

    #[test]
    fn evidence_must_be_a_majority_of_the_previous_members_and_chain() {
        let c1 = Configuration::genesis(7, m("a", 1));
        let g = Committed::genesis(c1.clone());
        assert!(g.verify(None).is_ok());
        let c2 = c1.next(&[m("b", 1), m("c", 1)], &[]);
        let ok = Committed {
            config: c2.clone(),
            prev_members: c1.ids().into_iter().collect(),
            prev_digest: Some(c1.digest()),
            quorum: vec![MemberId::new("a", 1)],
        };
        assert!(ok.verify(Some(&c1)).is_ok());
        assert!(ok.verify(None).is_ok());
        let c3 = c2.next(&[m("d", 1)], &[]);
        let weak = Committed {
            config: c3.clone(),
            prev_members: c2.ids().into_iter().collect(),
            prev_digest: Some(c2.digest()),
            quorum: vec![MemberId::new("a", 1)],
        };
        assert!(
            weak.verify(Some(&c2))
                .unwrap_err()
                .contains("not a majority")
        );
        // A quorum member that is not a previous member does not count.
        let outsider = Committed {
            quorum: vec![MemberId::new("a", 1), MemberId::new("zz", 9)],
            ..weak.clone()
        };
        assert!(outsider.verify(Some(&c2)).is_err());
        // Built on another epoch 2 than ours.
        let other_c2 = c1.next(&[m("x", 1)], &[]);
        let forked = Committed {
            quorum: vec![MemberId::new("a", 1), MemberId::new("b", 1)],
            ..weak
        };
        assert!(forked.verify(Some(&c2)).is_ok());
        assert!(
            forked
                .verify(Some(&other_c2))
                .unwrap_err()
                .contains("does not build")
        );
    }
}
