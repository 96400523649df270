//! Single-decree Paxos, one instance per epoch: how epoch N+1 is chosen by the members of
//! epoch N.
//!
//! This file holds the acceptor as a plain state machine (no I/O, no clock): a request and the
//! durable state go in, a reply and whether the state changed come out. The caller must make
//! a changed state durable *before* it sends the reply; that is what lets a node that
//! crashes and restarts keep every promise it made.
//!
//! Why two different configurations can never be committed for one epoch: a value is
//! committed when a majority of epoch N's members accepted it under one ballot. A proposer
//! with a higher ballot must first collect promises from a majority, and any two majorities
//! of the same member set share an acceptor; that acceptor reports the value it accepted, and
//! the proposer must propose the highest-ballot value reported. So every higher ballot
//! proposes the committed value again (Lamport, "Paxos Made Simple", §2.2). The acceptor set
//! of an instance is fixed (the members of the committed epoch N), which is what keeps the
//! argument intact across reconfiguration (Vertical Paxos: each instance is configured by its
//! predecessor).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::configuration::{Committed, Configuration, MemberId};

/// A proposal number: higher round wins, the proposer's name breaks ties.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ballot {
    pub round: u64,
    pub proposer: String,
}

impl std::fmt::Display for Ballot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.round, self.proposer)
    }
}

/// Earlier incarnations a node may still vote for, at most: a configuration holds only one
/// incarnation of a name, and only one that lived recently can be in one.
pub const OWN_GENERATIONS: usize = 64;

/// What a node keeps on disk for the configuration protocol.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DurableState {
    /// The newest configuration this node knows to be committed.
    pub committed: Option<Committed>,
    /// The instance this node's acceptor is working on (`committed epoch + 1`).
    pub instance: u64,
    /// The highest ballot promised in that instance.
    pub promised: Option<Ballot>,
    /// The value accepted in that instance, with its ballot.
    pub accepted: Option<(Ballot, Configuration)>,
    /// Every generation that ran with this state: the node may vote in the place of any of
    /// them (a restart with its data keeps its vote; a restart without it does not).
    pub own_generations: BTreeSet<u64>,
}

impl DurableState {
    pub fn epoch(&self) -> u64 {
        self.committed.as_ref().map_or(0, |c| c.epoch())
    }

    pub fn config(&self) -> Option<&Configuration> {
        self.committed.as_ref().map(|c| &c.config)
    }

    /// This node's place among the acceptors of the next instance: the member of the
    /// committed configuration that is one of its own incarnations.
    pub fn acceptor_slot(&self, name: &str) -> Option<MemberId> {
        let c = self.config()?;
        c.members
            .iter()
            .find(|m| m.id.name == name && self.own_generations.contains(&m.id.generation))
            .map(|m| m.id.clone())
    }

    /// The state with a new incarnation's generation: the clock's milliseconds, but always
    /// above every generation this state has run as.
    ///
    /// Every earlier generation is kept (the newest [`OWN_GENERATIONS`]): the state is the
    /// same durable state, so voting in the place of any of them keeps every promise made.
    /// Dropping the ones not in the configuration known now is not safe for liveness: a
    /// proposer that had not yet heard of this node's removal can still commit a
    /// configuration that adds an old incarnation back (it gossiped `joining` before it
    /// learnt it was removed), and nobody could vote in its place (simulator: `chaos`
    /// seed 7 after write batching changed its timing; epoch 11 held two such places out of
    /// four and could never be succeeded).
    pub fn claim_generation(&self, clock_ms: u64) -> (u64, DurableState) {
        let generation = clock_ms.max(self.own_generations.last().map_or(0, |g| g + 1));
        let mut next = self.clone();
        next.own_generations.insert(generation);
        while next.own_generations.len() > OWN_GENERATIONS {
            next.own_generations.pop_first();
        }
        (generation, next)
    }

    /// Adopts a newer committed configuration; the acceptor moves to the next instance.
    pub fn adopt(&mut self, committed: Committed) {
        let next = committed.epoch() + 1;
        self.committed = Some(committed);
        if self.instance < next {
            self.instance = next;
            self.promised = None;
            self.accepted = None;
        }
    }
}

/// Requests of the configuration protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigRequest {
    /// Phase 1a for instance `epoch`.
    Prepare { epoch: u64, ballot: Ballot },
    /// Phase 2a for instance `epoch`.
    Accept {
        epoch: u64,
        ballot: Ballot,
        value: Configuration,
    },
    /// A configuration was committed.
    Commit(Committed),
    /// Asks for the newest committed configuration the peer knows.
    Fetch,
}

/// Why an acceptor refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// The instance is decided: here is the outcome (or a newer one).
    Decided(Committed),
    /// A higher ballot was promised.
    Promised(Ballot),
    /// The acceptor does not know the configuration the instance builds on yet.
    Behind { epoch: u64 },
    /// The acceptor is not a member of the configuration the instance builds on.
    NotAcceptor,
    /// The acceptor cannot vote now: its vote could not be made durable (a full disk, a
    /// failing device).
    Unavailable(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigResponse {
    /// Phase 1b: the promise, with the value accepted so far in this instance.
    Promise {
        from: MemberId,
        accepted: Option<(Ballot, Configuration)>,
    },
    /// Phase 2b.
    Accepted {
        from: MemberId,
    },
    Refused(Refusal),
    /// The answer to `Commit`.
    Ack,
    /// The answer to `Fetch`.
    Current(Option<Committed>),
}

/// The acceptor: handles `Prepare` and `Accept` against the durable state. Returns the reply
/// and whether `state` changed (it must then be made durable before the reply is sent).
pub fn accept(state: &mut DurableState, me: &str, req: &ConfigRequest) -> (ConfigResponse, bool) {
    let (epoch, ballot) = match req {
        ConfigRequest::Prepare { epoch, ballot } | ConfigRequest::Accept { epoch, ballot, .. } => {
            (*epoch, ballot)
        }
        _ => return (ConfigResponse::Ack, false),
    };
    let current = state.epoch();
    if epoch <= current {
        let decided = state.committed.clone();
        return match decided {
            Some(c) => (ConfigResponse::Refused(Refusal::Decided(c)), false),
            None => (ConfigResponse::Refused(Refusal::Behind { epoch: 0 }), false),
        };
    }
    if epoch > current + 1 {
        return (
            ConfigResponse::Refused(Refusal::Behind { epoch: current }),
            false,
        );
    }
    let Some(slot) = state.acceptor_slot(me) else {
        return (ConfigResponse::Refused(Refusal::NotAcceptor), false);
    };
    if state.instance != epoch {
        state.instance = epoch;
        state.promised = None;
        state.accepted = None;
    }
    if let Some(p) = &state.promised
        && p > ballot
    {
        return (ConfigResponse::Refused(Refusal::Promised(p.clone())), false);
    }
    let changed = state.promised.as_ref() != Some(ballot);
    state.promised = Some(ballot.clone());
    match req {
        ConfigRequest::Prepare { .. } => (
            ConfigResponse::Promise {
                from: slot,
                accepted: state.accepted.clone(),
            },
            changed,
        ),
        ConfigRequest::Accept { value, .. } => {
            let new = Some((ballot.clone(), value.clone()));
            let changed = changed || state.accepted != new;
            state.accepted = new;
            (ConfigResponse::Accepted { from: slot }, changed)
        }
        _ => unreachable!("only Prepare and Accept reach here"),
    }
}

/// The acceptor with its durability rule: the new state is stored through `store` before
/// the reply is returned, and a store failure leaves `state` unchanged and refuses the vote.
pub fn vote_durably(
    state: &mut DurableState,
    me: &str,
    req: &ConfigRequest,
    store: impl FnOnce(&DurableState) -> Result<(), String>,
) -> ConfigResponse {
    let mut next = state.clone();
    let (reply, changed) = accept(&mut next, me, req);
    if changed {
        if let Err(e) = store(&next) {
            return ConfigResponse::Refused(Refusal::Unavailable(e));
        }
        *state = next;
    }
    reply
}

/// Phase 2's value: the highest-ballot value any promise reported, else `own`.
pub fn choose_value(
    promises: &[Option<(Ballot, Configuration)>],
    own: Configuration,
) -> Configuration {
    promises
        .iter()
        .flatten()
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, v)| v.clone())
        .unwrap_or(own)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configuration::ConfigMember;

    fn member(name: &str) -> ConfigMember {
        ConfigMember {
            id: MemberId::new(name, 1),
            addr: "127.0.0.1:1".parse().unwrap(),
        }
    }

    fn ballot(round: u64, p: &str) -> Ballot {
        Ballot {
            round,
            proposer: p.into(),
        }
    }

    /// Three acceptors a, b, c, all members of epoch 1... (a founded, b and c added at 2).
    fn acceptors() -> (Vec<DurableState>, Configuration) {
        let c1 = Configuration::genesis(1, member("a"));
        let c2 = c1.next(&[member("b"), member("c")], &[]);
        let committed = Committed {
            config: c2.clone(),
            prev_members: vec![MemberId::new("a", 1)],
            prev_digest: Some(c1.digest()),
            quorum: vec![MemberId::new("a", 1)],
        };
        let states = ["a", "b", "c"]
            .iter()
            .map(|_| {
                let mut s = DurableState {
                    own_generations: [1].into(),
                    ..Default::default()
                };
                s.adopt(committed.clone());
                s
            })
            .collect();
        (states, c2)
    }

    #[test]
    fn a_rejoining_node_can_still_vote_for_an_incarnation_added_back_late() {
        let (s, c2) = acceptors();
        // a is removed at epoch 3 and rejoins as generation 7...
        let c3 = c2.next(&[], &[MemberId::new("a", 1)]);
        let mut a = s[0].clone();
        a.adopt(Committed {
            config: c3.clone(),
            prev_members: c2.members.iter().map(|m| m.id.clone()).collect(),
            prev_digest: Some(c2.digest()),
            quorum: vec![MemberId::new("b", 1), MemberId::new("c", 1)],
        });
        let (generation, mut a) = a.claim_generation(7);
        assert_eq!(generation, 7);
        assert_eq!(a.claim_generation(3).0, 8, "always above every earlier one");
        // ...while b, which had seen a#1 gossip `joining`, adds a#1 back at epoch 4.
        let c4 = c3.next(&[member("a")], &[]);
        a.adopt(Committed {
            config: c4.clone(),
            prev_members: c3.members.iter().map(|m| m.id.clone()).collect(),
            prev_digest: Some(c3.digest()),
            quorum: vec![MemberId::new("b", 1), MemberId::new("c", 1)],
        });
        assert_eq!(
            a.acceptor_slot("a"),
            Some(MemberId::new("a", 1)),
            "a votes in a#1's place, or epoch 4 could lose its majority for good"
        );
        let mut many = a;
        for g in 0..100 {
            many = many.claim_generation(100 + g).1;
        }
        assert_eq!(many.own_generations.len(), OWN_GENERATIONS);
    }

    #[test]
    fn promises_and_accepts_follow_ballots() {
        let (mut s, c2) = acceptors();
        let v = c2.next(&[member("d")], &[]);
        let (r, changed) = accept(
            &mut s[0],
            "a",
            &ConfigRequest::Prepare {
                epoch: 3,
                ballot: ballot(1, "a"),
            },
        );
        assert!(changed);
        assert!(matches!(r, ConfigResponse::Promise { accepted: None, .. }));
        // A lower ballot is refused, naming the promise.
        let (r, changed) = accept(
            &mut s[0],
            "a",
            &ConfigRequest::Prepare {
                epoch: 3,
                ballot: ballot(0, "z"),
            },
        );
        assert!(!changed);
        assert_eq!(
            r,
            ConfigResponse::Refused(Refusal::Promised(ballot(1, "a")))
        );
        let (r, _) = accept(
            &mut s[0],
            "a",
            &ConfigRequest::Accept {
                epoch: 3,
                ballot: ballot(1, "a"),
                value: v.clone(),
            },
        );
        assert!(matches!(r, ConfigResponse::Accepted { .. }));
        // A later proposer learns the accepted value in its promise and must re-propose it.
        let (r, _) = accept(
            &mut s[0],
            "a",
            &ConfigRequest::Prepare {
                epoch: 3,
                ballot: ballot(2, "b"),
            },
        );
        let ConfigResponse::Promise { accepted, .. } = r else {
            panic!("{r:?}")
        };
        assert_eq!(accepted, Some((ballot(1, "a"), v.clone())));
        let other = c2.next(&[member("e")], &[]);
        assert_eq!(choose_value(&[None, accepted], other.clone()), v);
        assert_eq!(choose_value(&[None, None], other.clone()), other);
    }

    #[test]
    fn decided_behind_and_outsider_instances_are_refused() {
        let (mut s, _) = acceptors();
        let (r, _) = accept(
            &mut s[1],
            "b",
            &ConfigRequest::Prepare {
                epoch: 2,
                ballot: ballot(9, "x"),
            },
        );
        assert!(matches!(r, ConfigResponse::Refused(Refusal::Decided(ref c)) if c.epoch() == 2));
        let (r, _) = accept(
            &mut s[1],
            "b",
            &ConfigRequest::Prepare {
                epoch: 5,
                ballot: ballot(9, "x"),
            },
        );
        assert_eq!(r, ConfigResponse::Refused(Refusal::Behind { epoch: 2 }));
        let (r, _) = accept(
            &mut s[1],
            "zed",
            &ConfigRequest::Prepare {
                epoch: 3,
                ballot: ballot(9, "x"),
            },
        );
        assert_eq!(r, ConfigResponse::Refused(Refusal::NotAcceptor));
        // A restart without its data (no own generation recorded) loses the vote.
        s[2].own_generations.clear();
        let (r, _) = accept(
            &mut s[2],
            "c",
            &ConfigRequest::Prepare {
                epoch: 3,
                ballot: ballot(9, "x"),
            },
        );
        assert_eq!(r, ConfigResponse::Refused(Refusal::NotAcceptor));
    }

    #[test]
    fn a_vote_that_cannot_be_stored_is_refused_and_forgotten() {
        let (mut s, _) = acceptors();
        let before = s[0].clone();
        let req = ConfigRequest::Prepare {
            epoch: 3,
            ballot: ballot(1, "a"),
        };
        let r = vote_durably(&mut s[0], "a", &req, |_| {
            Err("No space left on device".into())
        });
        assert_eq!(
            r,
            ConfigResponse::Refused(Refusal::Unavailable("No space left on device".into()))
        );
        assert_eq!(s[0], before, "nothing promised");
        let mut stored = None;
        let r = vote_durably(&mut s[0], "a", &req, |st| {
            stored = Some(st.clone());
            Ok(())
        });
        assert!(matches!(r, ConfigResponse::Promise { .. }));
        assert_eq!(
            stored.as_ref(),
            Some(&s[0]),
            "the promise was stored before the reply"
        );
    }

    /// Exhaustive over small interleavings: two proposers with different values race through
    /// three acceptors in every order of their eight messages; at most one value is chosen.
    #[test]
    fn two_proposers_never_choose_different_values() {
        let (states0, c2) = acceptors();
        let values = [c2.next(&[member("d")], &[]), c2.next(&[member("e")], &[])];
        let ballots = [ballot(1, "a"), ballot(1, "b")];
        // Each proposer: prepare to all three, then accept to all three.
        // A step is (proposer, phase, acceptor); phases must be in order per proposer.
        let steps: Vec<(usize, usize, usize)> = (0..2)
            .flat_map(|p| (0..2).flat_map(move |ph| (0..3).map(move |a| (p, ph, a))))
            .collect();
        let mut orders = 0;
        let mut chosen_any = 0;
        let mut idx: Vec<usize> = (0..steps.len()).collect();
        // Shuffle deterministically through many permutations (a full 12! is too many).
        let rng = shoal_transport::NodeRng::seeded(42);
        for _ in 0..20_000 {
            for i in (1..idx.len()).rev() {
                idx.swap(i, rng.below(i as u64 + 1) as usize);
            }
            let mut states = states0.clone();
            let mut promises: [Vec<Option<(Ballot, Configuration)>>; 2] = [vec![], vec![]];
            let mut accepted_by: [BTreeSet<usize>; 2] = [BTreeSet::new(), BTreeSet::new()];
            let mut proposal: [Option<Configuration>; 2] = [None, None];
            // Replay the permutation, skipping steps whose phase is not reachable yet.
            let mut pending: Vec<usize> = idx.clone();
            let mut progressed = true;
            while progressed {
                progressed = false;
                pending.retain(|&k| {
                    let (p, ph, a) = steps[k];
                    let name = ["a", "b", "c"][a];
                    if ph == 0 {
                        let (r, _) = accept(
                            &mut states[a],
                            name,
                            &ConfigRequest::Prepare {
                                epoch: 3,
                                ballot: ballots[p].clone(),
                            },
                        );
                        if let ConfigResponse::Promise { accepted, .. } = r {
                            promises[p].push(accepted);
                        }
                        progressed = true;
                        false
                    } else {
                        if promises[p].len() < 2 {
                            return true; // not yet a majority of promises
                        }
                        let v = proposal[p]
                            .get_or_insert_with(|| choose_value(&promises[p], values[p].clone()))
                            .clone();
                        let (r, _) = accept(
                            &mut states[a],
                            name,
                            &ConfigRequest::Accept {
                                epoch: 3,
                                ballot: ballots[p].clone(),
                                value: v,
                            },
                        );
                        if matches!(r, ConfigResponse::Accepted { .. }) {
                            accepted_by[p].insert(a);
                        }
                        progressed = true;
                        false
                    }
                });
            }
            orders += 1;
            let chosen: Vec<&Configuration> = (0..2)
                .filter(|&p| accepted_by[p].len() >= 2)
                .filter_map(|p| proposal[p].as_ref())
                .collect();
            if chosen.len() == 2 {
                assert_eq!(chosen[0], chosen[1], "two values chosen for one epoch");
            }
            chosen_any += usize::from(!chosen.is_empty());
        }
        assert_eq!(orders, 20_000);
        assert!(chosen_any > 0, "some orders must choose a value");
    }
}
