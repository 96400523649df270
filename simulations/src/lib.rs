//! Shoal's deterministic simulator.
//!
//! The code under test is the production code: `shoal::Node` with its QUIC transport
//! (quinn, rustls) and chitchat membership, unmodified. The simulator supplies only what the
//! node's `Environment` seams take: UDP sockets on a simulated network ([`net`], [`socket`]),
//! a clock with a per-node offset ([`clock`]) and a seeded RNG. Everything runs on one
//! single-threaded tokio runtime with paused time, so simulated minutes pass in wall
//! milliseconds and the same seed replays the same run, byte for byte in its [`trace`].
//!
//! A run follows a [`scenario`] (a seeded fault schedule), checks safety continuously and
//! liveness after a heal phase ([`checker`]), and reports a verdict ([`runner`]).

pub mod certs;
pub mod checker;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config_checker;
pub mod determinism;
pub mod gossip_datagrams;
pub mod history;
pub mod incarnation;
pub mod linearizability;
pub mod log_time;
pub mod membership_only;
pub mod net;
pub mod replica_checker;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod scenarios;
pub mod socket;
pub mod sweep;
pub mod trace;
pub mod workload;
