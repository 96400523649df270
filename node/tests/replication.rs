//! Replication across in-process nodes over real QUIC on loopback, with in-memory replica
//! stores whose faults can be switched on: acknowledged writes survive the crash of a
//! primary, a full disk or a corrupt shard takes out only what it affects, with a clear
//! error; and the redb store on a really full filesystem fails cleanly.
//!
//! Multi-node coordination is awaited by polling with a deadline, never by fixed sleeps.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use shoal::entity::builtin::{Counter, CounterCommand, Kv, KvCommand, KvReply};
use shoal::entity::{AskError, EntityRef};
use shoal::membership::MemCell;
use shoal::sharding::{ShardId, shard_of};
use shoal::storage::{
    DiskStore, MemStore, Record, ReplicaStore, ShardMeta, StoreError, StoreFaults, Version, Write,
};
use shoal::transport::{ClusterCa, Environment};
use shoal::{Node, NodeBuilder, NodeConfig, loopback};
use tokio::time::Instant;

/// Bound on anything the cluster must get done (membership, recovery, an ask that retries).
const DEADLINE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A node's durable state, kept by the test so that it can inject faults and restart it.
#[derive(Clone, Default)]
struct Disk {
    cell: MemCell,
    store: Arc<MemStore>,
}

/// Fast gossip, fast removal of a crashed node, and short replica timeouts so that a dead
/// replica is given up quickly.
fn config(name: &str, seeds: &[&Node], shards: u32) -> NodeConfig {
    let mut c = loopback::config(name, seeds);
    c.gossip_interval = Duration::from_millis(100);
    c.down_after = Duration::from_secs(2);
    c.shards = shards;
    c.entities.replica_timeout = Duration::from_secs(1);
    c
}

async fn start(ca: &ClusterCa, config: NodeConfig, disk: &Disk) -> Node {
    try_start(ca, config, disk).await.unwrap()
}

async fn try_start(ca: &ClusterCa, config: NodeConfig, disk: &Disk) -> Result<Node, String> {
    if std::env::var_os("RUST_LOG").is_some() {
        shoal::logging::init(shoal::logging::LogFormat::Text, "info");
    }
    let identity = loopback::identity(ca, &config.name).map_err(|e| e.to_string())?;
    NodeBuilder::new(config)
        .start_with_storage(
            identity,
            Environment::real(),
            Arc::new(disk.cell.clone()),
            disk.store.clone(),
        )
        .await
        .map_err(|e| e.to_string())
}

/// Polls `check` every 50 ms until it returns `Some`, at most [`DEADLINE`].
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Like [`eventually`], with the reason the check last failed in the panic message.
async fn eventually_ok<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(why) => assert!(
                Instant::now() < deadline,
                "timed out waiting for: {what}: {why}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether every node in `nodes` uses a committed configuration of exactly `members`, and
/// together they serve all `shards` shards.
async fn wait_settled(what: &str, nodes: &[&Node]) {
    eventually(what, || async {
        loopback::all_serving(nodes).then_some(())
    })
    .await
}

/// Three nodes n1..n3 (R = 3), each on its own [`Disk`], all serving.
async fn three_nodes(ca: &ClusterCa, shards: u32) -> (Vec<Node>, Vec<Disk>) {
    let disks: Vec<Disk> = (0..3).map(|_| Disk::default()).collect();
    let n1 = start(ca, config("n1", &[], shards), &disks[0]).await;
    let n2 = start(ca, config("n2", &[&n1], shards), &disks[1]).await;
    let n3 = start(ca, config("n3", &[&n1], shards), &disks[2]).await;
    let nodes = vec![n1, n2, n3];
    let refs: Vec<&Node> = nodes.iter().collect();
    wait_settled("three nodes serving every shard", &refs).await;
    (nodes, disks)
}

/// The primary of `kind`/`id` in `node`'s current table.
fn primary_of(node: &Node, kind: &str, id: &str) -> String {
    let (_, table) = node.entities().table().expect("a shard table");
    let shards = node.config().shards;
    table
        .primary(shard_of(kind, id.as_bytes(), shards))
        .expect("a primary")
        .to_string()
}

/// Asks `through` until it answers (an error is retried: ownership may be settling), at most
/// [`DEADLINE`]. A reply is returned as is: a wrong value is not retried away.
async fn ask_until_ok<R, Fut>(what: &str, mut ask: impl FnMut() -> Fut) -> R
where
    Fut: Future<Output = Result<R, AskError>>,
{
    eventually_ok(what, || {
        let reply = ask();
        async move { reply.await.map_err(|e| format!("{e:?}")) }
    })
    .await
}

/// Every entity's version in `store`'s durable records of `shard`.
fn durable(store: &MemStore, shard: u32) -> BTreeMap<EntityRef, Version> {
    store
        .records(shard)
        .into_iter()
        .map(|(e, r)| (e, r.version))
        .collect()
}

/// `n` counter ids that cover every shard at least once (and some twice).
fn counters_on_every_shard(prefix: &str, shards: u32, per_shard: usize) -> Vec<String> {
    let mut count: BTreeMap<u32, usize> = BTreeMap::new();
    let mut ids = Vec::new();
    for i in 0.. {
        let id = format!("{prefix}{i}");
        let s = shard_of("counter", id.as_bytes(), shards).0;
        let c = count.entry(s).or_default();
        if *c < per_shard {
            *c += 1;
            ids.push(id);
        }
        if count.len() == shards as usize && count.values().all(|c| *c == per_shard) {
            return ids;
        }
    }
    unreachable!()
}

// ---------------------------------------------------------------------------------------
// 1. Crash of a primary
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_the_crash_of_a_primary() {
    const SHARDS: u32 = 32;
    let ca = ClusterCa::generate("test").unwrap();
    let (mut nodes, _disks) = three_nodes(&ca, SHARDS).await;

    // 50 puts and 50 counters (two adds each), through every node in turn. Every one was
    // acknowledged (the healthy cluster answers them all), so every one must survive.
    let mut kv: BTreeMap<String, String> = BTreeMap::new();
    let mut counters: BTreeMap<String, i64> = BTreeMap::new();
    for i in 0..50usize {
        let (a, b) = (&nodes[i % 3], &nodes[(i + 1) % 3]);
        let key = format!("k{i}");
        let value = format!("{{\"i\":{i},\"by\":\"{}\"}}", a.name());
        let reply = a
            .ask::<Kv>(&key, KvCommand::Put(value.clone()))
            .await
            .unwrap();
        assert_eq!(reply, KvReply::Value(Some(value.clone())), "put {key}");
        kv.insert(key, value);

        let id = format!("c{i}");
        let first = a
            .ask::<Counter>(&id, CounterCommand::Add(i as i64 + 1))
            .await
            .unwrap();
        assert_eq!(first, i as i64 + 1, "first add to {id}");
        let second = b.ask::<Counter>(&id, CounterCommand::Add(1)).await.unwrap();
        assert_eq!(second, i as i64 + 2, "second add to {id}");
        counters.insert(id, second);
    }

    // The victim: the node that is primary of the most written entities.
    let mut owned: BTreeMap<String, Vec<(&str, String)>> = BTreeMap::new();
    for k in kv.keys() {
        owned
            .entry(primary_of(&nodes[0], "kv", k))
            .or_default()
            .push(("kv", k.clone()));
    }
    for c in counters.keys() {
        owned
            .entry(primary_of(&nodes[0], "counter", c))
            .or_default()
            .push(("counter", c.clone()));
    }
    let (victim_name, victim_entities) = owned
        .iter()
        .max_by_key(|(_, e)| e.len())
        .map(|(n, e)| (n.clone(), e.clone()))
        .unwrap();
    assert!(
        victim_entities.iter().any(|(k, _)| *k == "kv")
            && victim_entities.iter().any(|(k, _)| *k == "counter"),
        "{victim_name} is primary of puts and counters: {victim_entities:?}"
    );
    let victim_shards: BTreeSet<ShardId> = victim_entities
        .iter()
        .map(|(kind, id)| shard_of(kind, id.as_bytes(), SHARDS))
        .collect();

    // Crash it: no leave, its tasks aborted, its socket closed.
    let at = nodes.iter().position(|n| n.name() == victim_name).unwrap();
    let victim = nodes.remove(at);
    victim.stop().await;
    drop(victim);
    let crashed = Instant::now();

    // The survivors remove it, and serve every shard between them (its shards included).
    let survivors: Vec<&Node> = nodes.iter().collect();
    wait_settled(
        "the survivors serve every shard without the crashed node",
        &survivors,
    )
    .await;
    eprintln!(
        "{victim_name} (primary of {} written entities on {} shards) removed and its shards served again after {:?}",
        victim_entities.len(),
        victim_shards.len(),
        crashed.elapsed()
    );
    for n in &survivors {
        let (_, table) = n.entities().table().unwrap();
        for s in &victim_shards {
            let p = table.primary(*s).unwrap();
            assert_ne!(p, victim_name, "shard {s} has a new primary");
            assert_eq!(
                table.replicas(*s).count(),
                2,
                "two replicas are left for shard {s}"
            );
        }
    }

    // Every acknowledged value reads back, through each survivor.
    for (i, n) in survivors.iter().enumerate() {
        for (k, want) in &kv {
            let got = ask_until_ok(&format!("get {k} through {}", n.name()), || {
                n.ask::<Kv>(k, KvCommand::Get)
            })
            .await;
            assert_eq!(
                got,
                KvReply::Value(Some(want.clone())),
                "{k} through {} after the crash of {victim_name}",
                n.name()
            );
        }
        for (c, want) in &counters {
            let got = ask_until_ok(&format!("get {c} through {}", n.name()), || {
                n.ask::<Counter>(c, CounterCommand::Get)
            })
            .await;
            assert_eq!(
                got,
                *want,
                "{c} through {} after the crash of {victim_name} (survivor {i})",
                n.name()
            );
        }
    }

    // New writes to the crashed primary's entities succeed, and read back elsewhere.
    for (j, (kind, id)) in victim_entities.iter().enumerate() {
        let (w, r) = (survivors[j % 2], survivors[(j + 1) % 2]);
        match *kind {
            "kv" => {
                let value = format!("{{\"after\":{j}}}");
                let put = ask_until_ok(&format!("put {id} after the crash"), || {
                    w.ask::<Kv>(id, KvCommand::Put(value.clone()))
                })
                .await;
                assert_eq!(put, KvReply::Value(Some(value.clone())));
                let got = r.ask::<Kv>(id, KvCommand::Get).await.unwrap();
                assert_eq!(
                    got,
                    KvReply::Value(Some(value)),
                    "{id} through {}",
                    r.name()
                );
            }
            _ => {
                let v = ask_until_ok(&format!("add to {id} after the crash"), || {
                    w.ask::<Counter>(id, CounterCommand::Add(100))
                })
                .await;
                assert_eq!(v, counters[id] + 100, "{id}");
                let got = r.ask::<Counter>(id, CounterCommand::Get).await.unwrap();
                assert_eq!(got, counters[id] + 100, "{id} through {}", r.name());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// 2. A full disk
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_takes_only_that_nodes_shards_out_of_service() {
    const SHARDS: u32 = 16;
    let ca = ClusterCa::generate("test").unwrap();
    let (mut nodes, disks) = three_nodes(&ca, SHARDS).await;
    let ids = counters_on_every_shard("d", SHARDS, 2);
    let mut values: BTreeMap<String, i64> = BTreeMap::new();
    for (i, id) in ids.iter().enumerate() {
        let v = nodes[i % 3]
            .ask::<Counter>(id, CounterCommand::Add(10))
            .await
            .unwrap();
        assert_eq!(v, 10);
        values.insert(id.clone(), v);
    }
    let on_full = |id: &str| primary_of(&nodes[0], "counter", id) == "n3";
    let (full_ids, healthy_ids): (Vec<String>, Vec<String>) =
        ids.iter().cloned().partition(|id| on_full(id));
    assert!(!full_ids.is_empty() && !healthy_ids.is_empty());
    let n3_shards: BTreeSet<ShardId> = full_ids
        .iter()
        .map(|id| shard_of("counter", id.as_bytes(), SHARDS))
        .collect();

    // n3's disk fills up. With R = 3 on three nodes, n3 holds a replica of every shard.
    disks[2].store.set_faults(StoreFaults {
        disk_full: true,
        ..Default::default()
    });

    // Shards whose primary is n1 or n2 keep a healthy majority: writes succeed although n3
    // refuses their appends, and so do reads, through every node. Each entity is written
    // once: for the first of each shard, n3 takes the append in before its write fails.
    for (i, id) in healthy_ids.iter().enumerate() {
        let through = &nodes[i % 3];
        let v = through
            .ask::<Counter>(id, CounterCommand::Add(1))
            .await
            .unwrap_or_else(|e| panic!("add to {id} through {}: {e:?}", through.name()));
        *values.get_mut(id).unwrap() += 1;
        assert_eq!(v, values[id], "{id}");
        for n in &nodes {
            let got = n
                .ask::<Counter>(id, CounterCommand::Get)
                .await
                .unwrap_or_else(|e| panic!("get {id} through {}: {e:?}", n.name()));
            assert_eq!(got, values[id], "{id} read back through {}", n.name());
        }
    }

    // Shards whose primary is n3: a write fails fast, not after the ask timeout, with a
    // reason naming the disk. The first write of a shard may have been stored by the two
    // healthy backups before n3's own write failed ("may or may not have taken effect");
    // from then on the shard is out of service on n3 and refuses commands without running
    // them.
    let mut uncertain: BTreeMap<String, i64> = BTreeMap::new();
    for (i, id) in full_ids.iter().enumerate() {
        let shard = shard_of("counter", id.as_bytes(), SHARDS);
        for attempt in 0..3 {
            let through = &nodes[(i + attempt) % 3];
            let started = Instant::now();
            let r = through
                .ask_timeout::<Counter>(id, CounterCommand::Add(1), Duration::from_secs(4))
                .await;
            let took = started.elapsed();
            assert!(
                took < Duration::from_secs(2),
                "add to {id} on n3's full disk answered in {took:?}: {r:?}"
            );
            let why = match r {
                // n3 answered before its own write failed: acknowledged all the same.
                Ok(v) if attempt == 0 => {
                    assert_eq!(v, values[id] + 1, "{id}");
                    values.insert(id.clone(), v);
                    continue;
                }
                Err(AskError::Unavailable(why)) => why,
                other => panic!("add to {id} on n3's full disk: {other:?}"),
            };
            assert!(
                why.contains("no space left on device")
                    && why.contains(&format!("shard {shard} on n3")),
                "{id} through {}: {why}",
                through.name()
            );
            if why.contains("may or may not have taken effect") {
                assert_eq!(attempt, 0, "only the write in flight is uncertain: {why}");
                *uncertain.entry(id.clone()).or_default() += 1;
            }
        }
    }

    eprintln!(
        "writes to n3's shards once its disk was full: {} uncertain, the rest acknowledged or refused",
        uncertain.values().sum::<i64>()
    );

    // n3 reports the shards it could not write, with the reason; n1 and n2 report none and
    // still serve every shard they are primary of.
    let failed = nodes[2].entities().failed_shards();
    let failed_set: BTreeSet<ShardId> = failed.iter().map(|(s, _)| *s).collect();
    assert!(
        n3_shards.is_subset(&failed_set),
        "n3's written shards {n3_shards:?} are out of service: {failed:?}"
    );
    for (s, why) in &failed {
        assert!(why.contains("no space left on device"), "shard {s}: {why}");
    }
    assert!(
        nodes[2]
            .entities()
            .serving()
            .iter()
            .all(|s| !n3_shards.contains(s))
    );
    for n in &nodes[..2] {
        assert_eq!(n.entities().failed_shards(), vec![], "{}", n.name());
        let (_, table) = n.entities().table().unwrap();
        let mine: Vec<ShardId> = (0..SHARDS)
            .map(ShardId)
            .filter(|s| table.primary(*s) == Some(n.name()))
            .collect();
        assert_eq!(
            n.entities().serving(),
            mine,
            "{} still serves its shards",
            n.name()
        );
    }
    // ...and the cluster did not move anything: n3 is alive, only its disk is full.
    for n in &nodes {
        assert_eq!(n.view().configuration.unwrap().members.len(), 3);
    }

    // The disk has room again: n3 tries its shards again (storage I/O errors are retried)
    // and serves them; writes to them succeed.
    disks[2].store.set_faults(StoreFaults::default());
    let refs: Vec<&Node> = nodes.iter().collect();
    wait_settled("n3 serves its shards again once its disk has room", &refs).await;
    // n3's disk holds what its replicas claim to hold, the same as the others': nothing it
    // took in while its disk was full is counted without being on disk.
    eventually_ok("every replica's disk holds the same versions", || async {
        for s in 0..SHARDS {
            let on_disk: Vec<_> = disks.iter().map(|d| durable(&d.store, s)).collect();
            for (n, d) in nodes.iter().zip(&on_disk) {
                let claimed = n.entities().replica_summary(ShardId(s)).entities;
                if *d != on_disk[0] || claimed != d.len() {
                    return Err(format!(
                        "shard {s}: {} claims {claimed} entities and has {} on disk, n1 has {} on disk: {:?}",
                        n.name(),
                        d.len(),
                        on_disk[0].len(),
                        d.iter().filter(|(e, v)| on_disk[0].get(*e) != Some(v)).collect::<Vec<_>>()
                    ));
                }
            }
        }
        Ok(())
    })
    .await;

    for (i, id) in full_ids.iter().enumerate() {
        let through = &nodes[i % 3];
        let before = ask_until_ok(&format!("get {id} after the disk has room"), || {
            through.ask::<Counter>(id, CounterCommand::Get)
        })
        .await;
        let lo = values[id];
        let hi = values[id] + uncertain.get(id).copied().unwrap_or(0);
        assert!(
            (lo..=hi).contains(&before),
            "{id} holds {before}: every acknowledged add ({lo}), and at most the uncertain ones"
        );
        let v = through
            .ask::<Counter>(id, CounterCommand::Add(1000))
            .await
            .unwrap_or_else(|e| panic!("add to {id} after the disk has room: {e:?}"));
        assert_eq!(v, before + 1000, "{id}");
        values.insert(id.clone(), v);
    }
    for (i, id) in healthy_ids.iter().enumerate() {
        let v = nodes[i % 3]
            .ask::<Counter>(id, CounterCommand::Add(1000))
            .await
            .unwrap();
        assert_eq!(v, values[id] + 1000, "{id}");
        values.insert(id.clone(), v);
    }
    assert_eq!(nodes[2].entities().failed_shards(), vec![]);

    // Those writes were replicated like any other: they survive the crash of n3.
    let n3 = nodes.pop().unwrap();
    n3.stop().await;
    drop(n3);
    let refs: Vec<&Node> = nodes.iter().collect();
    wait_settled("n1 and n2 serve every shard without n3", &refs).await;
    for (i, id) in ids.iter().enumerate() {
        let through = &nodes[i % 2];
        let got = ask_until_ok(&format!("get {id} after n3 crashed"), || {
            through.ask::<Counter>(id, CounterCommand::Get)
        })
        .await;
        assert_eq!(
            got,
            values[id],
            "{id} through {} after n3 crashed",
            through.name()
        );
    }
}

// ---------------------------------------------------------------------------------------
// 3. A corrupt shard
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_shard_is_out_of_service_and_the_rest_serve() {
    const SHARDS: u32 = 8;
    let ca = ClusterCa::generate("test").unwrap();
    let disk = Disk::default();
    let solo = start(&ca, config("solo", &[], SHARDS), &disk).await;
    wait_settled("solo serves every shard", &[&solo]).await;
    let ids = counters_on_every_shard("x", SHARDS, 3);
    let value = |id: &str| ids.iter().position(|x| x == id).unwrap() as i64 + 1;
    let shard = |id: &str| shard_of("counter", id.as_bytes(), SHARDS);
    for id in &ids {
        let v = solo
            .ask::<Counter>(id, CounterCommand::Add(value(id)))
            .await
            .unwrap();
        assert_eq!(v, value(id));
    }

    // Restarted (same address, same durable state) with shard `bad` corrupt on its disk.
    let bad = shard(&ids[0]);
    let addr = solo.transport().local_addr();
    solo.stop().await;
    drop(solo);
    disk.store.set_faults(StoreFaults {
        disk_full: false,
        corrupt_shards: [bad.0].into(),
    });
    // The stopped node's socket may take a moment to be released.
    let stopped = Instant::now();
    let solo = eventually_ok("the restarted node binds its old address", || async {
        let mut c = config("solo", &[], SHARDS);
        c.listen = addr;
        try_start(&ca, c, &disk).await
    })
    .await;
    eprintln!("restarted on {addr} {:?} after the stop", stopped.elapsed());

    // Loading found it corrupt: out of service, with the reason; every other shard serves.
    eventually("solo serves every shard but the corrupt one", || async {
        (solo.entities().serving().len() == SHARDS as usize - 1).then_some(())
    })
    .await;
    let failed = solo.entities().failed_shards();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, bad);
    assert!(
        failed[0].1.contains("corrupt storage") && failed[0].1.contains(&format!("shard {bad}")),
        "{failed:?}"
    );
    assert!(!solo.entities().serving().contains(&bad));

    // A shard that will turn out corrupt later, while serving: one of its entities is not
    // asked now, so that it must be read from the store then.
    let later = ids.iter().map(|id| shard(id)).find(|s| *s != bad).unwrap();
    let unread = ids.iter().rfind(|id| shard(id) == later).unwrap().clone();

    // The corrupt shard's entities are refused at once with the reason; the others have
    // their values, and take writes.
    for id in ids.iter().filter(|id| **id != unread) {
        let started = Instant::now();
        let r = solo.ask::<Counter>(id, CounterCommand::Get).await;
        if shard(id) == bad {
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "refused at once, not after the ask timeout"
            );
            match r {
                Err(AskError::Unavailable(why)) => assert!(
                    why.contains("corrupt storage") && why.contains(&format!("shard {bad}")),
                    "{id}: {why}"
                ),
                other => panic!("{id} on the corrupt shard: {other:?}"),
            }
        } else {
            assert_eq!(r.unwrap(), value(id), "{id} kept its value");
            let v = solo
                .ask::<Counter>(id, CounterCommand::Add(1))
                .await
                .unwrap();
            assert_eq!(v, value(id) + 1, "{id} takes writes");
        }
    }

    // Now `later`'s records turn out corrupt too: reading one takes the shard out of service
    // (its active entities included), with the reason, and the rest keep serving.
    disk.store.set_faults(StoreFaults {
        disk_full: false,
        corrupt_shards: [bad.0, later.0].into(),
    });
    let started = Instant::now();
    let r = solo.ask::<Counter>(&unread, CounterCommand::Get).await;
    assert!(started.elapsed() < Duration::from_secs(1), "{r:?}");
    match r {
        Err(AskError::Unavailable(why)) => assert!(
            why.contains("corrupt storage") && why.contains(&format!("shard {later}")),
            "{unread}: {why}"
        ),
        other => panic!("{unread} on a shard found corrupt: {other:?}"),
    }
    let active_on_later = ids
        .iter()
        .find(|id| shard(id) == later && **id != unread)
        .unwrap();
    let r = solo
        .ask::<Counter>(active_on_later, CounterCommand::Get)
        .await;
    assert!(
        matches!(&r, Err(AskError::Unavailable(why)) if why.contains("corrupt storage")),
        "{active_on_later}: {r:?}"
    );
    let failed: BTreeSet<ShardId> = solo
        .entities()
        .failed_shards()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(failed, [bad, later].into());
    assert_eq!(solo.entities().serving().len(), SHARDS as usize - 2);
    for id in ids
        .iter()
        .filter(|id| shard(id) != bad && shard(id) != later)
    {
        let v = solo.ask::<Counter>(id, CounterCommand::Get).await.unwrap();
        assert_eq!(v, value(id) + 1, "{id}");
    }

    // Corruption is not retried (an I/O error is, after 5 s): still out of service after
    // the retry interval. A single node, so waiting is the only way to see nothing happen.
    tokio::time::sleep(Duration::from_millis(5600)).await;
    let failed: BTreeSet<ShardId> = solo
        .entities()
        .failed_shards()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(
        failed,
        [bad, later].into(),
        "corrupt shards stay out of service"
    );
    solo.stop().await;
}

// ---------------------------------------------------------------------------------------
// 4. redb on a full filesystem
// ---------------------------------------------------------------------------------------

/// A tmpfs mounted for the test, unmounted on drop (a failed assertion included).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=`), if this process may.
    fn mount(size: &str) -> Result<Self, String> {
        use std::os::unix::fs::MetadataExt;
        if std::fs::metadata("/proc/self").map_or(true, |m| m.uid() != 0) {
            return Err("not running as root".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Self { dir })
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let status = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
        if !status.is_ok_and(|s| s.success()) {
            // Busy (a handle still open): detach it now, it goes when the last handle does.
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

fn entity(i: usize) -> EntityRef {
    EntityRef {
        kind: "kv".into(),
        id: format!("e{i}"),
    }
}

fn put(i: usize, state: &bytes::Bytes) -> Vec<Write> {
    vec![
        Write::Entity {
            shard: 0,
            entity: entity(i),
            record: Record {
                version: Version {
                    epoch: 1,
                    seq: i as u64 + 1,
                },
                state: Some(state.clone()),
            },
        },
        Write::Meta {
            shard: 0,
            meta: ShardMeta {
                promised: 1,
                installed: 1,
                applied: i as u64 + 1,
            },
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_store_on_a_full_filesystem_fails_cleanly() {
    let fs = match Tmpfs::mount("1m") {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!("skipping: {why}");
            return;
        }
    };
    // Room to free later.
    std::fs::write(fs.path().join("ballast"), vec![0u8; 256 << 10]).unwrap();
    let dir = fs.path().join("replicas");
    let state = bytes::Bytes::from(vec![7u8; 8 << 10]);

    let store = DiskStore::open(&dir, 1).unwrap();
    let mut committed = 0;
    let err = loop {
        match store.write(0, put(committed, &state)).await {
            Ok(()) => committed += 1,
            Err(e) => break e,
        }
        assert!(committed < 1000, "a 1 MiB filesystem never filled up");
    };
    eprintln!("{committed} writes of 8 KiB committed, then: {err}");
    assert!(committed > 10, "{committed}");
    match &err {
        StoreError::Io(why) => assert!(
            why.to_lowercase().contains("no space left on device"),
            "{why}"
        ),
        other => panic!("a full disk is an I/O error, not {other:?}"),
    }

    // A later write fails the same way while the disk is full (redb refuses everything
    // after an I/O error until its file is opened again: the store does that).
    let again = store.write(0, put(committed, &state)).await.unwrap_err();
    assert!(
        matches!(&again, StoreError::Io(why) if why.to_lowercase().contains("no space left")),
        "{again:?}"
    );

    // Once there is room again, the same store takes writes again, and what was committed
    // before is still there.
    std::fs::remove_file(fs.path().join("ballast")).unwrap();
    store
        .write(0, put(committed, &state))
        .await
        .expect("the store writes again once the disk has room");
    committed += 1;
    for i in [0, committed - 1] {
        let r = store.read(0, &entity(i)).await.unwrap().unwrap();
        assert_eq!(r.version.seq, i as u64 + 1);
    }

    // Reopened, everything committed is there and intact.
    drop(store);
    let store = DiskStore::open(&dir, 1).unwrap();
    let loaded = store.load(1);
    assert!(loaded.failed.is_empty(), "{:?}", loaded.failed);
    let index = &loaded.shards[&0].index;
    assert_eq!(index.len(), committed);
    for i in 0..committed {
        let r = store.read(0, &entity(i)).await.unwrap().unwrap();
        assert_eq!(r.version.seq, i as u64 + 1);
        assert_eq!(r.state.as_ref(), Some(&state));
    }
    store
        .write(0, put(committed, &state))
        .await
        .expect("a reopened store writes");
}
