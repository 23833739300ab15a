//! The store's health as the service reports it: a probe that bypasses `on_error`, the startup
//! check that refuses credentials Redis rejects, `/readyz`, and an outage log that records
//! state changes and summarises fallback answers without a line per request.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::response::{IntoResponse, Response};
use floodwall::stats::StorageStats;
use floodwall::store::Store;
use floodwall::{Check, Limiter, OnError, Policy, StoreError};
use http::StatusCode;
use serde_json::json;
use tokio::time::Instant;

use crate::config::Config;

/// The key probes read (cost 0: nothing is consumed).
const PROBE_KEY: &[u8] = b"floodwall:probe";

fn probe_policy() -> Option<Policy> {
    Policy::new(
        "floodwall-probe",
        floodwall::Algorithm::FixedWindow,
        1,
        Duration::from_secs(1),
    )
    .ok()
}

/// Asks the store itself, not the limiter, so `on_error` cannot hide a failure; past an open
/// circuit breaker, Redis itself, so that a store that is back is never reported down. A
/// failure is reported as the refusal it is when Redis refuses the store's credentials or
/// permissions (a password or ACL changed at run time), which the store's own reconnecting
/// connection sees only as failed reconnections.
pub(crate) async fn probe(limiter: &Limiter) -> Result<(), StoreError> {
    let probed = match decide_probe(limiter).await {
        Err(StoreError::CircuitOpen { .. }) => limiter.store().ping().await,
        decided => decided,
    };
    match probed {
        Err(error) if !error.is_access_denied() => {
            Err(limiter.store().diagnose().await.unwrap_or(error))
        }
        probed => probed,
    }
}

async fn decide_probe(limiter: &Limiter) -> Result<(), StoreError> {
    let Some(policy) = probe_policy() else {
        return Ok(());
    };
    let policies = [policy];
    let Ok(check) = Check::new(&policies, PROBE_KEY, 0) else {
        return Ok(());
    };
    limiter.store().decide(&check).await.map(|_| ())
}

/// How long the start waits for a store that does not answer yet before serving anyway.
const STARTUP_PROBING: Duration = Duration::from_secs(1);

/// At start: `Err` when the store refuses access (a wrong password or ACL), which no retry
/// fixes; a store that is merely unreachable is logged and served past, per `on_error`.
pub(crate) async fn check_at_start(limiter: &Limiter, url: &str) -> Result<(), StoreError> {
    match limiter.store().verify_access(STARTUP_PROBING).await {
        Ok(()) => Ok(()),
        Err(error) if error.is_access_denied() => Err(error),
        Err(error) => {
            tracing::warn!(
                store = url,
                %error,
                "the store does not answer at start; serving anyway, answering per on_error until it does"
            );
            Ok(())
        }
    }
}

/// `/readyz`: 200 when decisions can be made (the store answers, or every policy absorbs its
/// failure), 503 when the store is down and some policy fails closed. The body names the
/// store's state either way.
pub(crate) async fn ready(limiter: &Limiter, config: &Config) -> Response {
    let store = config.storage.url();
    let store = store.as_str();
    let master = sentinel_master(limiter);
    let Err(error) = probe(limiter).await else {
        let mut body = json!({ "status": "ready", "store": { "url": store, "state": "up" } });
        if let Some(master) = master {
            body["store"]["master"] = master;
        }
        return Json(body).into_response();
    };
    let failing_closed: Vec<&str> = config
        .policies
        .iter()
        .filter(|p| p.on_error().unwrap_or(config.storage.on_error) == OnError::Deny)
        .map(Policy::name)
        .collect();
    let status = match failing_closed.is_empty() {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut body = json!({
        "status": if failing_closed.is_empty() { "degraded" } else { "unavailable" },
        "store": {
            "url": store,
            "state": "down",
            "error": error.to_string(),
            "error_kind": error.kind().as_str(),
        },
        "failing_closed": failing_closed,
    });
    if let Some(master) = master {
        body["store"]["master"] = master;
    }
    (status, Json(body)).into_response()
}

/// Behind Sentinel: the master in use, when it changed, and how many masters the store has
/// used (the first one counts).
pub(crate) fn sentinel_master(limiter: &Limiter) -> Option<serde_json::Value> {
    let StorageStats::Redis(stats) = limiter.store().stats() else {
        return None;
    };
    let master = stats.sentinel?;
    Some(json!({
        "name": master.name,
        "address": master.address,
        "changed_at_unix_ms": master.changed_at_unix_ms,
        "changes": master.changes,
    }))
}

/// How often the outage log looks at the limiter's counters.
const WATCH_EVERY: Duration = Duration::from_secs(1);
/// At most one summary of fallback answers per this, while the store is down.
const SUMMARY_EVERY: Duration = Duration::from_secs(5);

/// Fallback answers so far: failed open, failed closed, decided locally; and the callers who
/// left before their answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Fallbacks {
    open: u64,
    closed: u64,
    local: u64,
    gave_up: u64,
}

impl Fallbacks {
    fn of(limiter: &Limiter) -> (Fallbacks, u64) {
        let stats = limiter.stats();
        let errors = stats.store_errors.iter().map(|(_, count)| count).sum();
        let fallbacks = Fallbacks {
            open: stats.fail_open,
            closed: stats.fail_closed,
            local: stats.local,
            gave_up: stats.abandoned.iter().map(|(_, count)| count).sum(),
        };
        (fallbacks, errors)
    }

    fn since(self, earlier: Fallbacks) -> Fallbacks {
        Fallbacks {
            open: self.open.saturating_sub(earlier.open),
            closed: self.closed.saturating_sub(earlier.closed),
            local: self.local.saturating_sub(earlier.local),
            gave_up: self.gave_up.saturating_sub(earlier.gave_up),
        }
    }
}

/// An outage in progress, as the log follows it.
#[derive(Debug, Clone, Copy)]
struct Outage {
    since: Instant,
    /// The fallback counters when it began, and when it was last reported.
    at_start: Fallbacks,
    reported: Fallbacks,
    last_report: Instant,
}

/// Logs the store's outages as they begin and end, and while one lasts, at most one summary
/// of fallback answers every [`SUMMARY_EVERY`]; until `stopped` completes.
pub(crate) async fn log_outages(
    limiter: Limiter,
    url: Arc<str>,
    stopped: impl std::future::Future<Output = ()>,
) {
    let mut every = tokio::time::interval(WATCH_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stopped);
    let (mut seen, mut errors_seen) = Fallbacks::of(&limiter);
    let mut outage: Option<Outage> = None;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = &mut stopped => return,
        }
        let (now_seen, errors) = Fallbacks::of(&limiter);
        match &mut outage {
            None if errors > errors_seen => {
                let (cause, kind) = match probe(&limiter).await {
                    Err(error) => (error.to_string(), error.kind().as_str()),
                    Ok(()) => (
                        "calls failed and recovered within a second".to_owned(),
                        "none",
                    ),
                };
                tracing::warn!(store = %url, %cause, kind, "store unavailable: answering per on_error until it is back");
                let now = Instant::now();
                outage = Some(Outage {
                    since: now,
                    at_start: seen,
                    reported: seen,
                    last_report: now,
                });
            }
            None => {}
            Some(current) => {
                if probe(&limiter).await.is_ok() {
                    let given = now_seen.since(current.at_start);
                    tracing::info!(
                        store = %url,
                        down_for = ?current.since.elapsed(),
                        failed_open = given.open,
                        failed_closed = given.closed,
                        decided_locally = given.local,
                        callers_gave_up = given.gave_up,
                        "store available again"
                    );
                    outage = None;
                } else if current.last_report.elapsed() >= SUMMARY_EVERY {
                    let given = now_seen.since(current.reported);
                    tracing::warn!(
                        store = %url,
                        down_for = ?current.since.elapsed(),
                        failed_open = given.open,
                        failed_closed = given.closed,
                        decided_locally = given.local,
                        callers_gave_up = given.gave_up,
                        "store still unavailable; answers given by on_error since the last report"
                    );
                    current.reported = now_seen;
                    current.last_report = Instant::now();
                }
            }
        }
        seen = now_seen;
        errors_seen = errors;
    }
}
