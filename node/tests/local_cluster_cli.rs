//! `shoal cluster up/down/status` and `shoal kv` / `shoal counter` against real processes:
//! the nodes outlive `cluster up`, the client commands work through any node and answer with
//! exit codes scripts can use, and `cluster down` stops every node.

use std::net::{TcpListener, UdpSocket};
use std::process::{Command, Output};

fn shoal(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).trim().to_string(),
        String::from_utf8_lossy(&o.stderr).trim().to_string(),
    )
}

/// A base port whose three QUIC (UDP) and HTTP (TCP, +1000) ports are free now.
fn free_base() -> u16 {
    (0..200)
        .map(|i| 20_000 + ((std::process::id() as u16 % 300) * 10 + i * 7) % 20_000)
        .find(|&base| {
            (0..3).all(|i| {
                UdpSocket::bind(("127.0.0.1", base + i)).is_ok()
                    && TcpListener::bind(("127.0.0.1", base + 1000 + i)).is_ok()
            })
        })
        .expect("free ports")
}

/// Stops the cluster even if the test fails half-way.
struct Down(String);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = shoal(&["cluster", "down", "--dir", &self.0, "--timeout", "5"]);
    }
}

#[test]
fn cluster_up_serves_kv_and_counter_through_any_node_and_down_stops_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c").display().to_string();
    let base = free_base();
    let up = shoal(&[
        "cluster",
        "up",
        "--nodes",
        "3",
        "--dir",
        &dir,
        "--base-port",
        &base.to_string(),
        "--gossip-interval",
        "200ms",
    ]);
    let _down = Down(dir.clone());
    let (out, err) = text(&up);
    assert!(up.status.success(), "{out}\n{err}");
    let http: Vec<String> = (0..3)
        .map(|i| format!("127.0.0.1:{}", base + 1000 + i))
        .collect();
    for (name, addr) in ["n1", "n2", "n3"].iter().zip(&http) {
        assert!(
            out.lines()
                .any(|l| l.starts_with(name) && l.contains(&format!("http://{addr}/"))),
            "{out}"
        );
    }
    // A second `up` on a running cluster is refused.
    let again = shoal(&[
        "cluster",
        "up",
        "--dir",
        &dir,
        "--base-port",
        &base.to_string(),
    ]);
    assert!(!again.status.success());
    assert!(
        text(&again).1.contains("already running"),
        "{:?}",
        text(&again)
    );

    let run = |args: &[&str], via: usize| {
        let mut all = args.to_vec();
        all.extend(["--http", &http[via]]);
        let o = shoal(&all);
        (o.status.code(), text(&o).0, text(&o).1)
    };
    assert_eq!(
        run(&["kv", "put", "user-42", r#"{"name":"ada"}"#], 0).0,
        Some(0)
    );
    assert_eq!(run(&["kv", "get", "user-42"], 2).1, r#"{"name":"ada"}"#);
    assert_eq!(run(&["kv", "put", "greeting", "hello"], 1).1, r#""hello""#);
    let (code, _, err) = run(&["kv", "get", "nobody"], 1);
    assert_eq!(code, Some(1));
    assert!(err.contains("no value"), "{err}");
    let (code, _, err) = run(
        &["kv", "cas", "greeting", "--expected", "bye", "--new", "x"],
        2,
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("\"hello\""), "{err}");
    assert_eq!(
        run(
            &[
                "kv",
                "cas",
                "greeting",
                "--expected",
                "hello",
                "--new",
                "bye"
            ],
            2
        )
        .1,
        r#""bye""#
    );
    assert_eq!(run(&["counter", "add", "visits", "5"], 0).1, "5");
    assert_eq!(run(&["counter", "add", "visits", "-2"], 1).1, "3");
    assert_eq!(run(&["counter", "get", "visits"], 2).1, "3");

    let status = shoal(&["cluster", "status", "--dir", &dir]);
    let (out, err) = text(&status);
    assert!(status.status.success(), "{err}");
    assert!(out.contains("3 live and up"), "{out}");

    let down = shoal(&["cluster", "down", "--dir", &dir, "--purge"]);
    assert!(down.status.success(), "{:?}", text(&down));
    assert!(
        text(&down).0.contains("stopped 3 nodes"),
        "{:?}",
        text(&down)
    );
    let (code, _, err) = run(&["kv", "get", "user-42"], 0);
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("no node answers"), "{err}");
    assert!(!std::path::Path::new(&dir).exists());
}

#[test]
fn cluster_commands_refuse_bad_input_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c").display().to_string();
    let (_, err) = text(&shoal(&["cluster", "up", "--nodes", "0", "--dir", &dir]));
    assert!(err.contains("--nodes must be between 1 and 99"), "{err}");
    let o = shoal(&["cluster", "down", "--dir", &dir]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("no cluster in"), "{:?}", text(&o));
    // A taken port is named, and nothing is started.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let http_port = taken.local_addr().unwrap().port();
    let base = http_port
        .checked_sub(1000)
        .expect("an ephemeral port is above 1000")
        .to_string();
    let o = shoal(&[
        "cluster",
        "up",
        "--nodes",
        "1",
        "--dir",
        &dir,
        "--base-port",
        &base,
    ]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("in use"), "{:?}", text(&o));
    assert!(!std::path::Path::new(&dir).join("cluster.json").exists());
}
