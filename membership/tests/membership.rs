//! Membership in one process over real QUIC on loopback, with a short gossip interval.
//! Every wait is for a condition (a view or an event), bounded by a deadline.

use std::sync::Arc;
use std::time::Duration;

use shoal_membership::{
    MemCell, Membership, MembershipConfig, MembershipEvent, MembershipView, NodeStatus,
};
use shoal_transport::{
    ClusterCa, Environment, NodeIdentity, NodeRng, SystemClock, Transport, TransportConfig,
    UdpSockets,
};
use tokio::sync::broadcast;
use tokio::time::timeout;

const GOSSIP: Duration = Duration::from_millis(100);
const DEADLINE: Duration = Duration::from_secs(20);

struct TestNode {
    name: String,
    transport: Transport,
    membership: Membership,
}

async fn start(ca: &ClusterCa, name: &str, cluster: &str, seeds: &[&TestNode]) -> TestNode {
    let seeds = seeds
        .iter()
        .map(|n| n.transport.local_addr().to_string())
        .collect();
    start_with_seeds(ca, name, cluster, seeds).await
}

async fn start_with_seeds(
    ca: &ClusterCa,
    name: &str,
    cluster: &str,
    seeds: Vec<String>,
) -> TestNode {
    start_full(ca, name, cluster, seeds, false).await
}

/// `bootstrap`: found a new cluster even though seeds are given.
async fn start_full(
    ca: &ClusterCa,
    name: &str,
    cluster: &str,
    seeds: Vec<String>,
    bootstrap: bool,
) -> TestNode {
    start_shards(ca, name, cluster, seeds, bootstrap, 1024).await
}

async fn start_shards(
    ca: &ClusterCa,
    name: &str,
    cluster: &str,
    seeds: Vec<String>,
    bootstrap: bool,
    shards: u32,
) -> TestNode {
    let cert = ca.issue(name).unwrap();
    let identity =
        NodeIdentity::from_pem(ca.cert_pem(), &cert.cert_pem, &cert.key_pem, &SystemClock).unwrap();
    let env = Environment {
        sockets: Arc::new(UdpSockets),
        clock: Arc::new(SystemClock),
        rng: NodeRng::from_os(),
    };
    let transport = Transport::bind(
        TransportConfig::new("127.0.0.1:0".parse().unwrap()),
        identity,
        env.clone(),
    )
    .await
    .unwrap();
    let mut config = MembershipConfig::new(cluster, name, transport.local_addr());
    config.gossip_interval = GOSSIP;
    config.leave_grace = GOSSIP * 6;
    config.seeds = seeds;
    config.bootstrap = bootstrap;
    config.placement.shards = shards;
    config.down_after = Duration::from_secs(1);
    let membership = Membership::start(config, &transport, &env, Arc::new(MemCell::new()))
        .await
        .unwrap();
    TestNode {
        name: name.to_string(),
        transport,
        membership,
    }
}

async fn wait_view(node: &TestNode, what: &str, pred: impl Fn(&MembershipView) -> bool) {
    let mut rx = node.membership.watch();
    let outcome = timeout(DEADLINE, rx.wait_for(|v| pred(v))).await;
    assert!(
        matches!(outcome, Ok(Ok(_))),
        "{}: timed out waiting for {what}; view: {:#?}",
        node.name,
        node.membership.view()
    );
}

async fn wait_event(
    observer: &str,
    rx: &mut broadcast::Receiver<MembershipEvent>,
    what: &str,
    pred: impl Fn(&MembershipEvent) -> bool,
) -> MembershipEvent {
    timeout(DEADLINE, async {
        loop {
            let e = rx.recv().await.unwrap();
            if pred(&e) {
                return e;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{observer}: no {what} event within {DEADLINE:?}"))
}

/// Starts n nodes seeded through the first and waits until all see all `up`.
async fn cluster(ca: &ClusterCa, n: usize) -> Vec<TestNode> {
    let first = start(ca, "n1", "test", &[]).await;
    let mut nodes = vec![first];
    for i in 2..=n {
        let node = start(ca, &format!("n{i}"), "test", &[&nodes[0]]).await;
        nodes.push(node);
    }
    for node in &nodes {
        wait_view(node, &format!("{n} live members up"), |v| {
            v.up_names().len() == n
        })
        .await;
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_converge() {
    let ca = ClusterCa::generate("test").unwrap();
    let nodes = cluster(&ca, 5).await;
    let names: Vec<String> = (1..=5).map(|i| format!("n{i}")).collect();
    for node in &nodes {
        let view = node.membership.view();
        let seen: Vec<&str> = view.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(seen, names, "{} sees everyone, sorted by name", node.name);
        for m in &view.members {
            assert!(m.live && m.status == NodeStatus::Up, "{}: {m:?}", node.name);
            assert_eq!(m.protocol, Some(shoal_membership::PROTOCOL_VERSION));
        }
        assert_eq!(view.self_name, node.name);
        let config = view
            .configuration
            .as_ref()
            .expect("a committed configuration");
        let names: Vec<&str> = config.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["n1", "n2", "n3", "n4", "n5"]);
        assert!(config.in_majority);
    }
    let epochs: Vec<u64> = nodes.iter().map(|n| n.membership.view().epoch()).collect();
    assert!(
        epochs.iter().all(|e| *e == epochs[0] && *e >= 2),
        "{epochs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_reported_failed_by_all_others() {
    let ca = ClusterCa::generate("test").unwrap();
    let mut nodes = cluster(&ca, 4).await;
    let mut subs: Vec<_> = nodes[..3]
        .iter()
        .map(|n| (n.name.clone(), n.membership.subscribe()))
        .collect();
    // Kill n4: gossip stops at once, nothing is announced.
    let victim = nodes.pop().unwrap();
    victim.membership.shutdown().await;
    drop(victim);
    for (observer, rx) in &mut subs {
        // Joined/Up of n4 may still be in flight from convergence; skip those.
        let e = wait_event(observer, rx, "Failed(n4)", |e| {
            e.member().name == "n4"
                && !matches!(
                    e,
                    MembershipEvent::Joined { .. } | MembershipEvent::Up { .. }
                )
        })
        .await;
        assert!(
            matches!(e, MembershipEvent::Failed { .. }),
            "{observer}: first event about n4 must be Failed, got {e:?}"
        );
    }
    for node in &nodes {
        let v = node.membership.view();
        assert!(!v.member("n4").unwrap().live);
        assert_eq!(v.up_names().len(), 3);
    }
    // After down_after (1 s here) the survivors commit its removal.
    for node in &nodes {
        wait_view(node, "n4 removed from the configuration", |v| {
            v.configuration
                .as_ref()
                .is_some_and(|c| c.members.len() == 3 && c.members.iter().all(|m| m.name != "n4"))
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_leave_is_reported_as_leaving_then_left() {
    let ca = ClusterCa::generate("test").unwrap();
    let nodes = cluster(&ca, 4).await;
    let mut subs: Vec<_> = nodes[..3]
        .iter()
        .map(|n| (n.name.clone(), n.membership.subscribe()))
        .collect();
    nodes[3].membership.leave().await;
    for (observer, rx) in &mut subs {
        let first = wait_event(observer, rx, "event about n4", |e| {
            e.member().name == "n4"
                && !matches!(
                    e,
                    MembershipEvent::Joined { .. } | MembershipEvent::Up { .. }
                )
        })
        .await;
        assert!(
            matches!(first, MembershipEvent::Leaving { .. }),
            "{observer}: expected Leaving first, got {first:?}"
        );
        let second = wait_event(observer, rx, "Left(n4)", |e| e.member().name == "n4").await;
        assert!(
            matches!(second, MembershipEvent::Left { .. }),
            "{observer}: expected Left after Leaving, got {second:?}"
        );
    }
    // The leave was committed: n4 is out of the configuration.
    for node in &nodes[..3] {
        let c = node.membership.view().configuration.unwrap();
        assert!(c.members.iter().all(|m| m.name != "n4"), "{c:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_rejoins_with_a_new_generation() {
    let ca = ClusterCa::generate("test").unwrap();
    let mut nodes = cluster(&ca, 3).await;
    let mut rx = nodes[0].membership.subscribe();
    let old = nodes.pop().unwrap();
    let old_generation = old.membership.generation();
    old.membership.shutdown().await;
    old.transport.shutdown().await;
    drop(old);
    let new = start(&ca, "n3", "test", &[&nodes[0]]).await;
    let e = wait_event("n1", &mut rx, "Rejoined(n3)", |e| {
        matches!(e, MembershipEvent::Rejoined { .. })
    })
    .await;
    let MembershipEvent::Rejoined {
        member,
        previous_generation,
    } = e
    else {
        unreachable!()
    };
    assert_eq!(member.name, "n3");
    assert_eq!(previous_generation, old_generation);
    assert!(member.generation > old_generation);
    assert_eq!(member.generation, new.membership.generation());
    // The new incarnation replaces the old one in the configuration.
    let generation = new.membership.generation();
    for node in nodes.iter().chain([&new]) {
        wait_view(node, "n3's new generation in the configuration", |v| {
            v.configuration.as_ref().is_some_and(|c| {
                c.members.len() == 3
                    && c.members
                        .iter()
                        .any(|m| m.name == "n3" && m.generation == generation)
            })
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_of_another_cluster_are_never_merged() {
    let ca = ClusterCa::generate("test").unwrap();
    let nodes = cluster(&ca, 3).await;
    // Two nodes of cluster "other", both seeded with n1 (same CA: TLS lets them in, the
    // cluster id keeps them out).
    let x = start_full(
        &ca,
        "x1",
        "other",
        vec![nodes[0].transport.local_addr().to_string()],
        true,
    )
    .await;
    let y = start(&ca, "y1", "other", &[&nodes[0], &x]).await;
    // Once x and y have found each other they have gossiped with n1 for several rounds too.
    wait_view(&x, "x and y up together", |v| v.up_names().len() == 2).await;
    wait_view(&y, "x and y up together", |v| v.up_names().len() == 2).await;
    for node in &nodes {
        let v = node.membership.view();
        assert!(
            v.members
                .iter()
                .all(|m| !m.name.starts_with('x') && !m.name.starts_with('y')),
            "{} merged a foreign node: {v:#?}",
            node.name
        );
    }
    let v = x.membership.view();
    assert!(
        v.members.iter().all(|m| !m.name.starts_with('n')),
        "x1 merged the test cluster: {v:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_given_as_host_and_port_is_resolved() {
    let ca = ClusterCa::generate("test").unwrap();
    let n1 = start(&ca, "n1", "test", &[]).await;
    let port = n1.transport.local_addr().port();
    let n2 = start_with_seeds(&ca, "n2", "test", vec![format!("localhost:{port}")]).await;
    for node in [&n1, &n2] {
        wait_view(node, "2 members up", |v| v.up_names().len() == 2).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_seed_does_not_stall_gossip_to_the_others() {
    let ca = ClusterCa::generate("test").unwrap();
    // A bound UDP socket that never answers: dials to it hang until their timeout.
    let blackhole = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead = blackhole.local_addr().unwrap().to_string();
    let n1 = start_full(&ca, "n1", "test", vec![dead.clone()], true).await;
    let live = n1.transport.local_addr().to_string();
    let mut nodes = vec![n1];
    for i in 2..=4 {
        // The dead seed first: chitchat sends to it in the same loop as to the live one.
        nodes.push(
            start_with_seeds(
                &ca,
                &format!("n{i}"),
                "test",
                vec![dead.clone(), live.clone()],
            )
            .await,
        );
    }
    let started = tokio::time::Instant::now();
    for node in &nodes {
        wait_view(node, "4 members up", |v| v.up_names().len() == 4).await;
    }
    // Each dial to the blackhole takes the 5 s connect timeout; convergence must not wait
    // for it.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "converged only after {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_shard_count_is_never_added() {
    let ca = ClusterCa::generate("test").unwrap();
    let nodes = cluster(&ca, 2).await;
    let seed = nodes[0].transport.local_addr().to_string();
    let odd = start_shards(&ca, "odd", "test", vec![seed.clone()], false, 512).await;
    let fine = start_shards(&ca, "fine", "test", vec![seed], false, 1024).await;
    // Once the compatible newcomer is in, the odd one has been seen (and skipped) too.
    wait_view(&nodes[0], "fine added", |v| {
        v.configuration
            .as_ref()
            .is_some_and(|c| c.members.iter().any(|m| m.name == "fine"))
            && v.member("odd").is_some_and(|m| m.live)
    })
    .await;
    let c = nodes[0].membership.view().configuration.unwrap();
    assert!(c.members.iter().all(|m| m.name != "odd"), "{c:?}");
    assert_eq!(
        odd.membership.view().member("odd").unwrap().status,
        NodeStatus::Joining
    );
    drop(fine);
}
