//! Real `shoal node` processes on loopback: real sockets, real signals. What the simulator
//! cannot cover. Every wait polls `/cluster` (or a log) for a condition, with a deadline.

use std::time::Duration;

use shoal::local_cluster::LocalCluster;
use shoal_transport::CertDir;

const DEADLINE: Duration = Duration::from_secs(30);

fn cluster() -> LocalCluster {
    let mut c = LocalCluster::in_temp_dir(env!("CARGO_BIN_EXE_shoal")).unwrap();
    c.set_gossip_interval(Duration::from_millis(200));
    c
}

async fn wait_log(c: &LocalCluster, node: &str, needle: &str) {
    let path = c.node(node).unwrap().log.clone();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.contains(needle) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{node}'s log never contained {needle:?}; log:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_converge_detect_a_kill_and_see_a_graceful_leave() {
    let mut c = cluster();
    c.add_node("n1", &[]).unwrap();
    c.add_node("n2", &["n1"]).unwrap();
    c.add_node("n3", &["n1"]).unwrap();
    for n in ["n1", "n2", "n3"] {
        c.start(n).unwrap();
    }
    for n in ["n1", "n2", "n3"] {
        let info = c
            .wait_for(n, DEADLINE, "seeing 3 members up", |i| i.up().len() == 3)
            .await
            .unwrap();
        assert_eq!(info.self_name, n);
        assert_eq!(info.cluster_id, "shoal");
        let names: Vec<&str> = info.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["n1", "n2", "n3"]);
        for m in &info.members {
            assert!(m.generation > 0);
            assert_eq!(m.addr, c.node(&m.name).unwrap().listen.to_string());
        }
    }

    // SIGKILL n3: the others detect it; its status stays `up` (it never said goodbye).
    c.kill("n3").await.unwrap();
    for n in ["n1", "n2"] {
        let info = c
            .wait_for(n, DEADLINE, "seeing n3 failed", |i| {
                i.member("n3").is_some_and(|m| !m.live)
            })
            .await
            .unwrap();
        assert_eq!(info.member("n3").unwrap().status, "up");
    }
    wait_log(&c, "n1", "member failed").await;

    // SIGTERM n2: it leaves gracefully and exits 0; n1 sees `leaving`, then not live.
    let status = c.terminate("n2", DEADLINE).await.unwrap();
    assert!(
        status.success(),
        "SIGTERM must end in a clean exit: {status}"
    );
    let info = c
        .wait_for("n1", DEADLINE, "seeing n2 gone", |i| {
            i.member("n2").is_some_and(|m| !m.live)
        })
        .await
        .unwrap();
    assert_eq!(info.member("n2").unwrap().status, "leaving");
    wait_log(&c, "n1", "member left").await;
    let log = std::fs::read_to_string(&c.node("n2").unwrap().log).unwrap();
    assert!(log.contains("leaving the cluster"), "n2 log:\n{log}");
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_foreign_ca_never_appears() {
    let mut c = cluster();
    c.add_node("n1", &[]).unwrap();
    c.add_node("n2", &["n1"]).unwrap();
    c.start("n1").unwrap();
    c.start("n2").unwrap();
    for n in ["n1", "n2"] {
        c.wait_for(n, DEADLINE, "seeing 2 members up", |i| i.up().len() == 2)
            .await
            .unwrap();
    }
    let foreign = CertDir::new(c.root().join("foreign-certs"));
    foreign.init_ca("foreign").unwrap();
    foreign.issue("intruder").unwrap();
    c.add_node_with(
        "intruder",
        &["n1"],
        foreign.path().to_path_buf(),
        "shoal".into(),
    )
    .unwrap();
    c.start("intruder").unwrap();
    // The intruder runs (its API answers) and n1 refuses its handshakes.
    c.wait_for("intruder", DEADLINE, "answering", |_| true)
        .await
        .unwrap();
    wait_log(&c, "n1", "refused a connection").await;
    for n in ["n1", "n2"] {
        let info = c.cluster_info(n).await.unwrap();
        assert!(
            info.member("intruder").is_none(),
            "{n} let the intruder in: {info:?}"
        );
        assert_eq!(info.up().len(), 2);
    }
    let info = c.cluster_info("intruder").await.unwrap();
    assert_eq!(
        info.members.len(),
        1,
        "the intruder sees only itself: {info:?}"
    );
    assert_eq!(info.members[0].status, "joining");
    c.stop_all().await;
}

fn epoch_members(info: &shoal::api::ClusterInfo) -> Vec<(String, u64)> {
    info.config_members
        .iter()
        .map(|m| (m.name.clone(), m.generation))
        .collect()
}

/// Five nodes n1..n5 (n1 founds, n2 seeded by n1, the rest by both), all started.
fn five_started(c: &mut LocalCluster) -> [&'static str; 5] {
    let names = ["n1", "n2", "n3", "n4", "n5"];
    c.add_node("n1", &[]).unwrap();
    c.add_node("n2", &["n1"]).unwrap();
    for n in &names[2..] {
        c.add_node(n, &["n1", "n2"]).unwrap();
    }
    for n in names {
        c.start(n).unwrap();
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_processes_remove_two_killed_nodes_and_add_them_back_as_new_generations() {
    let mut c = cluster();
    c.set_down_after(Duration::from_secs(2));
    let names = five_started(&mut c);
    let mut before = None;
    for n in names {
        let info = c
            .wait_for(n, DEADLINE, "a 5-member configuration", |i| {
                i.config_members.len() == 5 && i.up().len() == 5
            })
            .await
            .unwrap();
        assert!(info.in_majority);
        before.get_or_insert(info);
    }
    let before = before.unwrap();
    let old: std::collections::BTreeMap<String, u64> = epoch_members(&before).into_iter().collect();

    // SIGKILL two: the three survivors still form a majority and commit the removal.
    c.kill("n4").await.unwrap();
    c.kill("n5").await.unwrap();
    for n in ["n1", "n2", "n3"] {
        let info = c
            .wait_for(n, DEADLINE, "n4 and n5 removed", |i| {
                let m: Vec<&str> = i.config_members.iter().map(|m| m.name.as_str()).collect();
                m == ["n1", "n2", "n3"]
            })
            .await
            .unwrap();
        assert!(info.epoch > before.epoch, "a new epoch was committed");
        assert!(info.in_majority);
    }

    // Restarted with their data directories, they learn they were removed and are added
    // back as new generations.
    c.start("n4").unwrap();
    c.start("n5").unwrap();
    for n in names {
        let info = c
            .wait_for(n, DEADLINE, "all five members again", |i| {
                i.config_members.len() == 5 && i.up().len() == 5
            })
            .await
            .unwrap();
        for (name, generation) in epoch_members(&info) {
            if name == "n4" || name == "n5" {
                assert!(generation > old[&name], "{name} is a new generation");
            } else {
                assert_eq!(generation, old[&name], "{name} kept its place");
            }
        }
    }
    c.stop_all().await;
}

async fn http(
    method: reqwest::Method,
    url: String,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let client = reqwest::Client::new();
    let mut req = client.request(method, &url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    match req.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            (status, resp.json().await.unwrap_or(serde_json::Value::Null))
        }
        Err(_) => (0, serde_json::Value::Null),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_written_through_one_gateway_are_read_through_all_and_survive_a_join() {
    use reqwest::Method as M;
    let mut c = cluster();
    c.add_node("n1", &[]).unwrap();
    c.add_node("n2", &["n1"]).unwrap();
    c.add_node("n3", &["n1"]).unwrap();
    for n in ["n1", "n2", "n3"] {
        c.start(n).unwrap();
    }
    for n in ["n1", "n2", "n3"] {
        c.wait_for(n, DEADLINE, "3 members owning shards", |i| {
            i.config_members.len() == 3 && i.shards.len() == 3
        })
        .await
        .unwrap();
    }
    fn base(c: &LocalCluster, n: &str) -> String {
        format!("http://{}", c.node(n).unwrap().http)
    }
    let keys: Vec<String> = (0..40).map(|i| format!("key-{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        let (s, v) = http(
            M::PUT,
            format!("{}/kv/{k}", base(&c, "n1")),
            Some(serde_json::json!({"i": i})),
        )
        .await;
        assert_eq!(s, 200, "{v}");
    }
    for n in ["n2", "n3"] {
        for (i, k) in keys.iter().enumerate() {
            let (s, v) = http(M::GET, format!("{}/kv/{k}", base(&c, n)), None).await;
            assert_eq!(
                (s, v["value"]["i"].as_u64()),
                (200, Some(i as u64)),
                "{k} through {n}"
            );
        }
    }
    // A fourth node joins: it receives shards, with their entities' state.
    c.add_node("n4", &["n1"]).unwrap();
    c.start("n4").unwrap();
    let info = c
        .wait_for("n4", DEADLINE, "a member owning shards", |i| {
            i.config_members.len() == 4 && i.shards.get("n4").is_some_and(|&s| s > 0)
        })
        .await
        .unwrap();
    assert!(
        info.shards["n4"] > 100,
        "about a quarter of 1024: {:?}",
        info.shards
    );
    for n in ["n1", "n2", "n3", "n4"] {
        for (i, k) in keys.iter().enumerate() {
            let (s, v) = http(M::GET, format!("{}/kv/{k}", base(&c, n)), None).await;
            assert_eq!(
                (s, v["value"]["i"].as_u64()),
                (200, Some(i as u64)),
                "{k} through {n} after the join"
            );
        }
    }
    let log = std::fs::read_to_string(&c.node("n4").unwrap().log).unwrap();
    assert!(
        log.contains("shard serving"),
        "n4 recovered shards and serves them:\n{log}"
    );
    c.stop_all().await;
}

/// Reads `key` through `node` until it answers 200 or the deadline passes; the value.
async fn read_until_ok(base: &str, key: &str) -> (u16, serde_json::Value) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (s, v) = http(reqwest::Method::GET, format!("{base}/kv/{key}"), None).await;
        if s == 200 || tokio::time::Instant::now() >= deadline {
            return (s, v);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts that every acknowledged write reads back, through every node in `through`.
async fn assert_all_readable(
    c: &LocalCluster,
    through: &[&str],
    acked: &std::collections::BTreeMap<String, u64>,
    when: &str,
) {
    for n in through {
        let base = format!("http://{}", c.node(n).unwrap().http);
        for (k, want) in acked {
            let (s, v) = read_until_ok(&base, k).await;
            assert_eq!(
                (s, v["value"]["v"].as_u64()),
                (200, Some(*want)),
                "{k} through {n} {when}: {v}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_two_kills_restarts_and_a_full_cluster_restart() {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};
    let mut c = cluster();
    c.set_down_after(Duration::from_secs(2));
    // Five copies of every shard: any two nodes may die and every shard keeps a majority of
    // its replicas, so everything stays readable (with three, a shard that had two replicas
    // on the dead nodes would wait for one of them to come back, its data intact on disk).
    c.set_replicas(5);
    let names = five_started(&mut c);
    for n in names {
        c.wait_for(n, DEADLINE, "5 members owning shards", |i| {
            i.config_members.len() == 5 && i.shards.len() == 5
        })
        .await
        .unwrap();
    }
    let bases: Vec<String> = names
        .iter()
        .map(|n| format!("http://{}", c.node(n).unwrap().http))
        .collect();

    // A writer puts fresh keys through every node in turn; what got a 200 is acknowledged.
    let acked: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let stop = Arc::new(tokio::sync::Notify::new());
    let writer = {
        let (acked, stop, bases) = (acked.clone(), stop.clone(), bases.clone());
        tokio::spawn(async move {
            let mut failed = 0u64;
            for i in 0u64.. {
                let base = &bases[i as usize % bases.len()];
                let key = format!("w-{i}");
                let put = http(
                    reqwest::Method::PUT,
                    format!("{base}/kv/{key}"),
                    Some(serde_json::json!({ "v": i })),
                );
                tokio::select! {
                    (s, v) = put => {
                        if s == 200 {
                            acked.lock().unwrap().insert(key, i);
                        } else {
                            failed += 1;
                            if failed % 50 == 1 {
                                eprintln!("PUT {key} through {base}: {s} {v}");
                            }
                        }
                    }
                    _ = stop.notified() => return failed,
                }
            }
            failed
        })
    };
    let acked_now = || acked.lock().unwrap().len();
    let wait_acked = |n: usize| {
        let acked = acked.clone();
        async move {
            let deadline = tokio::time::Instant::now() + DEADLINE;
            while acked.lock().unwrap().len() < n {
                assert!(tokio::time::Instant::now() < deadline, "writes stalled");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_acked(200).await;

    // SIGKILL two nodes under load; the writer keeps going through everyone.
    c.kill("n4").await.unwrap();
    c.kill("n5").await.unwrap();
    for n in ["n1", "n2", "n3"] {
        c.wait_for(n, DEADLINE, "n4 and n5 removed", |i| {
            i.config_members.len() == 3 && i.shards.len() == 3
        })
        .await
        .unwrap();
    }
    let before = acked_now();
    wait_acked(before + 100).await;
    // `notify_one` keeps a permit if the writer is between two puts right now.
    stop.notify_one();
    let failed = writer.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    eprintln!("{} writes acknowledged, {failed} failed", acked.len());
    assert_all_readable(&c, &["n1", "n2", "n3"], &acked, "after two kills").await;

    // Restarted with their data directories, they rejoin and catch up.
    c.start("n4").unwrap();
    c.start("n5").unwrap();
    for n in names {
        c.wait_for(n, DEADLINE, "all five members again", |i| {
            i.config_members.len() == 5 && i.shards.len() == 5
        })
        .await
        .unwrap();
    }
    assert_all_readable(&c, &names, &acked, "after the restarts").await;
    let shards: Vec<serde_json::Value> = reqwest::get(format!("{}/shards", bases[3]))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let held: Vec<&serde_json::Value> = shards.iter().filter(|s| !s["here"].is_null()).collect();
    assert!(!held.is_empty(), "n4 holds replicas again");
    assert!(
        held.iter().all(|s| s["here"]["state"] != "failed"),
        "no replica of n4 failed: {held:?}"
    );
    let log = std::fs::read_to_string(&c.node("n4").unwrap().log).unwrap();
    assert!(log.contains("shard serving"), "n4 serves shards again");

    // The whole cluster stops at once and starts again from its data directories.
    for n in names {
        c.kill(n).await.unwrap();
    }
    for n in names {
        c.start(n).unwrap();
    }
    for n in names {
        c.wait_for(
            n,
            DEADLINE * 2,
            "all five members after a full restart",
            |i| i.config_members.len() == 5 && i.up().len() == 5 && i.shards.len() == 5,
        )
        .await
        .unwrap();
    }
    assert_all_readable(&c, &names, &acked, "after a full cluster restart").await;
    c.stop_all().await;
}
