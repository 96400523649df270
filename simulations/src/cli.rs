//! The `shoal-sim` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::membership_only;
use crate::report::{Summary, print_human};
use crate::runner::{self, Bug, RunOptions};
use crate::scenarios;
use crate::sweep::{self, ChildArgs, parse_seeds};

#[derive(Debug, Parser)]
#[command(
    name = "shoal-sim",
    version,
    about = "Deterministic simulation of Shoal clusters: the real node code under partitions, loss, crashes and clock skew, replayable from a seed",
    after_help = "Examples:\n  \
        shoal-sim list\n  \
        shoal-sim run --scenario partition-majority --seed 42\n  \
        shoal-sim run --scenario chaos --seed 7 --nodes 7 --duration 5m --trace chaos-7.trace\n  \
        shoal-sim sweep --scenario all --seeds 1..200 --jobs 2\n  \
        shoal-sim determinism --seeds 1..20\n  \
        shoal-sim run --scenario join --nodes 1000 --membership-only"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one scenario with one seed; exit 0 only if the verdict is PASS.
    Run(RunArgs),
    /// Run scenarios over a range of seeds, one child process per seed.
    Sweep(SweepArgs),
    /// Run each seed twice in separate processes and compare the trace hashes.
    Determinism(DeterminismArgs),
    /// List the scenarios.
    List,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Scenario name (see `shoal-sim list`).
    #[arg(long)]
    pub scenario: String,
    /// The seed: the same seed replays the same run.
    #[arg(long)]
    pub seed: u64,
    /// Number of nodes (default: the scenario's).
    #[arg(long)]
    pub nodes: Option<usize>,
    /// Simulated duration before the heal phase, e.g. 90s or 5m (default: the scenario's).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Write the trace to this file.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Leave individual datagrams out of the trace (drops are still traced).
    #[arg(long)]
    pub no_packet_trace: bool,
    /// Chitchat over simulated datagrams without QUIC, for large clusters (join scenario):
    /// reports gossip rounds until every node knows every other.
    #[arg(long)]
    pub membership_only: bool,
    /// Plant a bug, to show the checkers catch it.
    #[arg(long, value_enum)]
    pub inject_bug: Option<Bug>,
    /// Run without the entity workload (clients asking kv and counter entities).
    #[arg(long)]
    pub no_workload: bool,
    /// Print one JSON object (then the trace hash) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct SweepArgs {
    /// A scenario name, or `all`.
    #[arg(long)]
    pub scenario: String,
    /// Seeds, A..B (both included).
    #[arg(long, value_parser = parse_seeds)]
    pub seeds: std::ops::RangeInclusive<u64>,
    /// Child processes at once (default: the number of CPUs).
    #[arg(long)]
    pub jobs: Option<usize>,
    #[arg(long)]
    pub nodes: Option<usize>,
    #[arg(long)]
    pub duration: Option<String>,
    #[arg(long, value_enum)]
    pub inject_bug: Option<Bug>,
}

#[derive(Debug, clap::Args)]
pub struct DeterminismArgs {
    /// Seeds, A..B (both included).
    #[arg(long, value_parser = parse_seeds)]
    pub seeds: std::ops::RangeInclusive<u64>,
    /// A scenario name, or `all` (each seed runs one scenario, in turn).
    #[arg(long, default_value = "all")]
    pub scenario: String,
    #[arg(long)]
    pub jobs: Option<usize>,
    #[arg(long)]
    pub nodes: Option<usize>,
    #[arg(long)]
    pub duration: Option<String>,
}

fn scenario_names(which: &str) -> anyhow::Result<Vec<String>> {
    if which == "all" {
        return Ok(scenarios::all()
            .iter()
            .map(|s| s.name.to_string())
            .collect());
    }
    anyhow::ensure!(
        scenarios::find(which).is_some(),
        "unknown scenario {which:?}; `shoal-sim list` shows them"
    );
    Ok(vec![which.to_string()])
}

fn jobs(j: Option<usize>) -> usize {
    j.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
}

fn bug_name(b: Option<Bug>) -> Option<String> {
    b.map(|b| {
        clap::ValueEnum::to_possible_value(&b)
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    })
}

pub fn main(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::List => {
            for s in scenarios::all() {
                println!(
                    "{:<20} {} (default {} nodes, {})",
                    s.name,
                    s.about,
                    s.default_nodes,
                    humantime::format_duration(s.default_duration)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => {
            let mut opts = RunOptions::new(&args.scenario, args.seed);
            opts.nodes = args.nodes;
            opts.duration = args.duration;
            opts.trace = args.trace.clone();
            opts.trace_packets = !args.no_packet_trace;
            opts.bug = args.inject_bug;
            opts.workload = !args.no_workload;
            if args.membership_only {
                let r = membership_only::run(opts, membership_only::DEFAULT_MAX_ROUNDS)?;
                if args.json {
                    println!("{}", serde_json::to_string(&r)?);
                } else {
                    println!(
                        "membership-only: {} nodes, seed {}, gossip every {} ms",
                        r.nodes, r.seed, r.gossip_interval_ms
                    );
                    match r.rounds_to_full_knowledge {
                        Some(x) => println!(
                            "every node knew every other after {x:.2} gossip rounds (theory: log3(N) = {:.2})",
                            membership_only::theory_rounds(r.nodes)
                        ),
                        None => println!(
                            "not every node knew every other within {} rounds",
                            membership_only::DEFAULT_MAX_ROUNDS
                        ),
                    }
                    for (p, x) in &r.rounds_by_share {
                        println!("  {p:>3}% of nodes knew everyone after {x:.2} rounds");
                    }
                    println!(
                        "speed: {:.1} simulated s in {:.2} wall s ({:.1}x real time)",
                        r.simulated_secs,
                        r.wall_secs,
                        r.simulated_secs / r.wall_secs.max(1e-9)
                    );
                }
                println!("trace-hash: {}", r.trace_hash);
                return Ok(if r.rounds_to_full_knowledge.is_some() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                });
            }
            let report = runner::run(opts)?;
            if args.json {
                println!("{}", serde_json::to_string(&Summary::from(&report))?);
                println!("trace-hash: {}", report.trace_hash);
            } else {
                let extra = ChildArgs {
                    nodes: args.nodes,
                    duration: args
                        .duration
                        .map(|d| humantime::format_duration(d).to_string()),
                    bug: bug_name(args.inject_bug),
                };
                print_human(&report, &extra.replay_extra());
            }
            Ok(if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Sweep(args) => {
            let binary = std::env::current_exe()?;
            let extra = ChildArgs {
                nodes: args.nodes,
                duration: args.duration,
                bug: bug_name(args.inject_bug),
            };
            let ok = sweep::sweep(
                binary,
                scenario_names(&args.scenario)?,
                args.seeds,
                jobs(args.jobs),
                extra,
            );
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Determinism(args) => {
            let binary = std::env::current_exe()?;
            let extra = ChildArgs {
                nodes: args.nodes,
                duration: args.duration,
                bug: None,
            };
            let ok = sweep::determinism(
                binary,
                scenario_names(&args.scenario)?,
                args.seeds,
                jobs(args.jobs),
                extra,
            )?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
