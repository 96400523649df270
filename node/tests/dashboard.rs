//! The dashboard in a real browser: headless Chromium loads it from a 3-node cluster of real
//! processes, with no console messages (the page logs nothing when all is well), shows the
//! three members up, then shows a killed node as failed. Screenshots are saved under
//! `target/tmp/dashboard/` as test artifacts.
//!
//! Skips (saying so) when no Chromium is installed, unless `SHOAL_REQUIRE_BROWSER=1`, which
//! CI sets after installing it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use shoal::local_cluster::LocalCluster;

const DEADLINE: Duration = Duration::from_secs(30);

fn chromium() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("SHOAL_CHROMIUM") {
        return Some(path.into());
    }
    [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ]
    .into_iter()
    .find_map(|name| {
        let out = Command::new("which").arg(name).output().ok()?;
        out.status
            .success()
            .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    })
}

/// What the browser made of the page: the DOM after the scripts ran, and the console.
struct Load {
    dom: String,
    console: Vec<String>,
}

/// Loads `url` in headless Chromium, lets it run for a few seconds of page time (several
/// refreshes), saves a screenshot to `shot`, and returns the final DOM and console lines.
fn load(browser: &Path, url: &str, shot: &Path) -> Load {
    let profile = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let out = Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                // Containers often have a tiny /dev/shm.
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
                "--window-size=1400,1000",
                "--virtual-time-budget=4000",
                "--enable-logging=stderr",
                "--v=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(url)
            .output()
            .expect("running chromium");
        assert!(out.status.success(), "chromium failed: {out:?}");
        out
    };
    let out = run(&["--dump-dom"]);
    let console = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_string)
        .collect();
    run(&[&format!("--screenshot={}", shot.display())]);
    assert!(shot.exists(), "no screenshot at {}", shot.display());
    Load {
        dom: String::from_utf8_lossy(&out.stdout).into_owned(),
        console,
    }
}

/// `(name, state)` of every member row.
fn rows(dom: &str) -> Vec<(String, String)> {
    dom.split("<tr data-member=\"")
        .skip(1)
        .map(|rest| {
            let name = rest.split('"').next().unwrap().to_string();
            let state = rest
                .split("data-state=\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .unwrap_or_default()
                .to_string();
            (name, state)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_members_and_a_killed_node_as_failed() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var("SHOAL_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "SHOAL_REQUIRE_BROWSER=1 but no chromium found"
        );
        eprintln!("SKIPPED: no Chromium found (install `chromium` or set SHOAL_CHROMIUM)");
        return;
    };
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&artifacts).unwrap();

    let mut c = LocalCluster::in_temp_dir(env!("CARGO_BIN_EXE_shoal")).unwrap();
    c.set_gossip_interval(Duration::from_millis(200));
    c.add_node("n1", &[]).unwrap();
    c.add_node("n2", &["n1"]).unwrap();
    c.add_node("n3", &["n1"]).unwrap();
    for n in ["n1", "n2", "n3"] {
        c.start(n).unwrap();
    }
    c.wait_for("n1", DEADLINE, "3 members up", |i| i.up().len() == 3)
        .await
        .unwrap();
    let http = c.node("n1").unwrap().http;
    let client = reqwest::Client::new();
    for i in 0..50 {
        let url = format!("http://{http}/counter/c{}/add", i % 10);
        let r = client
            .post(&url)
            .body(r#"{"delta":1}"#)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{url}: {}", r.status());
    }
    let url = format!("http://{http}/");

    let page = load(&browser, &url, &artifacts.join("three-up.png"));
    assert!(page.console.is_empty(), "console: {:#?}", page.console);
    assert!(page.dom.contains("data-loaded=\"true\""), "{}", page.dom);
    assert_eq!(
        rows(&page.dom),
        [("n1", "up"), ("n2", "up"), ("n3", "up")].map(|(n, s)| (n.to_string(), s.to_string()))
    );
    assert!(page.dom.contains("epoch "), "{}", page.dom);

    c.kill("n3").await.unwrap();
    c.wait_for("n1", DEADLINE, "n3 reported failed", |i| {
        i.member("n3").is_some_and(|m| !m.live)
    })
    .await
    .unwrap();
    let page = load(&browser, &url, &artifacts.join("one-failed.png"));
    assert!(page.console.is_empty(), "console: {:#?}", page.console);
    let rows = rows(&page.dom);
    assert!(
        rows.contains(&("n3".into(), "failed".into())),
        "rows: {rows:?}"
    );
    assert_eq!(
        rows.iter().filter(|(_, s)| s == "up").count(),
        2,
        "{rows:?}"
    );
    eprintln!("screenshots in {}", artifacts.display());
}
