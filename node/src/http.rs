//! The HTTP admin API, served on `--http`: `GET /cluster` and `GET /health`.
//!
//! HTTP is an edge adapter for operators and probes; it is not part of what the simulator
//! runs, so it may open its own TCP listener.

use std::future::Future;
use std::net::SocketAddr;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use shoal_membership::NodeStatus;
use tokio::net::TcpListener;

use crate::api::{ClusterInfo, Health};
use crate::node::Node;

/// The admin routes for `node`.
pub fn router(node: Node) -> Router {
    Router::new()
        .route("/cluster", get(cluster))
        .route("/health", get(health))
        .route("/health/live", get(live))
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

async fn cluster(State(node): State<Node>) -> Json<ClusterInfo> {
    Json(ClusterInfo::from(&node.view()))
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
