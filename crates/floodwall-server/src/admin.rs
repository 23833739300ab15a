//! The admin listener: `/metrics` (Prometheus text) and the limits API, on its own socket so the
//! main listener never exposes them.

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use floodwall::{Limiter, StorageStats};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::sync::watch;

use crate::check::single_decision_body;
use crate::config::Config;
use crate::error::ApiError;

/// The latency histogram of check API decisions, in seconds.
pub(crate) const CHECK_DURATION: &str = "floodwall_check_duration_seconds";

/// The process's Prometheus recorder, installed on first use (before any layer registers its
/// counters). `None` if another recorder was installed first by the embedding program.
pub(crate) fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
            ];
            PrometheusBuilder::new()
                .set_buckets(&buckets)
                .ok()?
                .install_recorder()
                .ok()
        })
        .as_ref()
}

/// How often recorded histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Folds histogram samples into buckets every [`UPKEEP_EVERY`] until `stopped` completes.
/// Without it every check's latency sample is kept until the next scrape, so a service that
/// nobody scrapes would grow by a sample per request.
pub(crate) async fn upkeep(stopped: impl std::future::Future<Output = ()>) {
    let Some(handle) = prometheus() else { return };
    let mut every = tokio::time::interval(UPKEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = every.tick() => handle.run_upkeep(),
            () = &mut stopped => return,
        }
    }
}

struct AdminState {
    limiter: Limiter,
    /// The live configuration, replaced on reload.
    config: watch::Receiver<Arc<Config>>,
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
        .fallback(crate::no_route)
        .with_state(state)
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
    let config = Arc::clone(&state.config.borrow());
    crate::auth::bearer(
        &headers,
        config.admin.as_ref().and_then(|a| a.token.as_deref()),
        crate::auth::Api::Admin,
    )?;
    let policy = config
        .policy(&policy)
        .cloned()
        .ok_or_else(|| ApiError::unknown_policy(&policy, &config.policies))?;
    let answered = if method == Method::DELETE {
        let reset = state.limiter.reset(&policy, key.as_bytes()).await;
        reset.map(|()| StatusCode::NO_CONTENT.into_response())
    } else {
        let peeked = state.limiter.peek(&policy, key.as_bytes()).await;
        peeked.map(|verdict| axum::Json(single_decision_body(&verdict)).into_response())
    };
    answered.map_err(|error| ApiError::Limiter(error, vec![policy.clone()]))
}
