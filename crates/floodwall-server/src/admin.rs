//! The admin listener: `/metrics` (Prometheus text) and the limits API, on its own socket so the
//! main listener never exposes them (RELIABILITY I3).

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use floodwall::{Limiter, Store, StoreErrorKind};
use floodwall_http::problem::problem;
use http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::sync::watch;

use crate::check::single_decision_body;
use crate::config::Config;

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

/// Store figures refreshed into gauges at each scrape (the memory store's key counts).
pub(crate) type StoreGauges = Arc<dyn Fn() + Send + Sync>;

struct AdminState<St> {
    limiter: Limiter<St>,
    /// The live configuration, replaced on reload.
    config: watch::Receiver<Arc<Config>>,
    store_gauges: StoreGauges,
}

pub(crate) fn app<St: Store>(
    config: watch::Receiver<Arc<Config>>,
    limiter: Limiter<St>,
    store_gauges: StoreGauges,
) -> Router {
    let state = Arc::new(AdminState {
        limiter,
        config,
        store_gauges,
    });
    Router::new()
        .route("/metrics", get(metrics::<St>))
        .route(
            "/v1/limits/{policy}/{key}",
            get(limits::<St>).delete(limits::<St>),
        )
        .with_state(state)
}

async fn metrics<St: Store>(State(state): State<Arc<AdminState<St>>>) -> Response {
    let stats = state.limiter.stats();
    for (kind, value) in [
        ("fail_open", stats.fail_open),
        ("fail_closed", stats.fail_closed),
        ("local", stats.local),
    ] {
        metrics::counter!("floodwall_fallbacks_total", "kind" => kind).absolute(value);
    }
    for (kind, value) in stats.store_errors.iter() {
        // A cost error is the caller's, answered 422, never a store failure.
        if kind != StoreErrorKind::Cost {
            metrics::counter!("floodwall_store_errors_total", "kind" => kind.as_str())
                .absolute(value);
        }
    }
    (state.store_gauges)();
    let Some(handle) = prometheus() else {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "about:blank",
            "Metrics unavailable",
            "another metrics recorder was installed in this process",
            None,
        )
        .into_response();
    };
    handle.run_upkeep();
    let mut response = handle.render().into_response();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// Compares without an early exit, so the time taken says nothing about the token.
fn same_token(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// The 401 answer when a token is configured and the request does not carry it.
fn unauthorized(config: &Config, headers: &HeaderMap) -> Option<Response> {
    // No token configured: the admin API is open to whoever reaches the admin listener.
    let token = config.admin.as_ref()?.token.as_deref()?;
    let given = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .unwrap_or_default();
    if same_token(given, token.as_bytes()) {
        return None;
    }
    let mut response = problem(
        StatusCode::UNAUTHORIZED,
        "about:blank",
        "Unauthorized",
        "the admin API needs Authorization: Bearer <token> (the token is in the variable named by [admin] token_env)",
        None,
    )
    .into_response();
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Some(response)
}

fn unknown_policy(name: &str) -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "about:blank",
        "Unknown policy",
        &format!("no policy named {name:?}"),
        None,
    )
    .into_response()
}

/// `GET` reads a key's state without consuming; `DELETE` resets it. Both need the token when
/// one is configured, and name a configured policy.
async fn limits<St: Store>(
    State(state): State<Arc<AdminState<St>>>,
    method: Method,
    Path((policy, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let config = Arc::clone(&state.config.borrow());
    if let Some(response) = unauthorized(&config, &headers) {
        return response;
    }
    let Some(policy) = config.policy(&policy).cloned() else {
        return unknown_policy(&policy);
    };
    let answered = if method == Method::DELETE {
        let reset = state.limiter.reset(&policy, key.as_bytes()).await;
        reset.map(|()| StatusCode::NO_CONTENT.into_response())
    } else {
        let peeked = state.limiter.peek(&policy, key.as_bytes()).await;
        peeked.map(|verdict| axum::Json(single_decision_body(&policy, &verdict)).into_response())
    };
    answered.unwrap_or_else(|_| {
        floodwall_http::problem::store_unavailable(std::slice::from_ref(&policy)).into_response()
    })
}
