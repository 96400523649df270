//! `/metrics` and `/overview` on two in-process nodes over real QUIC: the figures follow what
//! the nodes did (asks, messages between nodes, shards, members, connections, gossip).

use std::time::Duration;

use shoal::dashboard::Overview;
use shoal::entity::builtin::{Counter, CounterCommand};
use shoal::transport::ClusterCa;
use shoal::{Node, NodeBuilder, loopback};
use tokio::time::timeout;

const DEADLINE: Duration = Duration::from_secs(30);

async fn start(ca: &ClusterCa, name: &str, seeds: &[&Node]) -> Node {
    let mut config = loopback::config(name, seeds);
    config.gossip_interval = Duration::from_millis(100);
    config.shards = 32;
    config.replicas = 2;
    loopback::start(NodeBuilder::new(config), ca).await.unwrap()
}

/// The value of the series whose line starts with `series` (name and labels, exactly).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

/// Serves `node`'s HTTP API on a free port and returns its address.
async fn serve(node: &Node) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(shoal::http::serve(
        node.clone(),
        listener,
        std::future::pending(),
    ));
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_what_the_nodes_did() {
    let ca = ClusterCa::generate("test").unwrap();
    let n1 = start(&ca, "n1", &[]).await;
    let n2 = start(&ca, "n2", &[&n1]).await;
    timeout(DEADLINE, async {
        loopback::wait_serving(&[&n1, &n2]).await;
        let both_up = |n: &Node| {
            n.view()
                .members
                .iter()
                .filter(|m| m.live && m.status == shoal::membership::NodeStatus::Up)
                .count()
                == 2
        };
        while !(both_up(&n1) && both_up(&n2)) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("both nodes serving and seeing each other up");

    // An entity whose primary is n2, asked through n1: one message out of n1, one into n2,
    // one command run on n2, one ask timed on n1.
    let (_, table) = n1.entities().table().unwrap();
    let id = (0..)
        .map(|i| format!("c{i}"))
        .find(|id| {
            let shard = shoal::sharding::shard_of("counter", id.as_bytes(), table.shards());
            table.primary(shard) == Some("n2")
        })
        .unwrap();
    assert_eq!(
        n1.ask::<Counter>(&id, CounterCommand::Add(5))
            .await
            .unwrap(),
        5
    );

    let addr = serve(&n1).await;
    let response = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let m1 = response.text().await.unwrap();
    let m2 = shoal::metrics::render(&n2);
    assert!(m1.ends_with("# EOF\n"));

    assert_eq!(
        value(&m1, r#"shoal_messages_out_total{kind="counter"}"#),
        1.0
    );
    assert_eq!(
        value(&m2, r#"shoal_messages_in_total{kind="counter"}"#),
        1.0
    );
    assert_eq!(value(&m2, r#"shoal_commands_total{kind="counter"}"#), 1.0);
    assert_eq!(value(&m1, r#"shoal_commands_total{kind="counter"}"#), 0.0);
    assert_eq!(
        value(
            &m1,
            r#"shoal_ask_duration_seconds_count{kind="counter",outcome="ok"}"#
        ),
        1.0
    );
    assert_eq!(value(&m2, r#"shoal_active_entities{kind="counter"}"#), 1.0);
    for m in [&m1, &m2] {
        assert_eq!(value(m, r#"shoal_members{status="up"}"#), 2.0);
        assert_eq!(value(m, r#"shoal_members{status="failed"}"#), 0.0);
        assert_eq!(value(m, "shoal_in_majority"), 1.0);
        assert!(value(m, "shoal_config_epoch") >= 1.0);
        // Two replicas per shard on two nodes: every shard is here, as primary or copy.
        let primary = value(m, r#"shoal_shards{state="primary"}"#);
        let replica = value(m, r#"shoal_shards{state="replica"}"#);
        assert_eq!(primary + replica, 32.0, "{m}");
        assert_eq!(value(m, "shoal_handoffs_in_progress"), 0.0);
        assert_eq!(value(m, "shoal_replication_pending_writes"), 0.0);
        assert!(value(m, "shoal_quic_connections") >= 1.0);
        assert!(value(m, "shoal_quic_sent_bytes_total") > 0.0);
        assert!(value(m, "shoal_quic_received_bytes_total") > 0.0);
        assert!(value(m, "shoal_gossip_rounds_total") > 0.0);
    }
    let phi = value(&m1, r#"shoal_failure_detector_phi{peer="n2"}"#);
    assert!((0.0..8.0).contains(&phi), "phi of a live peer: {phi}");
    let primaries = value(&m1, r#"shoal_shards{state="primary"}"#)
        + value(&m2, r#"shoal_shards{state="primary"}"#);
    assert_eq!(primaries, 32.0);

    // The dashboard's document agrees, once gossip told n1 that n2 serves its shards.
    let overview = || async {
        reqwest::get(format!("http://{addr}/overview"))
            .await
            .unwrap()
            .json::<Overview>()
            .await
            .unwrap()
    };
    let o = timeout(DEADLINE, async {
        loop {
            let o = overview().await;
            if o.members.iter().all(|m| m.ready) {
                return o;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("every member ready in /overview");
    let names: Vec<&str> = o.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["n1", "n2"]);
    assert!(o.members.iter().all(|m| m.state == "up" && m.member));
    assert!(o.handoffs.is_empty(), "{:?}", o.handoffs);
    assert_eq!(o.ring.primary.len(), 32);
    assert_eq!(
        o.members.iter().map(|m| m.primaries).sum::<usize>(),
        32,
        "{o:?}"
    );
    assert!(o.events.iter().any(|e| e.kind == "up" && e.node == "n2"));
    let page = reqwest::get(format!("http://{addr}/")).await.unwrap();
    assert!(page.text().await.unwrap().contains("/dashboard.js"));
}

/// Every metric the Grafana dashboard under `deploy/` queries is one the node exports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grafana_dashboard_queries_only_exported_metrics() {
    let ca = ClusterCa::generate("test").unwrap();
    let n1 = start(&ca, "n1", &[]).await;
    let exported = shoal::metrics::render(&n1);
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/shoal-dashboard.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut queried = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(at) = rest.find("shoal_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                queried.push(name);
            }
        }
    }
    assert!(queried.len() > 10, "{queried:?}");
    for name in queried {
        let sample = |suffix: &str| format!("\n{name}{suffix}");
        // A family with no series yet (phi on a node without peers) still has its TYPE line.
        assert!(
            exported.contains(&sample("{"))
                || exported.contains(&sample(" "))
                || exported.contains(&format!("# TYPE {name} ")),
            "the dashboard queries {name}, which /metrics does not export"
        );
    }
}
