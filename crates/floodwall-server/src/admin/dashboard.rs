//! The live dashboard: `GET /` on the admin listener, a page and its script and style embedded
//! in the binary, and `GET /v1/dashboard`, the snapshot the page polls. Nothing runs for it
//! while nobody looks: a snapshot is made only when asked for, from counters the service keeps
//! anyway, and the page stops polling while it is hidden.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use floodwall::stats::StorageStats;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue};
use serde_json::{Value, json};

use super::AdminState;
use crate::config::{KeyPart, RouteAction};
use crate::error::ApiError;
use crate::telemetry::prometheus;

const PAGE: &str = include_str!("../../assets/dashboard.html");
const SCRIPT: &str = include_str!("../../assets/dashboard.js");
const STYLE: &str = include_str!("../../assets/dashboard.css");

/// The keys per policy a snapshot lists.
const OFFENDERS_PER_POLICY: usize = 10;

pub(super) fn routes() -> Router<Arc<AdminState>> {
    let asset = |body: &'static str, kind: &'static str| {
        move |state: State<Arc<AdminState>>, headers: HeaderMap| async move {
            asset(state, headers, body, kind)
        }
    };
    Router::new()
        .route(
            "/",
            get(asset(PAGE, "text/html; charset=utf-8")).fallback(crate::only("GET, HEAD")),
        )
        .route(
            "/dashboard.js",
            get(asset(SCRIPT, "text/javascript; charset=utf-8")).fallback(crate::only("GET, HEAD")),
        )
        .route(
            "/dashboard.css",
            get(asset(STYLE, "text/css; charset=utf-8")).fallback(crate::only("GET, HEAD")),
        )
        // Browsers ask for one; there is none, and no error either.
        .route(
            "/favicon.ico",
            get(|| async { http::StatusCode::NO_CONTENT }).fallback(crate::only("GET, HEAD")),
        )
        .route(
            "/v1/dashboard",
            get(snapshot).fallback(crate::only("GET, HEAD")),
        )
}

/// One embedded file, behind the admin token. The page runs only its own script and style
/// (every key it shows comes from clients, so nothing it shows may run) and may not be framed
/// (its buttons act).
fn asset(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    body: &'static str,
    kind: &'static str,
) -> Result<Response, ApiError> {
    state.caller(&headers)?;
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; frame-ancestors 'none'; form-action 'none'",
        ),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `floodwall_decisions_total` by policy and outcome, read back from the metrics the service
/// keeps for `/metrics`.
fn decision_totals() -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut totals: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let Some(handle) = prometheus() else {
        return totals;
    };
    let text = handle.render();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("floodwall_decisions_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
            let end = labels[start..].find('"')? + start;
            Some(labels[start..end].to_owned())
        };
        let (Some(policy), Some(outcome), Ok(value)) = (
            label("policy"),
            label("outcome"),
            value.trim().parse::<f64>(),
        ) else {
            continue;
        };
        // Counters render as whole numbers; the cast only drops a ".0".
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let value = value as u64;
        *totals
            .entry(policy)
            .or_default()
            .entry(outcome)
            .or_default() += value;
    }
    totals
}

fn key_text(parts: &[KeyPart]) -> String {
    let parts: Vec<String> = parts
        .iter()
        .map(|part| match part {
            KeyPart::Ip => "ip".to_owned(),
            KeyPart::Header(name) => format!("header:{name}"),
            KeyPart::Query(name) => format!("query:{name}"),
            KeyPart::Global => "global".to_owned(),
        })
        .collect();
    parts.join("+")
}

/// `GET /v1/dashboard`: what the page shows, now.
async fn snapshot(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.caller(&headers)?;
    let config = Arc::clone(&state.config.borrow());
    let totals = decision_totals();
    let policies: Vec<Value> = config
        .policies
        .iter()
        .map(|policy| {
            let offenders: Vec<Value> = state
                .limiter
                .top_offenders(policy.name(), OFFENDERS_PER_POLICY)
                .into_iter()
                .map(|o| {
                    let (key, shown) = super::key_fields(&o.key);
                    json!({ "key": key, "shown": shown, "denied": o.count })
                })
                .collect();
            json!({
                "name": policy.name(),
                "algorithm": policy.algorithm().as_str(),
                "limit": policy.limit(),
                "period_ms": u64::try_from(policy.period().as_millis()).unwrap_or(u64::MAX),
                "mode": if policy.mode() == floodwall::Mode::Shadow { "shadow" } else { "enforce" },
                "decisions": totals.get(policy.name()).cloned().unwrap_or_default(),
                "offenders": offenders,
            })
        })
        .collect();
    let routes: Vec<Value> = config
        .routes
        .iter()
        .map(|route| {
            let action = match &route.action {
                RouteAction::Respond { status, .. } => format!("respond {}", status.as_u16()),
                RouteAction::Upstream { uri, .. } => format!("upstream {uri}"),
            };
            json!({
                "match": route.matcher.label(),
                "key": key_text(&route.key),
                "policies": route.policies,
                "action": action,
            })
        })
        .collect();
    let stats = state.limiter.stats();
    let mut store = json!({
        "url": config.storage.url(),
        "fail_open": stats.fail_open,
        "fail_closed": stats.fail_closed,
        "local": stats.local,
    });
    match state.limiter.store().stats() {
        StorageStats::Memory(memory) => {
            store["kind"] = json!("memory");
            store["keys"] = json!(memory.keys);
            store["max_keys"] = json!(memory.max_keys);
            store["evicted"] = json!(memory.evicted);
        }
        StorageStats::Redis(redis) => {
            store["kind"] = json!("redis");
            store["open_breakers"] = json!(redis.open_breakers);
            store["breakers"] = json!(redis.breakers);
            if let Some(master) = crate::health::sentinel_master(&state.limiter) {
                store["master"] = master;
            }
        }
        _ => {}
    }
    let now_ms = super::actions::now_ms();
    let blocks: Vec<Value> = state
        .limiter
        .blocks()
        .iter()
        .map(|block| super::actions::block_json(block, now_ms))
        .collect();
    Ok(axum::Json(json!({
        "now_ms": now_ms,
        "window_s": floodwall::Limiter::OFFENDER_WINDOW_SECONDS,
        "policies": policies,
        "routes": routes,
        "store": store,
        "blocks": blocks,
        "lists": state.limiter.lists().len(),
    }))
    .into_response())
}
