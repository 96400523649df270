//! Entities across three in-process nodes over real QUIC on loopback: tell and ask from every
//! node to entities on every node, entity-to-entity calls, the reentrancy error, typed errors.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal::entity::builtin::{Counter, CounterCommand, Kv, KvCommand, KvReply};
use shoal::entity::{AskError, Context, Entity, Rejection};
use shoal::transport::ClusterCa;
use shoal::{Node, NodeBuilder, loopback};
use tokio::time::{Instant, timeout};

const DEADLINE: Duration = Duration::from_secs(30);

/// Asks a counter for its value and adds one: an entity calling another.
struct Relay;

impl Entity for Relay {
    const KIND: &'static str = "relay";
    type State = u32;
    type Command = String;
    type Reply = i64;

    async fn handle(
        &self,
        ctx: &mut Context,
        calls: &mut u32,
        counter: String,
    ) -> Result<i64, Rejection> {
        *calls += 1;
        let v = ctx
            .ask::<Counter>(&counter, CounterCommand::Add(10))
            .await?;
        Ok(v + 1)
    }
}

/// Asks the `Ping` named in the command, which may ask back: cycles must be refused.
struct Ping;

#[derive(Serialize, Deserialize)]
struct PingCmd {
    /// Who to ask next (empty: answer).
    next: Vec<String>,
}

impl Entity for Ping {
    const KIND: &'static str = "ping";
    type State = ();
    type Command = PingCmd;
    type Reply = String;

    async fn handle(
        &self,
        ctx: &mut Context,
        _: &mut (),
        mut cmd: PingCmd,
    ) -> Result<String, Rejection> {
        if cmd.next.is_empty() {
            return Ok(format!("pong from {}", ctx.me().id));
        }
        let next = cmd.next.remove(0);
        match ctx.ask::<Ping>(&next, cmd).await {
            Ok(r) => Ok(r),
            Err(e) => Err(Rejection::new(e.to_string())),
        }
    }
}

/// Registered on one node only.
struct OnlyHere;

impl Entity for OnlyHere {
    const KIND: &'static str = "only-here";
    type State = ();
    type Command = ();
    type Reply = ();

    async fn handle(&self, _: &mut Context, _: &mut (), _: ()) -> Result<(), Rejection> {
        Ok(())
    }
}

async fn start(ca: &ClusterCa, name: &str, seeds: &[&Node], only_here: bool) -> Node {
    let mut config = loopback::config(name, seeds);
    config.gossip_interval = Duration::from_millis(100);
    config.shards = 64;
    let mut b = NodeBuilder::new(config).register(Relay).register(Ping);
    if only_here {
        b = b.register(OnlyHere);
    }
    loopback::start(b, ca).await.unwrap()
}

/// Three nodes, all members of one configuration and serving their shards.
async fn cluster(ca: &ClusterCa) -> Vec<Node> {
    let n1 = start(ca, "n1", &[], true).await;
    let n2 = start(ca, "n2", &[&n1], false).await;
    let n3 = start(ca, "n3", &[&n1], false).await;
    let nodes = vec![n1, n2, n3];
    timeout(DEADLINE, async {
        loop {
            let ready = nodes.iter().all(|n| {
                let v = n.view();
                v.configuration
                    .as_ref()
                    .is_some_and(|c| c.members.len() == 3)
                    && n.entities().epoch() == v.epoch()
            });
            let serving: usize = nodes.iter().map(|n| n.entities().serving().len()).sum();
            if ready && serving == 64 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("three nodes serving all 64 shards");
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_and_tell_from_every_node_reach_entities_on_every_node() {
    let ca = ClusterCa::generate("test").unwrap();
    let nodes = cluster(&ca).await;
    // 60 counters spread over the 64 shards, hence over all three nodes.
    let ids: Vec<String> = (0..60).map(|i| format!("c{i}")).collect();
    for (i, node) in nodes.iter().enumerate() {
        for id in &ids {
            let v = node
                .ask::<Counter>(id, CounterCommand::Add(1))
                .await
                .unwrap();
            assert_eq!(v, i as i64 + 1, "{id} through {}", node.name());
        }
    }
    let owners: std::collections::BTreeSet<String> = ids
        .iter()
        .map(|id| {
            let (_, t) = nodes[0].entities().table().unwrap();
            let s = shoal::sharding::shard_of("counter", id.as_bytes(), 64);
            t.primary(s).unwrap().to_string()
        })
        .collect();
    assert_eq!(owners.len(), 3, "entities live on every node");

    // Tells arrive (at most once, and on a healthy cluster, once): to running actors (the
    // counters above) and to entities no actor runs for yet (`fresh`).
    let fresh: Vec<String> = (0..60).map(|i| format!("t{i}")).collect();
    for node in &nodes {
        for id in &ids {
            node.tell::<Counter>(id, CounterCommand::Add(100));
        }
        for id in &fresh {
            node.tell::<Counter>(id, CounterCommand::Add(5));
        }
    }
    timeout(DEADLINE, async {
        loop {
            let mut all = true;
            for id in &ids {
                all &= nodes[1]
                    .ask::<Counter>(id, CounterCommand::Get)
                    .await
                    .unwrap()
                    == 303;
            }
            for id in &fresh {
                all &= nodes[2]
                    .ask::<Counter>(id, CounterCommand::Get)
                    .await
                    .unwrap()
                    == 15;
            }
            if all {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("every tell was handled");

    // Tells whose command is bigger than the sender's stack buffer for encoding (256
    // bytes), from every node.
    let big = format!("\"{}\"", "x".repeat(1000));
    let big_ids: Vec<String> = (0..30).map(|i| format!("big{i}")).collect();
    for (i, id) in big_ids.iter().enumerate() {
        nodes[i % 3].tell::<Kv>(id, KvCommand::Put(big.clone()));
    }
    timeout(DEADLINE, async {
        loop {
            let mut all = true;
            for id in &big_ids {
                all &= nodes[0].ask::<Kv>(id, KvCommand::Get).await.unwrap()
                    == KvReply::Value(Some(big.clone()));
            }
            if all {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("every big tell was handled");

    // kv through different nodes.
    let put = nodes[0]
        .ask::<Kv>("k", KvCommand::Put("{\"a\":1}".into()))
        .await
        .unwrap();
    assert_eq!(put, KvReply::Value(Some("{\"a\":1}".into())));
    assert_eq!(
        nodes[2].ask::<Kv>("k", KvCommand::Get).await.unwrap(),
        KvReply::Value(Some("{\"a\":1}".into()))
    );
    let cas = nodes[1]
        .ask::<Kv>(
            "k",
            KvCommand::Cas {
                expected: Some("{ \"a\": 1 }".into()),
                new: "2".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(cas, KvReply::Value(Some("2".into())));
    let cas = nodes[1]
        .ask::<Kv>(
            "k",
            KvCommand::Cas {
                expected: None,
                new: "3".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(cas, KvReply::CasFailed(Some("2".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entities_call_entities_and_cycles_are_refused_not_hung() {
    let ca = ClusterCa::generate("test").unwrap();
    let nodes = cluster(&ca).await;
    for (i, node) in nodes.iter().enumerate() {
        let r = node
            .ask::<Relay>(&format!("r{i}"), format!("target{i}"))
            .await
            .unwrap();
        assert_eq!(r, 11, "relay asked the counter and added one");
    }
    // A chain without a cycle works across nodes.
    let r = nodes[0]
        .ask::<Ping>(
            "a",
            PingCmd {
                next: vec!["b".into(), "c".into()],
            },
        )
        .await
        .unwrap();
    assert_eq!(r, "pong from c");
    // a -> b -> a: refused at once with a reason, wherever a and b live.
    let started = Instant::now();
    let err = nodes[1]
        .ask::<Ping>(
            "a",
            PingCmd {
                next: vec!["b".into(), "a".into()],
            },
        )
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused, not timed out"
    );
    assert!(
        matches!(&err, AskError::Rejected(why) if why.contains("reentrant ask")),
        "{err:?}"
    );
    // Asking itself directly.
    let err = nodes[2]
        .ask::<Ping>(
            "solo",
            PingCmd {
                next: vec!["solo".into()],
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AskError::Rejected(why) if why.contains("reentrant ask")),
        "{err:?}"
    );
    // The entities are still usable afterwards.
    let r = nodes[0]
        .ask::<Ping>("a", PingCmd { next: vec![] })
        .await
        .unwrap();
    assert_eq!(r, "pong from a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_errors_for_unknown_kinds_rejections_and_unreachable_owners() {
    let ca = ClusterCa::generate("test").unwrap();
    let nodes = cluster(&ca).await;
    let (_, table) = nodes[0].entities().table().unwrap();
    // An id of kind only-here owned by another node than n1: that node does not know it.
    let foreign = (0..1000)
        .map(|i| format!("x{i}"))
        .find(|id| {
            table.primary(shoal::sharding::shard_of("only-here", id.as_bytes(), 64)) != Some("n1")
        })
        .unwrap();
    let err = nodes[0].ask::<OnlyHere>(&foreign, ()).await.unwrap_err();
    assert!(
        matches!(err, AskError::UnknownKind(ref k) if k == "only-here"),
        "{err:?}"
    );
    // A handler's refusal.
    let err = nodes[0]
        .ask::<Kv>("bad", KvCommand::Put("not json".into()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, AskError::Rejected(ref why) if why.contains("not JSON")),
        "{err:?}"
    );
    let err = nodes[0]
        .ask::<Counter>("big", CounterCommand::Add(i64::MAX))
        .await
        .and(nodes[0].ask::<Counter>("big", CounterCommand::Add(1)).await)
        .unwrap_err();
    assert!(
        matches!(err, AskError::Rejected(ref why) if why.contains("overflows")),
        "{err:?}"
    );

    // Stop n3 without a word; an ask to one of its entities fails within its timeout.
    let on_n3 = (0..1000)
        .map(|i| format!("y{i}"))
        .find(|id| {
            table.primary(shoal::sharding::shard_of("counter", id.as_bytes(), 64)) == Some("n3")
        })
        .unwrap();
    nodes[2].stop().await;
    let started = Instant::now();
    let err = nodes[0]
        .ask_timeout::<Counter>(&on_n3, CounterCommand::Get, Duration::from_secs(1))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1800),
        "failed within its timeout: {took:?}"
    );
    assert!(
        matches!(err, AskError::Timeout(_) | AskError::Unavailable(_)),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_least_recently_used_entities_are_passivated_and_keep_their_state() {
    let ca = ClusterCa::generate("test").unwrap();
    let mut config = loopback::config("solo", &[]);
    config.gossip_interval = Duration::from_millis(100);
    config.shards = 16;
    config.entities.idle_after = Duration::from_millis(300);
    config.entities.max_active = 10;
    let node = loopback::start(NodeBuilder::new(config), &ca)
        .await
        .unwrap();
    timeout(DEADLINE, async {
        while node.entities().serving().len() < 16 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    for i in 0..50 {
        node.ask::<Counter>(&format!("p{i}"), CounterCommand::Add(i))
            .await
            .unwrap();
    }
    // Over the limit: the least recently used go first, down to the limit...
    timeout(DEADLINE, async {
        while node.entities().active_entities() > 10 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("passivated down to the active limit");
    // ...and once idle, all of them.
    timeout(DEADLINE, async {
        while node.entities().active_entities() > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("idle entities passivated");
    // Reactivated from their stored state.
    for i in 0..50 {
        let v = node
            .ask::<Counter>(&format!("p{i}"), CounterCommand::Get)
            .await
            .unwrap();
        assert_eq!(v, i, "p{i} kept its state through passivation");
    }
    assert_eq!(node.entities().active_entities(), 50);
}
