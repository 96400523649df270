//! Logs of a real `shoal node` process: `--log-format json` writes one JSON object per line
//! with the event's fields at the top level, membership and ownership changes among them;
//! `RUST_LOG` filters.

use std::process::Stdio;
use std::time::Duration;

use shoal_transport::CertDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const DEADLINE: Duration = Duration::from_secs(30);

/// Starts a one-node cluster with `--log-format json` and `rust_log`, collects its log lines
/// until every message in `until` has been seen (or the deadline), then stops it. The
/// messages come from different tasks (membership events, the configuration, the shard
/// host), so no one of them is guaranteed to be the last.
async fn json_lines(rust_log: &str, until: &[&str]) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().unwrap();
    let certs = CertDir::new(dir.path().join("certs"));
    certs.init_ca("logs").unwrap();
    certs.issue("n1").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["node", "--name", "n1", "--listen", "127.0.0.1:0"])
        .args(["--gossip-interval", "100ms", "--log-format", "json"])
        .arg("--certs")
        .arg(certs.path())
        .env("RUST_LOG", rust_log)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, async {
        while let Ok(Some(line)) = lines.next_line().await {
            let value: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            seen.push(value);
            if until
                .iter()
                .all(|m| seen.iter().any(|l| l["message"] == *m))
            {
                return;
            }
        }
    })
    .await;
    child.kill().await.unwrap();
    seen
}

#[tokio::test]
async fn json_logs_carry_membership_and_ownership_changes_as_fields() {
    let founded = "bootstrapped a new cluster: epoch 1 with this node alone";
    let expected = [
        founded,
        "member up",
        "shard table updated",
        "serving every shard this node is primary for",
    ];
    let lines = json_lines("info", &expected).await;
    let find = |message: &str| {
        lines
            .iter()
            .find(|l| l["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} line in {lines:#?}"))
    };
    let founded = find(founded);
    assert_eq!(founded["level"], "INFO");
    assert_eq!(founded["node"], "n1");
    assert_eq!(founded["epoch"], 1);
    assert_eq!(founded["span"]["node_name"], "n1");
    let up = find("member up");
    assert_eq!(up["event"], "up");
    assert_eq!(up["node"], "n1");
    assert!(up["generation"].as_u64().unwrap() > 0);
    let table = find("shard table updated");
    assert_eq!(table["epoch"], 1);
    assert!(table["activating"].as_u64().unwrap() > 0);
    for l in &lines {
        assert!(l["timestamp"].is_string() && l["target"].is_string(), "{l}");
    }
}

#[tokio::test]
async fn rust_log_filters_by_level_and_target() {
    let lines = json_lines("warn,shoal::node=info", &["node started"]).await;
    assert!(lines.iter().any(|l| l["message"] == "node started"));
    assert!(
        lines
            .iter()
            .all(|l| l["level"] == "WARN" || l["level"] == "ERROR" || l["target"] == "shoal::node"),
        "{lines:#?}"
    );
}
