//! The web dashboard each node serves at `/` on `--http`: members and their liveness, the
//! configuration epoch and majority, the ring, shards per node, handoffs, recent membership
//! events, and the request rate and latency through this node.
//!
//! The page is three static files compiled into the binary (no build step, nothing fetched
//! from elsewhere); its script polls [`overview`] (`/overview`, JSON) and `/metrics` every
//! second and redraws.

mod overview;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::node::Node;

pub use overview::{Handoff, Overview, OverviewMember, Ring, TimedEvent};

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/dashboard.js");
const STYLE: &str = include_str!("assets/dashboard.css");

/// The dashboard's routes.
pub fn routes() -> Router<Node> {
    Router::new()
        .route("/", get(|| asset("text/html; charset=utf-8", INDEX)))
        .route(
            "/dashboard.js",
            get(|| asset("text/javascript; charset=utf-8", SCRIPT)),
        )
        .route(
            "/dashboard.css",
            get(|| asset("text/css; charset=utf-8", STYLE)),
        )
        .route("/overview", get(overview::overview))
}

async fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}
