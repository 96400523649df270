//! `shoal-bench`: Shoal's figures next to baselines measured in the same run.
//!
//! ```text
//! shoal-bench run [--quick] [--only NAME] [--json FILE]
//! shoal-bench list
//! ```

mod measure;
mod report;
mod scenarios;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};

use crate::report::{Machine, Report};
use crate::scenarios::{ALL, Ctx};

#[derive(Parser)]
#[command(
    name = "shoal-bench",
    about = "Shoal measured side by side against its limits and its peers, in one run",
    after_help = "Examples:\n  shoal-bench run --quick --json bench.json\n  shoal-bench run --only local-tell\n  shoal-bench list"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the scenarios and prints the table (figure, Shoal, baseline, ratio).
    Run {
        /// Small sizes and one repetition: a smoke run in well under 3 minutes.
        #[arg(long)]
        quick: bool,
        /// Runs only these scenarios (repeatable; see `list`).
        #[arg(long, value_name = "NAME")]
        only: Vec<String>,
        /// Also writes the report as JSON to this file.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// Lists the scenarios and what each measures.
    List,
    /// Checks a JSON report: every scenario (or those given) produced figures, none failed,
    /// every value is a finite, non-negative number. CI runs it after `run --quick`.
    Check {
        /// The report written by `run --json`.
        file: PathBuf,
        /// The scenarios the run was limited to (default: all).
        #[arg(long, value_name = "NAME")]
        only: Vec<String>,
    },
}

fn main() -> ExitCode {
    // The nodes' logs, on stderr, only when RUST_LOG asks for them.
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    let cli = Cli::parse();
    match cli.command {
        Command::List => {
            for s in ALL {
                println!("{:<20} {}", s.name, s.what);
            }
            ExitCode::SUCCESS
        }
        Command::Check { file, only } => match check(&file, &only) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        },
        Command::Run { quick, only, json } => match run(quick, &only, json) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        },
    }
}

fn check(file: &std::path::Path, only: &[String]) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    let report: Report = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{} is not a shoal-bench report: {e}", file.display()))?;
    let expected: Vec<&str> = if only.is_empty() {
        ALL.iter().map(|s| s.name).collect()
    } else {
        only.iter().map(String::as_str).collect()
    };
    let problems = report.problems(&expected);
    anyhow::ensure!(problems.is_empty(), "{}", problems.join("\n"));
    println!(
        "{}: {} figures from {} scenarios, all sane",
        file.display(),
        report.rows.len(),
        expected.len()
    );
    Ok(())
}

/// Runs the chosen scenarios; `Ok(false)` if any of them failed to run.
fn run(quick: bool, only: &[String], json: Option<PathBuf>) -> anyhow::Result<bool> {
    for name in only {
        anyhow::ensure!(
            ALL.iter().any(|s| s.name == name),
            "unknown scenario {name:?}; `shoal-bench list` shows them: {}",
            ALL.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
        );
    }
    let ctx = Ctx { quick };
    let started = Instant::now();
    let started_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut report = Report {
        quick,
        machine: Machine::this(),
        started_unix_s,
        wall_secs: 0.0,
        rows: Vec::new(),
        failed: Vec::new(),
    };
    for s in ALL
        .iter()
        .filter(|s| only.is_empty() || only.iter().any(|o| o == s.name))
    {
        eprintln!("== {} ({})", s.name, s.what);
        let t = Instant::now();
        match (s.run)(&ctx) {
            Ok(rows) => {
                eprint!("{}", report::table(&rows));
                report.rows.extend(rows);
            }
            Err(e) => {
                eprintln!("   failed: {e:#}");
                report.failed.push((s.name.to_string(), format!("{e:#}")));
            }
        }
        eprintln!("   ({:.1}s)", t.elapsed().as_secs_f64());
    }
    report.wall_secs = started.elapsed().as_secs_f64();
    println!("{}", report::table(&report.rows));
    println!(
        "{} rows in {:.0}s on {} CPUs ({}{})",
        report.rows.len(),
        report.wall_secs,
        report.machine.cpus,
        if quick { "quick" } else { "full" },
        if report.failed.is_empty() {
            String::new()
        } else {
            format!(
                "; failed: {}",
                report
                    .failed
                    .iter()
                    .map(|f| f.0.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(report.failed.is_empty())
}
