//! The HTTP API, served on `--http`: the dashboard (`GET /`, see [`crate::dashboard`]), the
//! admin routes (`GET /cluster`, `GET /shards`, `GET /health`, `GET /metrics`) and the
//! gateway to the built-in kinds (see [`crate::gateway`]).
//!
//! HTTP is an edge adapter for operators and probes; it is not part of what the simulator
//! runs, so it may open its own TCP listener.

use std::future::Future;
use std::net::SocketAddr;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use shoal_membership::NodeStatus;
use tokio::net::TcpListener;

use crate::api::{ClusterInfo, Health, ShardInfo};
use crate::gateway;
use crate::node::Node;

/// Every route for `node`.
pub fn router(node: Node) -> Router {
    crate::dashboard::routes()
        .route("/metrics", get(metrics))
        .route("/cluster", get(cluster))
        .route("/shards", get(shards))
        .route("/health", get(health))
        .route("/health/live", get(live))
        .route(
            "/kv/{key}",
            get(gateway::kv_get)
                .put(gateway::kv_put)
                .delete(gateway::kv_delete),
        )
        .route("/kv/{key}/cas", post(gateway::kv_cas))
        .route("/counter/{id}", get(gateway::counter_get))
        .route("/counter/{id}/add", post(gateway::counter_add))
        .layer(DefaultBodyLimit::max(gateway::MAX_BODY))
        .with_state(node)
}

/// Binds `addr`; fails with a readable error when the port is taken.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen for HTTP on {addr}: {e} (is another process using the port?)"),
        )
    })
}

/// Serves the admin API on `listener` until `shutdown` resolves.
pub async fn serve(
    node: Node,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(node))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Prometheus scrape target (OpenMetrics text; see [`crate::metrics`]).
async fn metrics(State(node): State<Node>) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::metrics::render(&node),
    )
}

async fn cluster(State(node): State<Node>) -> Json<ClusterInfo> {
    let table = node.entities().table();
    Json(cluster_info(&node.view(), table.as_ref().map(|(_, t)| t)))
}

/// `GET /cluster`'s document: `view`, with the shards each node is primary for in `table`.
pub(crate) fn cluster_info(
    view: &shoal_membership::MembershipView,
    table: Option<&shoal_sharding::ShardTable>,
) -> ClusterInfo {
    let mut info = ClusterInfo::from(view);
    if let Some(table) = table {
        info.shards = table
            .primaries_per_member()
            .into_iter()
            .map(|(name, n)| (name.to_string(), n))
            .collect();
    }
    info
}

/// The shard table in use: every shard with its primary and replicas, by node name.
async fn shards(State(node): State<Node>) -> Json<Vec<ShardInfo>> {
    let entities = node.entities();
    let Some((epoch, table)) = entities.table() else {
        return Json(Vec::new());
    };
    let serving: std::collections::BTreeSet<u32> = entities.serving().iter().map(|s| s.0).collect();
    let recovering: std::collections::BTreeSet<u32> =
        entities.recovering().iter().map(|s| s.0).collect();
    let failed: std::collections::BTreeMap<u32, String> = entities
        .failed_shards()
        .into_iter()
        .map(|(s, why)| (s.0, why))
        .collect();
    Json(
        (0..table.shards())
            .map(|s| {
                let shard = shoal_sharding::ShardId(s);
                let replicas: Vec<String> = table.replicas(shard).map(str::to_string).collect();
                let held = replicas.iter().any(|r| r == node.name());
                let here = (held || failed.contains_key(&s)).then(|| {
                    let summary = entities.replica_summary(shard);
                    let state = if failed.contains_key(&s) {
                        "failed"
                    } else if serving.contains(&s) {
                        "serving"
                    } else if recovering.contains(&s) {
                        "recovering"
                    } else {
                        "replica"
                    };
                    crate::api::ReplicaHere {
                        state: state.into(),
                        entities: summary.entities,
                        installed: summary.meta.installed,
                        error: failed.get(&s).cloned(),
                    }
                });
                ShardInfo {
                    shard: s,
                    epoch,
                    primary: replicas.first().cloned().unwrap_or_default(),
                    replicas,
                    here,
                }
            })
            .collect(),
    )
}

/// Ready when this node is `up`: 200; otherwise 503 with the status.
async fn health(State(node): State<Node>) -> (StatusCode, Json<Health>) {
    let view = node.view();
    let status = view
        .member(node.name())
        .map(|m| m.status)
        .unwrap_or(NodeStatus::Joining);
    let code = if status == NodeStatus::Up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(Health {
            node: node.name().to_string(),
            status: status.to_string(),
        }),
    )
}

/// Alive as long as the process answers.
async fn live(State(node): State<Node>) -> Json<Health> {
    Json(Health {
        node: node.name().to_string(),
        status: "alive".into(),
    })
}
