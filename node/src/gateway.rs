//! The HTTP gateway to the built-in kinds: `kv` and `counter`, JSON in and out.
//!
//! | route | does |
//! |---|---|
//! | `GET /kv/{key}` | 200 `{"key","value"}`, 404 if the key has no value |
//! | `PUT /kv/{key}` | body: any JSON value; 200 `{"key","value"}` |
//! | `DELETE /kv/{key}` | 200 `{"key","deleted"}`, 404 if there was nothing |
//! | `POST /kv/{key}/cas` | body `{"expected": <json or null>, "new": <json>}`; 200, or 409 with `current` |
//! | `GET /counter/{id}` | 200 `{"id","value"}` |
//! | `POST /counter/{id}/add` | body `{"delta": <i64>}`; 200 `{"id","value"}` |
//!
//! Errors are JSON `{"error": "..."}`: 400 for bad input (with what is wrong), 413 for a
//! body over 1 MiB, 503 when the entity cannot be served now (with the reason: no majority,
//! shard moving, owner unreachable, timeout).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::entity::AskError;
use crate::entity::builtin::{Counter, CounterCommand, Kv, KvCommand, KvReply};
use crate::node::Node;

/// Largest request body the gateway reads.
pub const MAX_BODY: usize = 1024 * 1024;

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn ask_failed(e: AskError) -> Response {
    match e {
        AskError::Rejected(why) => error(StatusCode::BAD_REQUEST, why),
        AskError::Unavailable(why) => error(StatusCode::SERVICE_UNAVAILABLE, why),
        AskError::Timeout(ms) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no reply within {ms} ms: the owner is slow or unreachable"),
        ),
        other => error(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    }
}

fn parse_json(body: &Bytes) -> Result<Value, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("the body is not JSON: {e}"),
        ))
    })
}

fn to_value(text: Option<String>) -> Value {
    text.and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null)
}

pub async fn kv_get(State(node): State<Node>, Path(key): Path<String>) -> Response {
    match node.ask::<Kv>(&key, KvCommand::Get).await {
        Ok(KvReply::Value(Some(v))) => {
            Json(json!({ "key": key, "value": to_value(Some(v)) })).into_response()
        }
        Ok(_) => error(StatusCode::NOT_FOUND, format!("no value for key {key:?}")),
        Err(e) => ask_failed(e),
    }
}

pub async fn kv_put(State(node): State<Node>, Path(key): Path<String>, body: Bytes) -> Response {
    let value = match parse_json(&body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    match node
        .ask::<Kv>(&key, KvCommand::Put(value.to_string()))
        .await
    {
        Ok(KvReply::Value(v)) => Json(json!({ "key": key, "value": to_value(v) })).into_response(),
        Ok(KvReply::CasFailed(_)) => error(StatusCode::INTERNAL_SERVER_ERROR, "unexpected reply"),
        Err(e) => ask_failed(e),
    }
}

pub async fn kv_delete(State(node): State<Node>, Path(key): Path<String>) -> Response {
    match node.ask::<Kv>(&key, KvCommand::Delete).await {
        Ok(KvReply::Value(Some(old))) => {
            Json(json!({ "key": key, "deleted": to_value(Some(old)) })).into_response()
        }
        Ok(_) => error(StatusCode::NOT_FOUND, format!("no value for key {key:?}")),
        Err(e) => ask_failed(e),
    }
}

#[derive(Deserialize)]
struct CasBody {
    expected: Option<Value>,
    new: Value,
}

pub async fn kv_cas(State(node): State<Node>, Path(key): Path<String>, body: Bytes) -> Response {
    let body: CasBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"expected\": <json or null>, \"new\": <json>}}: {e}"),
            );
        }
    };
    let expected = body
        .expected
        .filter(|v| !v.is_null())
        .map(|v| v.to_string());
    let cmd = KvCommand::Cas {
        expected,
        new: body.new.to_string(),
    };
    match node.ask::<Kv>(&key, cmd).await {
        Ok(KvReply::Value(v)) => Json(json!({ "key": key, "value": to_value(v) })).into_response(),
        Ok(KvReply::CasFailed(current)) => (
            StatusCode::CONFLICT,
            Json(json!({
                "error": "compare-and-set failed: the value is not the expected one",
                "current": to_value(current),
            })),
        )
            .into_response(),
        Err(e) => ask_failed(e),
    }
}

pub async fn counter_get(State(node): State<Node>, Path(id): Path<String>) -> Response {
    match node.ask::<Counter>(&id, CounterCommand::Get).await {
        Ok(v) => Json(json!({ "id": id, "value": v })).into_response(),
        Err(e) => ask_failed(e),
    }
}

#[derive(Deserialize)]
struct AddBody {
    delta: i64,
}

pub async fn counter_add(
    State(node): State<Node>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let body: AddBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"delta\": <integer>}}: {e}"),
            );
        }
    };
    match node
        .ask::<Counter>(&id, CounterCommand::Add(body.delta))
        .await
    {
        Ok(v) => Json(json!({ "id": id, "value": v })).into_response(),
        Err(e) => ask_failed(e),
    }
}
