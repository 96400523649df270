//! The `shoal` command line.

mod certs;
mod client;
mod cluster;
mod demo;
mod node;
mod status;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::logging::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "shoal",
    version,
    about = "Shoal: a peer-to-peer actor mesh over QUIC",
    long_about = "Shoal: a peer-to-peer actor mesh over QUIC.\n\n\
        Nodes join a cluster by gossip through seed addresses, authenticate each other with \
        certificates from one cluster CA, and report membership over HTTP.",
    after_help = "Examples:\n  \
        shoal demo\n  \
        shoal cluster up --nodes 3\n  \
        shoal kv put greeting '\"hello\"' --http 127.0.0.1:8101\n  \
        shoal cluster down\n  \
        shoal certs init --dir ./certs\n  \
        shoal certs issue --dir ./certs --name n1\n  \
        shoal node --name n1 --listen 127.0.0.1:7101 --certs ./certs --data-dir ./data/n1 --http 127.0.0.1:8101\n  \
        shoal node --name n2 --listen 127.0.0.1:7102 --seeds 127.0.0.1:7101 --certs ./certs --data-dir ./data/n2 --http 127.0.0.1:8102\n  \
        shoal status --http 127.0.0.1:8101"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node until SIGINT or SIGTERM (which make it leave the cluster gracefully).
    Node(Box<NodeArgs>),
    /// Create the cluster CA and issue node certificates.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Show a node's view of the cluster: epoch, majority, members, shards per node.
    Status(StatusArgs),
    /// Start, inspect and stop a local cluster of node processes.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Read and write the built-in `kv` kind through any node's HTTP gateway.
    Kv(KvArgs),
    /// Read and add to the built-in `counter` kind through any node's HTTP gateway.
    Counter(CounterArgs),
    /// Run a local 3-node cluster and show membership at work: convergence, failure
    /// detection, rejoin. Needs nothing but this binary.
    Demo,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    shoal node --name n1 --listen 127.0.0.1:7101 --certs ./certs --data-dir ./data/n1 --http 127.0.0.1:8101\n  \
    shoal node --name n2 --listen 0.0.0.0:7100 --advertise 10.0.0.2:7100 --seeds 10.0.0.1:7100,shoal-0.shoal:7100 --certs /etc/shoal --data-dir /var/lib/shoal")]
pub struct NodeArgs {
    /// Node name: a DNS-style name (letters, digits, '-'), the SAN of the node's certificate.
    #[arg(long)]
    pub name: String,
    /// UDP address for QUIC (gossip and messages), e.g. 127.0.0.1:7101 or 0.0.0.0:7100.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Address other nodes use to reach this one, if not --listen (required with 0.0.0.0).
    #[arg(long)]
    pub advertise: Option<SocketAddr>,
    /// Nodes to join through, comma-separated IP:PORT or HOST:PORT. Omit on the first node.
    #[arg(long, value_delimiter = ',')]
    pub seeds: Vec<String>,
    /// Directory with ca.pem, NAME.pem and NAME.key (see `shoal certs`).
    #[arg(long)]
    pub certs: PathBuf,
    /// Cluster id: nodes with different ids never merge.
    #[arg(long, default_value = "shoal")]
    pub cluster_id: String,
    /// HTTP address for the admin API (/cluster, /health), e.g. 127.0.0.1:8101.
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// Time between gossip rounds.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    pub gossip_interval: Duration,
    /// Failure-detector threshold: higher means slower detection and fewer false alarms.
    #[arg(long, default_value_t = 8.0)]
    pub phi_threshold: f64,
    /// Directory for durable state: membership promises and the committed configuration
    /// (created if needed; one node per directory). Without it, a restarted node forgets
    /// them and cannot vote in its previous place.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Found a new cluster if this node has no stored configuration (implied when it has no
    /// seeds). Never give it to a node that should join an existing cluster.
    #[arg(long)]
    pub bootstrap: bool,
    /// Remove a member from the configuration once it has been reported dead this long.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub down_after: Duration,
    /// Shard count when this node founds a cluster; must match the cluster's otherwise.
    #[arg(long, default_value_t = shoal_sharding::DEFAULT_SHARDS)]
    pub shards: u32,
    /// Copies of each shard, the primary included, when this node founds a cluster (a
    /// joining node takes the cluster's). A write is acknowledged once a majority of them
    /// stored it, so 3 survive the loss of any one.
    #[arg(long, default_value_t = 3)]
    pub replicas: u32,
    /// Log format on stderr. RUST_LOG filters (default: info).
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create a cluster CA: DIR/ca.pem and DIR/ca.key (mode 0600).
    Init {
        /// Directory to create the CA in.
        #[arg(long)]
        dir: PathBuf,
        /// A label for the CA's common name.
        #[arg(long, default_value = "shoal")]
        label: String,
    },
    /// Issue a node certificate signed by the CA: DIR/NAME.pem and DIR/NAME.key (mode 0600).
    Issue {
        /// Directory holding the CA.
        #[arg(long)]
        dir: PathBuf,
        /// Node name (the certificate's SAN).
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    shoal status --http 127.0.0.1:8101\n  \
    shoal status --http 127.0.0.1:8101 --json | jq .epoch")]
pub struct StatusArgs {
    /// HTTP admin address of any node.
    #[arg(long, env = "SHOAL_HTTP", default_value = "127.0.0.1:8101")]
    pub http: SocketAddr,
    /// Print the JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Start N nodes on loopback with generated certificates; they keep running after this
    /// command returns.
    Up(ClusterUpArgs),
    /// Stop the nodes gracefully (SIGTERM, then SIGKILL after --timeout).
    Down(ClusterDownArgs),
    /// The local cluster's nodes and one node's view of the cluster.
    Status(ClusterStatusArgs),
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    shoal cluster up --nodes 3\n  \
    shoal cluster up --nodes 5 --dir /tmp/shoal5 --base-port 9101\n\n\
    Node i (1-based) listens for QUIC on UDP BASE_PORT+i-1 and for HTTP on TCP BASE_PORT+1000+i-1.")]
pub struct ClusterUpArgs {
    /// How many nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: u32,
    /// Directory for certificates, data, logs and the cluster's state file.
    #[arg(long, default_value = "shoal-cluster")]
    pub dir: PathBuf,
    /// QUIC port of the first node.
    #[arg(long, default_value_t = 7101)]
    pub base_port: u16,
    /// Copies of each shard (default: the node's default, 3).
    #[arg(long)]
    pub replicas: Option<u32>,
    /// Gossip interval of every node.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    pub gossip_interval: Duration,
    /// Seconds to wait until every node sees every node live and up.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    shoal cluster down\n  \
    shoal cluster down --dir /tmp/shoal5 --purge")]
pub struct ClusterDownArgs {
    #[arg(long, default_value = "shoal-cluster")]
    pub dir: PathBuf,
    /// Also delete the directory: certificates, data and logs.
    #[arg(long)]
    pub purge: bool,
    /// Seconds to wait for the graceful leave before killing a node.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct ClusterStatusArgs {
    #[arg(long, default_value = "shoal-cluster")]
    pub dir: PathBuf,
}

/// Which node's gateway the `kv` and `counter` commands use.
#[derive(Debug, Args)]
pub struct GatewayAddr {
    /// HTTP address of any node.
    #[arg(
        long,
        global = true,
        env = "SHOAL_HTTP",
        default_value = "127.0.0.1:8101"
    )]
    pub http: SocketAddr,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    shoal kv put user-42 '{\"name\":\"ada\"}'\n  \
    shoal kv put greeting hello          # not JSON: stored as the string \"hello\"\n  \
    shoal kv get user-42 --http 127.0.0.1:8102\n  \
    shoal kv cas greeting --expected hello --new bye\n  \
    shoal kv delete user-42\n\n\
    Exit codes: 0 done, 1 not found or compare-and-set failed, 2 unavailable now (retry),\n\
    3 bad input, 4 no node answers.")]
pub struct KvArgs {
    #[command(flatten)]
    pub gateway: GatewayAddr,
    #[command(subcommand)]
    pub command: KvCommand,
}

#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Print the key's value (JSON).
    Get { key: String },
    /// Set the key's value: JSON, or any other text as a JSON string.
    Put { key: String, value: String },
    /// Remove the key; prints the value it had.
    Delete { key: String },
    /// Set the key to NEW only if its value is EXPECTED (omit --expected for "no value").
    Cas {
        key: String,
        #[arg(long)]
        expected: Option<String>,
        #[arg(long)]
        new: String,
    },
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    shoal counter add visits 1\n  \
    shoal counter add visits -3\n  \
    shoal counter get visits --http 127.0.0.1:8103")]
pub struct CounterArgs {
    #[command(flatten)]
    pub gateway: GatewayAddr,
    #[command(subcommand)]
    pub command: CounterCommand,
}

#[derive(Debug, Subcommand)]
pub enum CounterCommand {
    /// Print the counter's value.
    Get { id: String },
    /// Add DELTA (may be negative) and print the new value.
    Add {
        id: String,
        #[arg(allow_negative_numbers = true)]
        delta: i64,
    },
}

/// A failure with its own exit code (the default for errors is 1).
#[derive(Debug)]
pub struct Exit {
    pub code: u8,
    pub message: String,
}

impl Exit {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

/// Runs a parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Node(args) => node::run(*args).await,
        Command::Certs(cmd) => certs::run(cmd),
        Command::Status(args) => status::run(args).await,
        Command::Cluster(ClusterCommand::Up(args)) => cluster::up(args).await,
        Command::Cluster(ClusterCommand::Down(args)) => cluster::down(args).await,
        Command::Cluster(ClusterCommand::Status(args)) => cluster::status(args).await,
        Command::Kv(args) => client::kv(args.gateway.http, args.command).await,
        Command::Counter(args) => client::counter(args.gateway.http, args.command).await,
        Command::Demo => demo::run().await,
    }
}
