//! The HTTP gateway's answers, route by route, including every bad input.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use shoal::transport::ClusterCa;
use shoal::{Node, NodeBuilder, loopback};

async fn node(ca: &ClusterCa, name: &str, seeds: Vec<String>) -> (Node, String) {
    let mut config = loopback::config(name, &[]);
    config.gossip_interval = Duration::from_millis(100);
    config.shards = 32;
    config.seeds = seeds;
    config.entities.ask_timeout = Duration::from_millis(600);
    let node = loopback::start(NodeBuilder::new(config), ca).await.unwrap();
    let listener = shoal::http::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(shoal::http::serve(
        node.clone(),
        listener,
        std::future::pending(),
    ));
    (node, base)
}

async fn call(method: reqwest::Method, url: &str, body: Option<Vec<u8>>) -> (StatusCode, Value) {
    let client = reqwest::Client::new();
    let mut req = client.request(method, url);
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_and_every_bad_input_gets_its_status() {
    use reqwest::Method as M;
    let ca = ClusterCa::generate("test").unwrap();
    let (_node, base) = node(&ca, "n1", vec![]).await;
    // Wait until the single node serves its shards.
    let mut ready = false;
    for _ in 0..100 {
        let (s, _) = call(M::GET, &format!("{base}/counter/warmup"), None).await;
        if s == StatusCode::OK {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "the node serves");

    let body = |v: Value| Some(v.to_string().into_bytes());
    let (s, v) = call(
        M::PUT,
        &format!("{base}/kv/user"),
        body(json!({"name": "ada", "n": [1, 2]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["value"]["name"], "ada");
    let (s, v) = call(M::GET, &format!("{base}/kv/user"), None).await;
    assert_eq!((s, v["value"]["n"][1].clone()), (StatusCode::OK, json!(2)));
    let (s, v) = call(M::GET, &format!("{base}/kv/nobody"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert!(v["error"].as_str().unwrap().contains("no value"));

    // Bad JSON: 400 with the reason.
    let (s, v) = call(
        M::PUT,
        &format!("{base}/kv/user"),
        Some(b"{not json".to_vec()),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"].as_str().unwrap().contains("not JSON"), "{v}");

    // Compare-and-set: a failed one is 409 with the current value.
    let cas = |expected: Value, new: Value| body(json!({"expected": expected, "new": new}));
    let (s, v) = call(
        M::POST,
        &format!("{base}/kv/user/cas"),
        cas(json!(null), json!(1)),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["current"]["name"], "ada");
    let (s, v) = call(
        M::POST,
        &format!("{base}/kv/user/cas"),
        cas(json!({"n": [1, 2], "name": "ada"}), json!("grace")),
    )
    .await;
    assert_eq!(
        (s, v["value"].clone()),
        (StatusCode::OK, json!("grace")),
        "{v}"
    );
    let (s, _) = call(
        M::POST,
        &format!("{base}/kv/fresh/cas"),
        cas(json!(null), json!(7)),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "absent matches null");
    let (s, v) = call(
        M::POST,
        &format!("{base}/kv/user/cas"),
        body(json!({"new_value": 1})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    let (s, v) = call(M::DELETE, &format!("{base}/kv/user"), None).await;
    assert_eq!((s, v["deleted"].clone()), (StatusCode::OK, json!("grace")));
    let (s, _) = call(M::DELETE, &format!("{base}/kv/user"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Counters.
    for _ in 0..3 {
        call(
            M::POST,
            &format!("{base}/counter/clicks/add"),
            body(json!({"delta": 5})),
        )
        .await;
    }
    let (s, v) = call(M::GET, &format!("{base}/counter/clicks"), None).await;
    assert_eq!((s, v["value"].clone()), (StatusCode::OK, json!(15)));
    let (s, v) = call(
        M::POST,
        &format!("{base}/counter/clicks/add"),
        body(json!({"delta": "x"})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = call(
        M::POST,
        &format!("{base}/counter/clicks/add"),
        body(json!({"delta": i64::MAX})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "overflow is refused: {v}");

    // Oversize body: 413.
    let big = format!("\"{}\"", "x".repeat(2 * 1024 * 1024));
    let (s, _) = call(M::PUT, &format!("{base}/kv/big"), Some(big.into_bytes())).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);

    // The table and the cluster view.
    let (s, v) = call(M::GET, &format!("{base}/shards"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v.as_array().unwrap().len(), 32);
    assert_eq!(v[0]["primary"], "n1");
    let (_, v) = call(M::GET, &format!("{base}/cluster"), None).await;
    assert_eq!(v["shards"]["n1"], 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_serve_answers_503_with_the_reason() {
    use reqwest::Method as M;
    let ca = ClusterCa::generate("test").unwrap();
    // Its only seed never answers: it never joins a cluster.
    let nowhere = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let seed = nowhere.local_addr().unwrap().to_string();
    let (_node, base) = node(&ca, "lonely", vec![seed]).await;
    let (s, v) = call(M::GET, &format!("{base}/kv/x"), None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("configuration"),
        "the reason is given: {v}"
    );
}
