//! Many seeds, one child process each: `sweep` (verdicts over a range of seeds) and
//! `determinism` (each seed twice, hashes compared).
//!
//! A child process per seed keeps runs independent: std's hash keys, thread-local RNGs and
//! anything else process-global start fresh, as they do in `shoal-sim run`.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use serde::Deserialize;

use crate::report::replay_command;

/// Parses `A..B` (both included) or a single seed `A`.
pub fn parse_seeds(s: &str) -> Result<RangeInclusive<u64>, String> {
    let bad = || format!("seeds {s:?}: write A..B (both included) or a single number");
    match s.split_once("..") {
        Some((a, b)) => {
            let a: u64 = a.trim().parse().map_err(|_| bad())?;
            let b: u64 = b
                .trim_start_matches('=')
                .trim()
                .parse()
                .map_err(|_| bad())?;
            if a > b {
                return Err(format!("seeds {s:?}: the range is empty"));
            }
            Ok(a..=b)
        }
        None => {
            let a: u64 = s.trim().parse().map_err(|_| bad())?;
            Ok(a..=a)
        }
    }
}

/// Options passed on to every child `run`.
#[derive(Debug, Clone, Default)]
pub struct ChildArgs {
    pub nodes: Option<usize>,
    pub duration: Option<String>,
    pub bug: Option<String>,
}

impl ChildArgs {
    fn args(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(n) = self.nodes {
            v.extend(["--nodes".to_string(), n.to_string()]);
        }
        if let Some(d) = &self.duration {
            v.extend(["--duration".to_string(), d.clone()]);
        }
        if let Some(b) = &self.bug {
            v.extend(["--inject-bug".to_string(), b.clone()]);
        }
        v
    }

    /// The extra flags of the replay command.
    pub fn replay_extra(&self) -> String {
        self.args().join(" ")
    }
}

/// What a child reported (the subset of `report::Summary` the parent needs).
#[derive(Debug, Clone, Deserialize)]
pub struct ChildSummary {
    pub scenario: String,
    pub seed: u64,
    pub passed: bool,
    pub violations: Vec<String>,
    pub heal_agreement_secs: Option<f64>,
    pub convergence_secs: Option<f64>,
    pub speedup: f64,
    pub trace_hash: String,
    /// What the linearizability check covered (absent without a workload).
    #[serde(default)]
    pub history: crate::history::HistoryStats,
}

/// The outcome of one child.
#[derive(Debug, Clone)]
pub struct ChildOutcome {
    pub scenario: String,
    pub seed: u64,
    pub summary: Option<ChildSummary>,
    /// Why there is no summary (crash, bad output), with the end of stderr.
    pub error: Option<String>,
}

impl ChildOutcome {
    pub fn passed(&self) -> bool {
        self.summary.as_ref().is_some_and(|s| s.passed)
    }
}

/// A run that takes longer than this (wall time) is killed and reported as a hang.
const CHILD_LIMIT: std::time::Duration = std::time::Duration::from_secs(600);

/// Runs `cmd` to completion, killing it after `limit`.
fn output_within(
    cmd: &mut Command,
    limit: std::time::Duration,
) -> std::io::Result<std::process::Output> {
    use std::io::Read;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    // Read both pipes on threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let out_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_end(&mut b);
        }
        b
    });
    let err_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_end(&mut b);
        }
        b
    });
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the run hung: killed after {limit:?} of wall time"),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    Ok(std::process::Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    })
}

/// Runs one child `shoal-sim run ... --json`.
pub fn run_child(
    binary: &Path,
    scenario: &str,
    seed: u64,
    extra: &ChildArgs,
    trace: Option<&Path>,
) -> ChildOutcome {
    let mut cmd = Command::new(binary);
    cmd.args([
        "run",
        "--scenario",
        scenario,
        "--seed",
        &seed.to_string(),
        "--json",
    ])
    .args(extra.args());
    if let Some(t) = trace {
        cmd.arg("--trace").arg(t);
    }
    let outcome = |summary, error| ChildOutcome {
        scenario: scenario.to_string(),
        seed,
        summary,
        error,
    };
    let out = match output_within(&mut cmd, CHILD_LIMIT) {
        Ok(o) => o,
        Err(e) => return outcome(None, Some(format!("{}: {e}", binary.display()))),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let first = stdout.lines().next().unwrap_or_default();
    match serde_json::from_str::<ChildSummary>(first) {
        Ok(s) => outcome(Some(s), None),
        Err(_) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            outcome(
                None,
                Some(format!("exit {}: {}", out.status, tail.join(" | "))),
            )
        }
    }
}

/// Runs `jobs` in parallel on `workers` threads, in order of submission.
pub fn parallel<T: Send + 'static, R: Send + 'static>(
    jobs: Vec<T>,
    workers: usize,
    work: impl Fn(T) -> R + Send + Sync + 'static,
) -> Vec<R> {
    let n = jobs.len();
    let queue = Arc::new(Mutex::new(jobs.into_iter().enumerate().collect::<Vec<_>>()));
    queue.lock().unwrap_or_else(|e| e.into_inner()).reverse();
    let results = Arc::new(Mutex::new(BTreeMap::new()));
    let work = Arc::new(work);
    let handles: Vec<_> = (0..workers.max(1))
        .map(|_| {
            let (queue, results, work) = (queue.clone(), results.clone(), work.clone());
            std::thread::spawn(move || {
                loop {
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop();
                    let Some((i, job)) = next else { return };
                    let r = work(job);
                    results
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(i, r);
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    let mut results = results.lock().unwrap_or_else(|e| e.into_inner());
    (0..n).filter_map(|i| results.remove(&i)).collect()
}

/// `shoal-sim sweep`: prints a table per scenario and every failure with its replay command.
/// Returns whether everything passed.
pub fn sweep(
    binary: PathBuf,
    scenarios: Vec<String>,
    seeds: RangeInclusive<u64>,
    jobs: usize,
    extra: ChildArgs,
) -> bool {
    let work: Vec<(String, u64)> = scenarios
        .iter()
        .flat_map(|s| seeds.clone().map(move |seed| (s.clone(), seed)))
        .collect();
    let total = work.len();
    eprintln!("sweep: {total} runs on {jobs} workers");
    let done = Arc::new(Mutex::new(0usize));
    let extra2 = extra.clone();
    let results = parallel(work, jobs, move |(scenario, seed)| {
        let r = run_child(&binary, &scenario, seed, &extra2, None);
        let mut d = done.lock().unwrap_or_else(|e| e.into_inner());
        *d += 1;
        if !r.passed() || (*d).is_multiple_of(50) || *d == total {
            eprintln!(
                "  [{}/{total}] {scenario} seed {seed}: {}",
                *d,
                if r.passed() { "pass" } else { "FAIL" }
            );
        }
        r
    });
    println!();
    println!(
        "{:<20} {:>6} {:>6} {:>6} {:>13} {:>15} {:>10}",
        "scenario", "runs", "pass", "fail", "converge p50", "heal p50/max", "speed p50"
    );
    let mut all_passed = true;
    for scenario in &scenarios {
        let rs: Vec<&ChildOutcome> = results.iter().filter(|r| &r.scenario == scenario).collect();
        let pass = rs.iter().filter(|r| r.passed()).count();
        let sums: Vec<&ChildSummary> = rs.iter().filter_map(|r| r.summary.as_ref()).collect();
        // No figure when no run had a fault-free formation to measure.
        let conv = median(sums.iter().filter_map(|s| s.convergence_secs).collect());
        let conv = if conv.is_nan() {
            "-".to_string()
        } else {
            format!("{conv:.2}s")
        };
        let heal: Vec<f64> = sums.iter().filter_map(|s| s.heal_agreement_secs).collect();
        let heal_max = heal.iter().copied().fold(f64::NAN, f64::max);
        let speed = median(sums.iter().map(|s| s.speedup).collect());
        println!(
            "{:<20} {:>6} {:>6} {:>6} {:>13} {:>7.1}s/{:>5.1}s {:>9.0}x",
            scenario,
            rs.len(),
            pass,
            rs.len() - pass,
            conv,
            median(heal),
            heal_max,
            speed
        );
        all_passed &= pass == rs.len();
    }
    // An entity whose search ran out of steps passed unchecked: say how many there were.
    let histories = results
        .iter()
        .filter_map(|r| r.summary.as_ref())
        .map(|s| &s.history);
    let (entities, undecided) =
        histories.fold((0, 0), |(e, u), h| (e + h.entities, u + h.undecided));
    println!(
        "\nlinearizability: {entities} entity histories checked, {undecided} undecided (search budget exhausted)"
    );
    let failures: Vec<&ChildOutcome> = results.iter().filter(|r| !r.passed()).collect();
    if !failures.is_empty() {
        println!("\n{} failing runs:", failures.len());
        for f in failures {
            println!("- {} seed {}:", f.scenario, f.seed);
            if let Some(s) = &f.summary {
                for v in &s.violations {
                    println!("    {v}");
                }
            }
            if let Some(e) = &f.error {
                println!("    the run crashed: {e}");
            }
            println!(
                "    replay: {}",
                replay_command(&f.scenario, f.seed, &extra.replay_extra())
            );
        }
    }
    all_passed
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `shoal-sim determinism`: each seed twice, in separate processes; hashes must match. On a
/// mismatch, prints the first diverging trace line. Returns whether all matched.
pub fn determinism(
    binary: PathBuf,
    scenarios: Vec<String>,
    seeds: RangeInclusive<u64>,
    jobs: usize,
    extra: ChildArgs,
) -> anyhow::Result<bool> {
    let dir = tempfile::Builder::new()
        .prefix("shoal-sim-determinism-")
        .tempdir()
        .context("creating a directory for traces")?;
    // Each seed runs one scenario: all scenarios are covered across the range.
    let work: Vec<(String, u64, PathBuf)> = seeds
        .map(|seed| {
            let scenario = scenarios[(seed as usize) % scenarios.len()].clone();
            (scenario, seed, dir.path().to_path_buf())
        })
        .collect();
    let results = parallel(work, jobs, move |(scenario, seed, dir)| {
        let a = dir.join(format!("{scenario}-{seed}-a.trace"));
        let b = dir.join(format!("{scenario}-{seed}-b.trace"));
        let first = run_child(&binary, &scenario, seed, &extra, Some(&a));
        let second = run_child(&binary, &scenario, seed, &extra, Some(&b));
        (scenario, seed, first, second, a, b)
    });
    let mut all = true;
    for (scenario, seed, first, second, a, b) in results {
        let (Some(x), Some(y)) = (&first.summary, &second.summary) else {
            all = false;
            println!(
                "{scenario} seed {seed}: a run crashed: {}",
                first.error.or(second.error).unwrap_or_default()
            );
            continue;
        };
        if x.trace_hash == y.trace_hash {
            println!("{scenario} seed {seed}: same trace ({})", x.trace_hash);
        } else {
            all = false;
            println!(
                "{scenario} seed {seed}: DIFFERENT traces ({} vs {})",
                x.trace_hash, y.trace_hash
            );
            match first_difference(&a, &b) {
                Some((line, l, r)) => {
                    println!("  first difference at line {line}:");
                    println!("    run 1: {l}");
                    println!("    run 2: {r}");
                }
                None => println!("  (the trace files are equal; the hash differs)"),
            }
        }
    }
    Ok(all)
}

/// The first line where two trace files differ: (1-based line, left, right).
pub fn first_difference(a: &Path, b: &Path) -> Option<(usize, String, String)> {
    let a = std::fs::read_to_string(a).unwrap_or_default();
    let b = std::fs::read_to_string(b).unwrap_or_default();
    let mut la = a.lines();
    let mut lb = b.lines();
    let mut i = 0;
    loop {
        i += 1;
        match (la.next(), lb.next()) {
            (None, None) => return None,
            (x, y) if x == y => continue,
            (x, y) => {
                return Some((
                    i,
                    x.unwrap_or("<end of trace>").to_string(),
                    y.unwrap_or("<end of trace>").to_string(),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_ranges() {
        assert_eq!(parse_seeds("1..500").unwrap(), 1..=500);
        assert_eq!(parse_seeds("1..=3").unwrap(), 1..=3);
        assert_eq!(parse_seeds("7").unwrap(), 7..=7);
        assert!(parse_seeds("5..1").is_err());
        assert!(parse_seeds("a..b").is_err());
    }

    #[test]
    fn first_difference_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "x\ny\nz\n").unwrap();
        std::fs::write(&b, "x\nY\nz\n").unwrap();
        assert_eq!(
            first_difference(&a, &b),
            Some((2, "y".to_string(), "Y".to_string()))
        );
        std::fs::write(&b, "x\ny\n").unwrap();
        assert_eq!(
            first_difference(&a, &b),
            Some((3, "z".to_string(), "<end of trace>".to_string()))
        );
        assert_eq!(first_difference(&a, &a), None);
    }

    #[test]
    fn parallel_keeps_order() {
        let out = parallel((0..100).collect(), 4, |x: u32| x * 2);
        assert_eq!(out, (0..100).map(|x| x * 2).collect::<Vec<_>>());
    }
}
