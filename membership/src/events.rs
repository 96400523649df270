//! Membership events and the tracker that derives them from successive views.
//!
//! chitchat reports state (who is live, what each node published); other layers want
//! transitions. The tracker remembers, per node name, the last generation, status and
//! liveness it reported, and emits one event per transition, each exactly once:
//!
//! - `Joined`: a node name seen alive for the first time;
//! - `Up` / `Leaving`: the node published that status;
//! - `Failed`: a node that was not leaving stopped being live;
//! - `Left`: a node that announced `leaving` stopped being live;
//! - `Rejoined`: the name came back as another generation (a restart); the old incarnation
//!   is void;
//! - `Recovered`: a node reported failed is live again in the same generation (the failure
//!   detector was wrong, or a partition healed).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::status::NodeStatus;
use crate::view::{Member, MembershipView};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum MembershipEvent {
    Joined {
        member: Member,
    },
    Up {
        member: Member,
    },
    Leaving {
        member: Member,
    },
    Failed {
        member: Member,
    },
    Left {
        member: Member,
    },
    Rejoined {
        member: Member,
        previous_generation: u64,
    },
    Recovered {
        member: Member,
    },
}

impl MembershipEvent {
    pub fn member(&self) -> &Member {
        match self {
            MembershipEvent::Joined { member }
            | MembershipEvent::Up { member }
            | MembershipEvent::Leaving { member }
            | MembershipEvent::Failed { member }
            | MembershipEvent::Left { member }
            | MembershipEvent::Rejoined { member, .. }
            | MembershipEvent::Recovered { member } => member,
        }
    }

    /// Short name of the event kind: `joined`, `up`, ...
    pub fn kind(&self) -> &'static str {
        match self {
            MembershipEvent::Joined { .. } => "joined",
            MembershipEvent::Up { .. } => "up",
            MembershipEvent::Leaving { .. } => "leaving",
            MembershipEvent::Failed { .. } => "failed",
            MembershipEvent::Left { .. } => "left",
            MembershipEvent::Rejoined { .. } => "rejoined",
            MembershipEvent::Recovered { .. } => "recovered",
        }
    }
}

#[derive(Debug, Clone)]
struct Known {
    generation: u64,
    status: NodeStatus,
    live: bool,
    /// Whether the current generation was ever reported (Joined or Rejoined).
    announced: bool,
}

/// Turns successive views into events.
#[derive(Debug, Default)]
pub struct EventTracker {
    known: HashMap<String, Known>,
}

impl EventTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Compares `view` with what was reported so far; returns the new events in order.
    pub fn update(&mut self, view: &MembershipView) -> Vec<MembershipEvent> {
        let mut events = Vec::new();
        for m in &view.members {
            match self.known.get_mut(&m.name) {
                None => {
                    let announced = m.live;
                    if announced {
                        events.push(MembershipEvent::Joined { member: m.clone() });
                        status_event(m, NodeStatus::Joining, &mut events);
                    }
                    self.known.insert(
                        m.name.clone(),
                        Known {
                            generation: m.generation,
                            status: if announced {
                                m.status
                            } else {
                                NodeStatus::Joining
                            },
                            live: m.live,
                            announced,
                        },
                    );
                }
                Some(k) if m.generation != k.generation => {
                    // Another incarnation (normally newer; older if the node's clock stepped
                    // back). Report it once it is alive; until then the old one stands.
                    if m.live {
                        events.push(MembershipEvent::Rejoined {
                            member: m.clone(),
                            previous_generation: k.generation,
                        });
                        status_event(m, NodeStatus::Joining, &mut events);
                        *k = Known {
                            generation: m.generation,
                            status: m.status,
                            live: true,
                            announced: true,
                        };
                    }
                }
                Some(k) => {
                    if !k.announced {
                        if m.live {
                            events.push(MembershipEvent::Joined { member: m.clone() });
                            status_event(m, NodeStatus::Joining, &mut events);
                            k.announced = true;
                            k.status = m.status;
                            k.live = true;
                        }
                        continue;
                    }
                    if m.status != k.status {
                        status_event(m, k.status, &mut events);
                        k.status = m.status;
                    }
                    if k.live && !m.live {
                        events.push(if m.status == NodeStatus::Leaving {
                            MembershipEvent::Left { member: m.clone() }
                        } else {
                            MembershipEvent::Failed { member: m.clone() }
                        });
                    } else if !k.live && m.live {
                        events.push(MembershipEvent::Recovered { member: m.clone() });
                    }
                    k.live = m.live;
                }
            }
        }
        events
    }
}

fn status_event(m: &Member, previous: NodeStatus, events: &mut Vec<MembershipEvent>) {
    if m.status == previous {
        return;
    }
    match m.status {
        NodeStatus::Up => events.push(MembershipEvent::Up { member: m.clone() }),
        NodeStatus::Leaving => events.push(MembershipEvent::Leaving { member: m.clone() }),
        NodeStatus::Joining | NodeStatus::Unknown => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, generation: u64, status: NodeStatus, live: bool) -> Member {
        Member {
            name: name.into(),
            addr: "127.0.0.1:1".parse().unwrap(),
            generation,
            status,
            live,
            protocol: Some(1),
            data_addr: None,
            config_epoch: None,
            lineage: None,
            shards: None,
            shards_ready: None,
        }
    }

    fn view(members: Vec<Member>) -> MembershipView {
        MembershipView {
            cluster_id: "c".into(),
            self_name: "a".into(),
            members,
            configuration: None,
        }
    }

    fn kinds(events: &[MembershipEvent]) -> Vec<&'static str> {
        events.iter().map(|e| e.kind()).collect()
    }

    #[test]
    fn life_cycle_of_a_node() {
        use NodeStatus::*;
        let mut t = EventTracker::new();
        assert_eq!(
            kinds(&t.update(&view(vec![m("b", 1, Joining, true)]))),
            ["joined"]
        );
        assert!(t.update(&view(vec![m("b", 1, Joining, true)])).is_empty());
        assert_eq!(kinds(&t.update(&view(vec![m("b", 1, Up, true)]))), ["up"]);
        assert_eq!(
            kinds(&t.update(&view(vec![m("b", 1, Up, false)]))),
            ["failed"]
        );
        assert_eq!(
            kinds(&t.update(&view(vec![m("b", 1, Up, true)]))),
            ["recovered"]
        );
        // Restart: nothing until the new incarnation is alive, then one Rejoined (+ Up).
        assert!(t.update(&view(vec![m("b", 2, Joining, false)])).is_empty());
        let ev = t.update(&view(vec![m("b", 2, Up, true)]));
        assert_eq!(kinds(&ev), ["rejoined", "up"]);
        assert!(matches!(
            ev[0],
            MembershipEvent::Rejoined {
                previous_generation: 1,
                ..
            }
        ));
        // Graceful leave.
        assert_eq!(
            kinds(&t.update(&view(vec![m("b", 2, Leaving, true)]))),
            ["leaving"]
        );
        assert_eq!(
            kinds(&t.update(&view(vec![m("b", 2, Leaving, false)]))),
            ["left"]
        );
        assert!(t.update(&view(vec![m("b", 2, Leaving, false)])).is_empty());
        // A dead older incarnation showing up is ignored; a live one is a restart whose
        // clock stepped back.
        assert!(t.update(&view(vec![m("b", 1, Up, false)])).is_empty());
        assert_eq!(
            kinds(&t.update(&view(vec![m("b", 1, Up, true)]))),
            ["rejoined", "up"]
        );
    }

    #[test]
    fn a_node_first_seen_dead_is_not_announced_until_alive() {
        use NodeStatus::*;
        let mut t = EventTracker::new();
        assert!(t.update(&view(vec![m("c", 5, Up, false)])).is_empty());
        assert_eq!(
            kinds(&t.update(&view(vec![m("c", 5, Up, true)]))),
            ["joined", "up"]
        );
        assert_eq!(
            kinds(&t.update(&view(vec![m("c", 5, Up, false)]))),
            ["failed"]
        );
    }
}
