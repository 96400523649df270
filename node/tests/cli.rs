//! The `shoal` command's answers to bad input: one line that says what to do, exit code
//! non-zero, nothing started.

use std::process::{Command, Output};

fn shoal(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `shoal node --name NAME --listen LISTEN --certs DIR EXTRA...`, which must fail;
/// returns its stderr.
fn node_fails(name: &str, listen: &str, dir: &str, extra: &[&str]) -> String {
    let mut args = vec!["node", "--name", name, "--listen", listen, "--certs", dir];
    args.extend_from_slice(extra);
    let out = shoal(&args);
    assert!(!out.status.success(), "{args:?} must fail");
    stderr(&out)
}

fn certs() -> (tempfile::TempDir, String) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("certs").display().to_string();
    assert!(shoal(&["certs", "init", "--dir", &dir]).status.success());
    let out = shoal(&["certs", "issue", "--dir", &dir, "--name", "n1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    (tmp, dir)
}

#[test]
fn certs_init_and_issue_write_files_with_private_keys_0600() {
    use std::os::unix::fs::PermissionsExt;
    let (_tmp, dir) = certs();
    for (file, mode) in [
        ("ca.pem", 0o644),
        ("ca.key", 0o600),
        ("n1.pem", 0o644),
        ("n1.key", 0o600),
    ] {
        let meta = std::fs::metadata(format!("{dir}/{file}")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{file}");
    }
    let again = shoal(&["certs", "init", "--dir", &dir]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    let bad = shoal(&["certs", "issue", "--dir", &dir, "--name", "not_a_dns_name"]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("invalid node name"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn missing_certificates_say_how_to_make_them() {
    let (_tmp, dir) = certs();
    let err = node_fails("n2", "127.0.0.1:0", &dir, &[]);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("n2.pem") && err.contains("shoal certs issue"),
        "{err}"
    );
}

#[test]
fn untrusted_certificate_is_refused_at_start() {
    let (_tmp, dir) = certs();
    let other = tempfile::tempdir().unwrap();
    let other_dir = other.path().display().to_string();
    assert!(
        shoal(&["certs", "init", "--dir", &other_dir])
            .status
            .success()
    );
    // n1's certificate and key next to a foreign ca.pem.
    std::fs::copy(format!("{dir}/n1.pem"), format!("{other_dir}/n1.pem")).unwrap();
    std::fs::copy(format!("{dir}/n1.key"), format!("{other_dir}/n1.key")).unwrap();
    let err = node_fails("n1", "127.0.0.1:0", &other_dir, &[]);
    assert!(err.contains("not trusted"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let (_tmp, dir) = certs();
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let err = node_fails("n1", &addr, &dir, &[]);
    assert!(err.contains(&addr) && err.contains("port"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http_addr = http.local_addr().unwrap().to_string();
    let err = node_fails("n1", "127.0.0.1:0", &dir, &["--http", &http_addr]);
    assert!(err.contains(&http_addr) && err.contains("HTTP"), "{err}");
}

#[test]
fn bad_seeds_and_addresses_are_refused() {
    let (_tmp, dir) = certs();
    for (seed, expect) in [
        ("127.0.0.1", "no port"),
        ("host:0", "invalid port"),
        ("a b:1", "invalid host"),
    ] {
        let err = node_fails("n1", "127.0.0.1:0", &dir, &["--seeds", seed]);
        assert!(err.contains(expect), "{seed}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    let err = node_fails("n1", "0.0.0.0:0", &dir, &[]);
    assert!(err.contains("--advertise"), "{err}");
    let err = node_fails("n1", "nonsense", &dir, &[]);
    assert!(err.contains("--listen"), "{err}");
}

#[test]
fn status_without_a_node_says_what_to_check() {
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let out = shoal(&["status", "--http", &free]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is a node running"),
        "{}",
        stderr(&out)
    );
}
