//! Which configuration changes gossip calls for: a pure function of the committed
//! configuration, the gossip view and how long each member has been down.
//!
//! - add a live node that gossips `joining`, speaks our protocol, belongs to no other
//!   cluster lineage and was started with our shard count;
//! - remove a member whose name came back as a newer live incarnation (it restarted);
//! - remove a member that announced `leaving`;
//! - remove a member the failure detector has reported dead for `down_after`.
//!
//! Gossip only suggests; the change happens when a majority of the configuration commits it.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::configuration::{ConfigMember, Configuration, MemberId};
use crate::status::{NodeStatus, PROTOCOL_VERSION};
use crate::view::MembershipView;

/// A change and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Add(ConfigMember),
    Remove { id: MemberId, why: Why },
}

/// Why a member is removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// Its name came back as this newer generation.
    Restarted(u64),
    Leaving,
    /// Reported dead for this long.
    Down(Duration),
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Add(m) => write!(f, "add {} ({})", m.id, m.addr),
            Change::Remove { id, why } => match why {
                Why::Restarted(g) => write!(f, "remove {id} (restarted as generation {g})"),
                Why::Leaving => write!(f, "remove {id} (it is leaving)"),
                Why::Down(d) => write!(f, "remove {id} (down for {:.1}s)", d.as_secs_f64()),
            },
        }
    }
}

/// The changes `view` calls for against `config`. `down_since` holds, per member, when it
/// was first seen not live (members absent from it are live).
pub fn desired_changes(
    config: &Configuration,
    view: &MembershipView,
    down_since: &HashMap<MemberId, Instant>,
    now: Instant,
    down_after: Duration,
) -> Vec<Change> {
    let mut changes = Vec::new();
    let lineage = format!("{:x}", config.lineage);
    let mut adds = Vec::new();
    for v in view.live() {
        let id = MemberId::new(v.name.clone(), v.generation);
        let compatible = v.protocol == Some(PROTOCOL_VERSION)
            && v.lineage.as_ref().is_none_or(|l| *l == lineage)
            && v.shards.is_none_or(|s| s == config.placement.shards);
        if v.status == NodeStatus::Joining && compatible && !config.contains(&id) {
            adds.push(ConfigMember { id, addr: v.addr });
        }
    }
    for m in &config.members {
        let seen = view.member(&m.id.name);
        if let Some(v) = seen
            && v.generation != m.id.generation
            && adds.iter().any(|a| a.id.name == m.id.name)
        {
            changes.push(Change::Remove {
                id: m.id.clone(),
                why: Why::Restarted(v.generation),
            });
        } else if seen
            .is_some_and(|v| v.generation == m.id.generation && v.status == NodeStatus::Leaving)
        {
            changes.push(Change::Remove {
                id: m.id.clone(),
                why: Why::Leaving,
            });
        } else if let Some(since) = down_since.get(&m.id)
            && now.saturating_duration_since(*since) >= down_after
        {
            changes.push(Change::Remove {
                id: m.id.clone(),
                why: Why::Down(now.saturating_duration_since(*since)),
            });
        }
    }
    changes.extend(adds.into_iter().map(Change::Add));
    // Never propose an empty cluster: the last member stays.
    let removed = changes
        .iter()
        .filter(|c| matches!(c, Change::Remove { .. }))
        .count();
    let added = changes.len() - removed;
    if removed >= config.members.len() && added == 0 {
        changes.clear();
    }
    changes
}

/// Applies changes to `config`: the proposed next configuration.
pub fn apply(config: &Configuration, changes: &[Change]) -> Configuration {
    let adds: Vec<ConfigMember> = changes
        .iter()
        .filter_map(|c| match c {
            Change::Add(m) => Some(m.clone()),
            Change::Remove { .. } => None,
        })
        .collect();
    let removes: Vec<MemberId> = changes
        .iter()
        .filter_map(|c| match c {
            Change::Remove { id, .. } => Some(id.clone()),
            Change::Add(_) => None,
        })
        .collect();
    config.next(&adds, &removes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::Member;

    fn cm(name: &str, generation: u64) -> ConfigMember {
        ConfigMember {
            id: MemberId::new(name, generation),
            addr: "127.0.0.1:1".parse().unwrap(),
        }
    }

    fn vm(name: &str, generation: u64, status: NodeStatus, live: bool) -> Member {
        Member {
            name: name.into(),
            addr: "127.0.0.1:1".parse().unwrap(),
            generation,
            status,
            live,
            protocol: Some(PROTOCOL_VERSION),
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

    #[test]
    fn joins_restarts_leaves_and_long_deaths() {
        let config = Configuration::genesis(0xab, cm("a", 1))
            .next(&[cm("b", 1), cm("c", 1), cm("d", 1)], &[]);
        let now = Instant::now();
        let v = view(vec![
            vm("a", 1, NodeStatus::Up, true),
            vm("b", 2, NodeStatus::Joining, true), // b restarted
            vm("c", 1, NodeStatus::Leaving, true),
            vm("d", 1, NodeStatus::Up, false),
            vm("e", 1, NodeStatus::Joining, true),
            vm("f", 1, NodeStatus::Joining, false), // not live: not added yet
        ]);
        let mut down = HashMap::new();
        down.insert(MemberId::new("d", 1), now - Duration::from_secs(3));
        let c = desired_changes(&config, &v, &down, now, Duration::from_secs(10));
        let text: Vec<String> = c.iter().map(|c| c.to_string()).collect();
        assert_eq!(
            text,
            [
                "remove b#1 (restarted as generation 2)",
                "remove c#1 (it is leaving)",
                "add b#2 (127.0.0.1:1)",
                "add e#1 (127.0.0.1:1)"
            ]
        );
        // d is removed once it has been down for down_after.
        let later = now + Duration::from_secs(8);
        let c = desired_changes(&config, &v, &down, later, Duration::from_secs(10));
        assert!(
            c.iter()
                .any(|c| c.to_string().starts_with("remove d#1 (down for 11"))
        );
        assert_eq!(apply(&config, &c).describe(), "a#1, b#2, e#1");
    }

    #[test]
    fn other_lineages_and_protocols_are_not_added_and_the_last_member_stays() {
        let config = Configuration::genesis(0xab, cm("a", 1));
        let mut stranger = vm("x", 1, NodeStatus::Joining, true);
        stranger.lineage = Some("ff".into());
        let mut old = vm("y", 1, NodeStatus::Joining, true);
        old.protocol = Some(PROTOCOL_VERSION + 1);
        let mut ours = vm("z", 1, NodeStatus::Joining, true);
        ours.lineage = Some("ab".into());
        let v = view(vec![vm("a", 1, NodeStatus::Up, true), stranger, old, ours]);
        let c = desired_changes(
            &config,
            &v,
            &HashMap::new(),
            Instant::now(),
            Duration::from_secs(10),
        );
        assert_eq!(c, vec![Change::Add(cm("z", 1))]);
        let mut down = HashMap::new();
        down.insert(
            MemberId::new("a", 1),
            Instant::now() - Duration::from_secs(60),
        );
        let v = view(vec![vm("a", 1, NodeStatus::Up, false)]);
        assert!(
            desired_changes(&config, &v, &down, Instant::now(), Duration::from_secs(10)).is_empty()
        );
    }
}
