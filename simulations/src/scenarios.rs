//! The scenarios `shoal-sim` knows. Each is a small function; [`all`] lists them.

use std::time::Duration;

use shoal_transport::NodeRng;

use crate::net::LinkFaults;
use crate::scenario::{Action, Params, Scenario, Schedule, Step, between, pick, secs, split};

/// Every scenario, in the order `shoal-sim list` shows them.
pub fn all() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "steady",
            about: "no faults at all for 10 minutes: no live node may ever be reported failed",
            default_nodes: 5,
            default_duration: Duration::from_secs(600),
            asks_never_fail: false,
            plan: steady,
        },
        Scenario {
            name: "join",
            about: "nodes join one at a time, every 5-10 s",
            default_nodes: 5,
            default_duration: Duration::from_secs(90),
            asks_never_fail: false,
            plan: join,
        },
        Scenario {
            name: "partition-halves",
            about: "the cluster splits in two halves, then heals; twice",
            default_nodes: 6,
            default_duration: Duration::from_secs(120),
            asks_never_fail: false,
            plan: partition_halves,
        },
        Scenario {
            name: "partition-majority",
            about: "a majority and a minority (3|2 for 5 nodes) lose each other, then heal",
            default_nodes: 5,
            default_duration: Duration::from_secs(120),
            asks_never_fail: false,
            plan: partition_majority,
        },
        Scenario {
            name: "bridge",
            about: "two sides cut apart except for one node that still sees both",
            default_nodes: 5,
            default_duration: Duration::from_secs(120),
            asks_never_fail: false,
            plan: bridge,
        },
        Scenario {
            name: "one-way",
            about: "one side can send to the other but not hear back",
            default_nodes: 5,
            default_duration: Duration::from_secs(120),
            asks_never_fail: false,
            plan: one_way,
        },
        Scenario {
            name: "flaky-network",
            about: "bursts of loss (10-30%), duplication, reordering and latency spikes",
            default_nodes: 5,
            default_duration: Duration::from_secs(120),
            asks_never_fail: false,
            plan: flaky_network,
        },
        Scenario {
            name: "crash-restart",
            about: "a minority of nodes crash and restart as new generations, repeatedly",
            default_nodes: 5,
            default_duration: Duration::from_secs(150),
            asks_never_fail: false,
            plan: crash_restart,
        },
        Scenario {
            name: "crash-stop",
            about: "a minority of nodes crash and stay down until the heal: the rest remove them",
            default_nodes: 5,
            default_duration: Duration::from_secs(60),
            asks_never_fail: false,
            plan: crash_stop,
        },
        Scenario {
            name: "clock-skew",
            about: "node clocks hours apart; some restart with their clock stepped back",
            default_nodes: 5,
            default_duration: Duration::from_secs(120),
            asks_never_fail: false,
            plan: clock_skew,
        },
        Scenario {
            name: "chaos",
            about: "a random mix of all of the above and graceful leaves, drawn from the seed",
            default_nodes: 5,
            default_duration: Duration::from_secs(180),
            asks_never_fail: false,
            plan: chaos,
        },
        Scenario {
            name: "rolling-restart",
            about: "every node in turn leaves gracefully and comes back, under load: no ask may fail",
            default_nodes: 5,
            default_duration: Duration::from_secs(200),
            asks_never_fail: true,
            plan: rolling_restart,
        },
        Scenario {
            name: "restart-mid-handoff",
            about: "a node joins; once shards move, it or an old owner crashes, then restarts",
            default_nodes: 5,
            default_duration: Duration::from_secs(150),
            asks_never_fail: false,
            plan: restart_mid_handoff,
        },
    ]
}

/// Looks a scenario up by name.
pub fn find(name: &str) -> Option<Scenario> {
    all().into_iter().find(|s| s.name == name)
}

fn steady(p: &Params, _rng: &NodeRng) -> Vec<Step> {
    Schedule::new().start_all(p.nodes).build()
}

fn join(p: &Params, rng: &NodeRng) -> Vec<Step> {
    let mut s = Schedule::new();
    let mut t = Duration::ZERO;
    for i in 0..p.nodes {
        s.at(t, Action::Start(i));
        t += between(rng, 5.0, 10.0);
    }
    s.build()
}

/// Two partition episodes of the given groups within the run.
fn episodes(p: &Params, rng: &NodeRng, groups: impl Fn(&NodeRng) -> Action) -> Vec<Step> {
    let mut s = Schedule::new();
    s.start_all(p.nodes);
    let d = p.duration.as_secs_f64();
    let first = between(rng, d * 0.1, d * 0.2);
    let heal = first + between(rng, d * 0.15, d * 0.3);
    let second = heal + between(rng, d * 0.1, d * 0.15);
    let heal2 = second + between(rng, d * 0.1, d * 0.2);
    s.at(first, groups(rng))
        .at(heal, Action::Heal)
        .at(second, groups(rng))
        .at(heal2, Action::Heal);
    s.build()
}

fn partition_halves(p: &Params, rng: &NodeRng) -> Vec<Step> {
    let n = p.nodes;
    episodes(p, rng, |rng| {
        let (a, b) = split(rng, n, n / 2);
        Action::Partition(vec![a, b])
    })
}

fn partition_majority(p: &Params, rng: &NodeRng) -> Vec<Step> {
    let n = p.nodes;
    episodes(p, rng, |rng| {
        let (minority, majority) = split(rng, n, n - (n / 2 + 1));
        Action::Partition(vec![majority, minority])
    })
}

fn bridge(p: &Params, rng: &NodeRng) -> Vec<Step> {
    let n = p.nodes;
    episodes(p, rng, |rng| {
        let bridge = rng.below(n as u64) as usize;
        let others: Vec<usize> = (0..n).filter(|&i| i != bridge).collect();
        let (a, b) = others.split_at(others.len() / 2);
        Action::Partition(vec![a.to_vec(), b.to_vec()])
    })
}

fn one_way(p: &Params, rng: &NodeRng) -> Vec<Step> {
    let n = p.nodes;
    episodes(p, rng, |rng| {
        let (from, to) = split(rng, n, n / 2);
        Action::OneWay { from, to }
    })
}

fn flaky(rng: &NodeRng) -> LinkFaults {
    LinkFaults {
        loss: 0.1 + rng.below(200) as f64 / 1000.0,
        duplicate: 0.05,
        reorder: 0.2,
        spike: 0.02,
        ..LinkFaults::default()
    }
}

fn flaky_network(p: &Params, rng: &NodeRng) -> Vec<Step> {
    let mut s = Schedule::new();
    s.start_all(p.nodes);
    let mut t = between(rng, 10.0, 20.0);
    while t < p.duration {
        s.at(t, Action::Network(flaky(rng)));
        t += between(rng, 5.0, 20.0);
        s.at(t, Action::Heal);
        t += between(rng, 5.0, 15.0);
    }
    s.build()
}

fn crash_restart(p: &Params, rng: &NodeRng) -> Vec<Step> {
    let mut s = Schedule::new();
    s.start_all(p.nodes);
    let minority = (p.nodes - 1) / 2;
    let mut t = between(rng, 15.0, 25.0);
    while t + secs(10.0) < p.duration {
        let victims = pick(rng, p.nodes, 1 + rng.below(minority.max(1) as u64) as usize);
        for &v in &victims {
            s.at(t, Action::Crash(v));
        }
        let back = t + between(rng, 5.0, 25.0);
        for &v in &victims {
            s.at(back, Action::Start(v));
        }
        t = back + between(rng, 10.0, 20.0);
    }
    s.build()
}

fn crash_stop(p: &Params, rng: &NodeRng) -> Vec<Step> {
    let mut s = Schedule::new();
    s.start_all(p.nodes);
    let minority = (p.nodes - 1) / 2;
    let victims = pick(rng, p.nodes, 1 + rng.below(minority.max(1) as u64) as usize);
    let at = between(rng, 15.0, 25.0);
    for v in victims {
        s.at(at, Action::Crash(v));
    }
    s.build()
}

fn clock_skew(p: &Params, rng: &NodeRng) -> Vec<Step> {
    let mut s = Schedule::new();
    // Offsets first (the schedule keeps insertion order for equal times), up to ±2 h.
    for i in 0..p.nodes {
        let ms = rng.below(4 * 3_600_000) as i64 - 2 * 3_600_000;
        s.at(Duration::ZERO, Action::ClockOffset { node: i, ms });
    }
    s.start_all(p.nodes);
    let mut t = between(rng, 15.0, 25.0);
    while t + secs(15.0) < p.duration {
        // A node's clock steps back by up to 10 minutes and it restarts: its new generation
        // may be smaller than the old one.
        let v = rng.below(p.nodes as u64) as usize;
        let back = rng.below(600_000) as i64;
        s.at(t, Action::Crash(v))
            .at(
                t,
                Action::ClockOffset {
                    node: v,
                    ms: -(back + 3_600_000),
                },
            )
            .at(t + secs(2.0), Action::Start(v));
        t += between(rng, 15.0, 30.0);
    }
    s.build()
}

fn chaos(p: &Params, rng: &NodeRng) -> Vec<Step> {
    let n = p.nodes;
    let mut s = Schedule::new();
    s.start_all(n);
    let minority = (n - 1) / 2;
    let mut down: Vec<usize> = Vec::new();
    let mut t = between(rng, 5.0, 15.0);
    while t < p.duration {
        match rng.below(10) {
            0 => {
                let (a, b) = split(rng, n, n / 2);
                s.at(t, Action::Partition(vec![a, b]));
            }
            1 => {
                let (a, b) = split(rng, n, n - (n / 2 + 1));
                s.at(t, Action::Partition(vec![b, a]));
            }
            2 => {
                let (from, to) = split(rng, n, n / 2);
                s.at(t, Action::OneWay { from, to });
            }
            3 => {
                s.at(t, Action::Network(flaky(rng)));
            }
            4 if down.len() < minority => {
                let up: Vec<usize> = (0..n).filter(|i| !down.contains(i)).collect();
                let v = up[rng.below(up.len() as u64) as usize];
                s.at(t, Action::Crash(v));
                down.push(v);
            }
            5 if !down.is_empty() => {
                let v = down.remove(rng.below(down.len() as u64) as usize);
                s.at(t, Action::Start(v));
            }
            6 => {
                let node = rng.below(n as u64) as usize;
                s.at(t, Action::Clog { node, on: true })
                    .at(t + between(rng, 1.0, 8.0), Action::Clog { node, on: false });
            }
            7 => {
                let node = rng.below(n as u64) as usize;
                let ms = rng.below(2 * 3_600_000) as i64 - 3_600_000;
                s.at(t, Action::ClockOffset { node, ms });
            }
            8 if down.len() < minority => {
                // A graceful leave, and a return once the leave is long over.
                let up: Vec<usize> = (0..n).filter(|i| !down.contains(i)).collect();
                let v = up[rng.below(up.len() as u64) as usize];
                s.at(t, Action::Leave(v));
                down.push(v);
                t += between(rng, 8.0, 15.0);
                s.at(t, Action::Start(v));
                down.retain(|&d| d != v);
            }
            _ => {
                s.at(t, Action::Heal);
            }
        }
        t += between(rng, 3.0, 12.0);
    }
    s.build()
}

fn rolling_restart(p: &Params, rng: &NodeRng) -> Vec<Step> {
    let mut s = Schedule::new();
    s.start_all(p.nodes);
    let mut t = between(rng, 15.0, 20.0);
    for i in 0..p.nodes {
        s.at(t, Action::Leave(i));
        // Back once the leave is over and its removal committed; the next node goes once the
        // shards have settled again.
        t += between(rng, 8.0, 12.0);
        s.at(t, Action::Start(i));
        t += between(rng, 15.0, 20.0);
    }
    s.build()
}

fn restart_mid_handoff(p: &Params, rng: &NodeRng) -> Vec<Step> {
    let n = p.nodes;
    let mut s = Schedule::new();
    // All but the last node form the cluster; the last one joins, repeatedly.
    for i in 0..n - 1 {
        s.at(Duration::ZERO, Action::Start(i));
    }
    let joiner = n - 1;
    let mut t = between(rng, 10.0, 15.0);
    let mut first = true;
    while t + secs(30.0) < p.duration {
        if first {
            s.at(t, Action::Start(joiner));
            first = false;
        }
        // The join commits about a second after the start; the crash waits for shards to move.
        let mid = t + secs(0.2);
        let victim = if rng.below(2) == 0 {
            joiner
        } else {
            rng.below((n - 1) as u64) as usize
        };
        let back = between(rng, 3.0, 10.0);
        s.at(
            mid,
            Action::CrashMidHandoff {
                node: victim,
                after: between(rng, 0.0, 0.03),
                back,
            },
        );
        // The crash comes within 10 s, the restart `back` after it.
        t = mid + secs(10.0) + back + between(rng, 10.0, 20.0);
        // The joiner leaves and joins again: the next round moves shards to it once more.
        s.at(t, Action::Leave(joiner));
        t += between(rng, 8.0, 12.0);
        s.at(t, Action::Start(joiner));
    }
    s.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(name: &str) -> (Scenario, Params) {
        let s = find(name).unwrap();
        let p = Params {
            nodes: s.default_nodes,
            duration: s.default_duration,
            gossip_interval: Duration::from_millis(500),
        };
        (s, p)
    }

    #[test]
    fn plans_are_a_function_of_the_seed() {
        for s in all() {
            let (s, p) = params(s.name);
            let a = (s.plan)(&p, &NodeRng::seeded(9));
            let b = (s.plan)(&p, &NodeRng::seeded(9));
            assert_eq!(a, b, "{}", s.name);
            assert!(
                a.windows(2).all(|w| w[0].at <= w[1].at),
                "{} is sorted",
                s.name
            );
            for step in &a {
                if let Action::Start(i)
                | Action::Crash(i)
                | Action::CrashMidHandoff { node: i, .. }
                | Action::Leave(i) = step.action
                {
                    assert!(i < p.nodes, "{}: {step:?}", s.name);
                }
            }
        }
    }

    #[test]
    fn crashes_never_take_a_majority_down() {
        for seed in 0..50 {
            for name in ["crash-restart", "crash-stop", "chaos"] {
                let (s, p) = params(name);
                let mut down = std::collections::BTreeSet::new();
                for step in (s.plan)(&p, &NodeRng::seeded(seed)) {
                    match step.action {
                        Action::Crash(i)
                        | Action::CrashMidHandoff { node: i, .. }
                        | Action::Leave(i) => {
                            down.insert(i);
                        }
                        Action::Start(i) => {
                            down.remove(&i);
                        }
                        _ => {}
                    }
                    assert!(
                        down.len() <= (p.nodes - 1) / 2,
                        "{name} seed {seed}: {down:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn partition_majority_splits_three_two() {
        let (s, p) = params("partition-majority");
        let plan = (s.plan)(&p, &NodeRng::seeded(1));
        let Some(Action::Partition(groups)) = plan
            .iter()
            .map(|s| s.action.clone())
            .find(|a| matches!(a, Action::Partition(_)))
        else {
            panic!("no partition in {plan:?}");
        };
        assert_eq!(groups.iter().map(Vec::len).collect::<Vec<_>>(), [3, 2]);
    }
}
