//! The admin listener: `/metrics` (Prometheus text), the limits API, top offenders and the
//! operator's actions, on its own socket so the main listener never exposes them.

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use floodwall::{Limiter, Policy, StorageStats};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use tokio::sync::watch;

mod actions;
mod dashboard;

use crate::check::single_decision_body;
use crate::config::Config;
use crate::error::ApiError;
use crate::telemetry::prometheus;

struct AdminState {
    limiter: Limiter,
    /// The live configuration, replaced on reload.
    config: watch::Receiver<Arc<Config>>,
}

impl AdminState {
    /// The name of the caller, once `headers` carry an admin token (when one is set): 401
    /// without one.
    fn caller(&self, headers: &HeaderMap) -> Result<String, ApiError> {
        let config = Arc::clone(&self.config.borrow());
        crate::auth::admin_caller(headers, config.admin.as_ref())
    }

    /// The configured policy `name` and the caller's name, once `headers` carry an admin
    /// token: 401 without it, 404 for a policy not configured.
    fn authorised_policy(
        &self,
        headers: &HeaderMap,
        name: &str,
    ) -> Result<(Policy, String), ApiError> {
        let config = Arc::clone(&self.config.borrow());
        let caller = crate::auth::admin_caller(headers, config.admin.as_ref())?;
        let policy = config
            .policy(name)
            .cloned()
            .ok_or_else(|| ApiError::unknown_policy(name, &config.policies))?;
        Ok((policy, caller))
    }
}

pub(crate) fn app(config: watch::Receiver<Arc<Config>>, limiter: Limiter) -> Router {
    let state = Arc::new(AdminState { limiter, config });
    Router::new()
        .route("/metrics", get(metrics).fallback(crate::only("GET, HEAD")))
        .route(
            "/v1/limits/{policy}/{key}",
            get(limits)
                .delete(limits)
                .fallback(crate::only("GET, HEAD, DELETE")),
        )
        .route(
            "/v1/offenders/{policy}",
            get(offenders).fallback(crate::only("GET, HEAD")),
        )
        .merge(actions::routes())
        .merge(dashboard::routes())
        .fallback(crate::no_route)
        .with_state(state)
}

/// The most keys `GET /v1/offenders/{policy}` lists.
const MOST_OFFENDERS: usize = 50;

/// `GET /v1/offenders/{policy}`: the keys the policy denied most over the last minutes, with
/// each count's possible overcount. Needs the token when one is configured.
async fn offenders(
    State(state): State<Arc<AdminState>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path(policy) = path.map_err(|_| ApiError::Status {
        status: StatusCode::BAD_REQUEST,
        title: "Bad path",
        detail: "the policy in /v1/offenders/{policy} must be percent-encoded UTF-8",
    })?;
    let (policy, _) = state.authorised_policy(&headers, &policy)?;
    let offenders: Vec<_> = state
        .limiter
        .top_offenders(policy.name(), MOST_OFFENDERS)
        .into_iter()
        .map(|offender| {
            serde_json::json!({
                "key": String::from_utf8_lossy(&offender.key),
                "denied": offender.count,
                "error": offender.error,
            })
        })
        .collect();
    Ok(axum::Json(serde_json::json!({
        "policy": policy.name(),
        "window_s": Limiter::OFFENDER_WINDOW_SECONDS,
        "offenders": offenders,
    }))
    .into_response())
}

/// The store's own figures, as gauges: the memory store's keys, the Redis store's breakers.
fn store_gauges(stats: StorageStats) {
    match stats {
        StorageStats::Memory(stats) => {
            metrics::gauge!("floodwall_memory_keys").set(stats.keys as f64);
            metrics::gauge!("floodwall_memory_max_keys").set(stats.max_keys as f64);
            metrics::counter!("floodwall_memory_reclaimed_total").absolute(stats.reclaimed);
            metrics::counter!("floodwall_memory_evicted_total").absolute(stats.evicted);
        }
        StorageStats::Redis(stats) => {
            metrics::gauge!("floodwall_breaker_open").set(stats.open_breakers as f64);
            metrics::gauge!("floodwall_breakers").set(stats.breakers as f64);
            metrics::counter!("floodwall_store_abandoned_total").absolute(stats.abandoned);
            metrics::counter!("floodwall_given_back_total").absolute(stats.given_back);
        }
        _ => {}
    }
}

async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    let stats = state.limiter.stats();
    for (kind, value) in [
        ("fail_open", stats.fail_open),
        ("fail_closed", stats.fail_closed),
        ("local", stats.local),
    ] {
        metrics::counter!("floodwall_fallbacks_total", "kind" => kind).absolute(value);
    }
    for (kind, value) in stats.store_errors.iter() {
        metrics::counter!("floodwall_store_errors_total", "kind" => kind.as_str()).absolute(value);
    }
    for (front, value) in stats.abandoned.iter() {
        metrics::counter!("floodwall_abandoned_total", "front" => front.as_str()).absolute(value);
    }
    store_gauges(state.limiter.store().stats());
    let Some(handle) = prometheus() else {
        return ApiError::MetricsUnavailable.into_response();
    };
    handle.run_upkeep();
    let mut response = handle.render().into_response();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// `GET` reads a key's state without consuming; `DELETE` resets it. Both need the token when
/// one is configured, and name a configured policy.
async fn limits(
    State(state): State<Arc<AdminState>>,
    method: Method,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path((policy, key)) = path.map_err(|_| ApiError::Status {
        status: StatusCode::BAD_REQUEST,
        title: "Bad path",
        detail: "the policy and key in /v1/limits/{policy}/{key} must be percent-encoded UTF-8",
    })?;
    let (policy, caller) = state.authorised_policy(&headers, &policy)?;
    let answered = if method == Method::DELETE {
        let reset = state.limiter.reset(&policy, key.as_bytes()).await;
        if reset.is_ok() {
            actions::record(&caller, "reset", policy.name(), key.as_bytes());
        }
        reset.map(|()| StatusCode::NO_CONTENT.into_response())
    } else {
        let peeked = state.limiter.peek(&policy, key.as_bytes()).await;
        peeked.map(|verdict| axum::Json(single_decision_body(&verdict)).into_response())
    };
    answered.map_err(|error| ApiError::Limiter(error, vec![policy.clone()]))
}
