//! Shoal: a peer-to-peer actor mesh over QUIC.
//!
//! This crate is the node users run (`shoal node`) or embed: a [`Node`] owns the QUIC
//! transport and the gossip membership, and exposes the membership view. The HTTP admin API
//! ([`http`]) and the local process cluster ([`local_cluster`]) are edge adapters for
//! operators, demos and real-process tests.
//!
//! Embedding, in short:
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use shoal::{Node, NodeConfig};
//! use shoal_transport::{CertDir, Environment};
//!
//! let env = Environment::real();
//! let identity = CertDir::new("./certs").load_identity("n1", env.clock.as_ref())?;
//! let mut config = NodeConfig::new("n1", "127.0.0.1:7101".parse()?);
//! config.seeds = vec!["127.0.0.1:7102".into()];
//! let node = Node::start(config, identity, env).await?;
//! for member in node.view().members {
//!     println!("{} {} live={}", member.name, member.status, member.live);
//! }
//! node.leave().await;
//! # Ok(()) }
//! ```

pub mod api;
mod builder;
pub mod cli;
mod config;
pub mod dashboard;
pub mod entity;
pub mod gateway;
pub mod http;
pub mod local_cluster;
pub mod logging;
pub mod loopback;
pub mod metrics;
mod node;
pub mod replication;
pub mod storage;

pub use builder::NodeBuilder;
pub use config::NodeConfig;
pub use node::{Node, NodeError};
pub use shoal_membership as membership;
pub use shoal_sharding as sharding;
pub use shoal_transport as transport;
