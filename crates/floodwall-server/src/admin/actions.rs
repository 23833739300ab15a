//! The operator's actions on the admin listener: block and unblock a key, penalise and reward
//! it, and keep the allow and deny lists. Each needs the admin token (when one is set), is
//! logged with the token's name and counted in `floodwall_admin_actions_total`.
//!
//! | method and path | what |
//! |---|---|
//! | `GET /v1/blocks` | the blocks in force |
//! | `PUT /v1/blocks/{policy}/{key}` | block, body `{"duration": "1h"}` |
//! | `DELETE /v1/blocks/{policy}/{key}` | unblock (204) |
//! | `POST /v1/limits/{policy}/{key}/penalty` | consume, body `{"units": N}` |
//! | `POST /v1/limits/{policy}/{key}/reward` | refund, body `{"units": N}` |
//! | `GET /v1/lists` | both lists |
//! | `PUT /v1/lists/{allow\|deny}/{entry}` | list a key, address or CIDR (`%2F` for its `/`) |
//!
//! Keys are percent-encoded in paths and shown percent-encoded the same way (`key`, beside
//! `shown`, the key for a person), so any key shown can be acted on as it is.
//! | `DELETE /v1/lists/{allow\|deny}/{entry}` | take it off (204) |

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use floodwall::client_key::{Escaped, percent_decoded};
use floodwall::controls::{Block, ListEntry, Listed};
use floodwall::{List, parse_period};
use http::{HeaderMap, Method, StatusCode, Uri};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AdminState, key_fields, policy_and_key, two_segments};
use crate::check::single_decision_body;
use crate::error::ApiError;

pub(super) fn routes() -> Router<Arc<AdminState>> {
    Router::new()
        .route("/v1/blocks", get(blocks).fallback(crate::only("GET, HEAD")))
        .route(
            "/v1/blocks/{policy}/{key}",
            put(block)
                .delete(block)
                .fallback(crate::only("PUT, DELETE")),
        )
        .route(
            "/v1/limits/{policy}/{key}/penalty",
            post(penalty).fallback(crate::only("POST")),
        )
        .route(
            "/v1/limits/{policy}/{key}/reward",
            post(reward).fallback(crate::only("POST")),
        )
        .route("/v1/lists", get(lists).fallback(crate::only("GET, HEAD")))
        .route(
            "/v1/lists/{list}/{entry}",
            put(list).delete(list).fallback(crate::only("PUT, DELETE")),
        )
}

/// Logs and counts an action `by` made on `key` under `policy` (or on a list entry).
pub(super) fn record(by: &str, action: &'static str, target: &str, key: &[u8]) {
    tracing::info!(
        by,
        action,
        target,
        key = %Escaped(key),
        "admin action"
    );
    metrics::counter!("floodwall_admin_actions_total", "action" => action, "by" => by.to_owned())
        .increment(1);
}

/// A JSON body of type `T`; `what` says what is expected.
fn body<T: for<'de> Deserialize<'de>>(bytes: &Bytes, what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|error| ApiError::BadAction(format!("{what}: {error}")))
}

pub(super) fn block_json(block: &Block, now_ms: u64) -> Value {
    let (key, shown) = key_fields(&block.key);
    json!({
        "policy": block.policy,
        "key": key,
        "shown": shown,
        "until_ms": block.until_ms,
        "remaining_ms": block.until_ms.saturating_sub(now_ms),
        "by": block.made.by,
        "at_ms": block.made.at_ms,
    })
}

fn listed_json(listed: &Listed) -> Value {
    let (entry, shown) = key_fields(&listed.entry.to_bytes());
    json!({
        "entry": entry,
        "shown": shown,
        "kind": match listed.entry {
            ListEntry::Key(_) => "key",
            ListEntry::Network(_) => "network",
        },
        "by": listed.made.by,
        "at_ms": listed.made.at_ms,
        "from_config": listed.from_config,
    })
}

async fn blocks(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.caller(&headers)?;
    let blocks = state.limiter.blocks();
    let now_ms = now_ms();
    let blocks: Vec<Value> = blocks.iter().map(|b| block_json(b, now_ms)).collect();
    Ok(axum::Json(json!({ "blocks": blocks })).into_response())
}

/// The wall clock in milliseconds since the Unix epoch, as blocks are kept.
pub(super) fn now_ms() -> u64 {
    use floodwall::Clock;
    floodwall::SystemClock::new().now_us() / 1_000
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BlockRequest {
    duration: String,
}

/// `PUT` blocks the key for the body's `duration`; `DELETE` unblocks it.
async fn block(
    State(state): State<Arc<AdminState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let (policy, key) = policy_and_key(&uri, "/v1/blocks/{policy}/{key}")?;
    let (policy, caller) = state.authorised_policy(&headers, &policy)?;
    if method == Method::DELETE {
        state
            .limiter
            .unblock(&policy, &key)
            .await
            .map_err(ApiError::Control)?;
        record(&caller, "unblock", policy.name(), &key);
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let request: BlockRequest = body(&bytes, "expected {\"duration\": \"1h\"}")?;
    let duration = parse_period(&request.duration).map_err(|_| {
        ApiError::BadAction(format!(
            "duration {:?} is not a duration: a whole number and a unit, e.g. \"30s\", \"15m\", \"1h\", \"1d\"",
            request.duration
        ))
    })?;
    let block = state
        .limiter
        .block(&policy, &key, duration, &caller)
        .await
        .map_err(ApiError::Control)?;
    record(&caller, "block", policy.name(), &key);
    Ok(axum::Json(block_json(&block, block.made.at_ms)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnitsRequest {
    units: u64,
}

async fn penalty(
    state: State<Arc<AdminState>>,
    uri: Uri,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    adjust(state, uri, headers, bytes, "penalise").await
}

async fn reward(
    state: State<Arc<AdminState>>,
    uri: Uri,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    adjust(state, uri, headers, bytes, "reward").await
}

/// Consumes (`penalise`) or refunds (`reward`) the body's `units`, at most the policy's
/// capacity; answers the key's state afterwards.
async fn adjust(
    State(state): State<Arc<AdminState>>,
    uri: Uri,
    headers: HeaderMap,
    bytes: Bytes,
    action: &'static str,
) -> Result<Response, ApiError> {
    let (policy, key) = policy_and_key(&uri, "/v1/limits/{policy}/{key}/…")?;
    let (policy, caller) = state.authorised_policy(&headers, &policy)?;
    let request: UnitsRequest = body(&bytes, "expected {\"units\": N}, N ≥ 1")?;
    if request.units == 0 {
        return Err(ApiError::BadAction("units must be at least 1".to_owned()));
    }
    let done = match action {
        "penalise" => state.limiter.penalise(&policy, &key, request.units).await,
        _ => state.limiter.reward(&policy, &key, request.units).await,
    };
    let verdict = done.map_err(|error| ApiError::Limiter(error, vec![policy.clone()]))?;
    record(&caller, action, policy.name(), &key);
    // The key's state now, as a peek reports it.
    let peeked = state.limiter.peek(&policy, &key).await.unwrap_or(verdict);
    Ok(axum::Json(single_decision_body(&peeked)).into_response())
}

async fn lists(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.caller(&headers)?;
    let entries = state.limiter.lists();
    let of = |list: List| -> Vec<Value> {
        entries
            .iter()
            .filter(|listed| listed.list == list)
            .map(listed_json)
            .collect()
    };
    Ok(axum::Json(json!({ "allow": of(List::Allow), "deny": of(List::Deny) })).into_response())
}

/// `PUT` lists the entry; `DELETE` takes it off.
async fn list(
    State(state): State<Arc<AdminState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (list, entry) = two_segments(&uri, "/v1/lists/{list}/{entry}")?;
    let caller = state.caller(&headers)?;
    let list = List::parse(list).ok_or_else(|| {
        ApiError::BadAction(format!("no list {list:?}: the lists are allow and deny"))
    })?;
    let entry = percent_decoded(entry);
    if entry.is_empty() {
        return Err(ApiError::BadAction("the entry is empty".to_owned()));
    }
    // Bytes that are not UTF-8 can only be a key.
    let parsed = match std::str::from_utf8(&entry) {
        Ok(text) => {
            ListEntry::parse(text).map_err(|error| ApiError::BadAction(error.to_string()))?
        }
        Err(_) => ListEntry::Key(entry.clone()),
    };
    let action = match (method == Method::DELETE, list) {
        (true, List::Allow) => "unallow",
        (true, List::Deny) => "undeny",
        (false, List::Allow) => "allow",
        (false, List::Deny) => "deny",
    };
    if method == Method::DELETE {
        state
            .limiter
            .unlist(list, &parsed)
            .await
            .map_err(ApiError::Control)?;
        record(&caller, action, list.as_str(), &entry);
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let listed = state
        .limiter
        .list(list, parsed, &caller)
        .await
        .map_err(ApiError::Control)?;
    record(&caller, action, list.as_str(), &entry);
    Ok(axum::Json(listed_json(&listed)).into_response())
}
