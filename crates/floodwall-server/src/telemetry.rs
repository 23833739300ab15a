//! The service's Prometheus metrics: the recorder, every metric's name and help text, the
//! latency buckets, and the instruments each route keeps.
//!
//! Labels are configuration names only (policies, route templates, error kinds), never a client
//! key, a raw path or anything else a client chooses, so the series stay bounded.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use floodwall::Limiter;
use floodwall::gate::{Observed, Observer};
use floodwall::stats::StorageStats;

use http::StatusCode;
use metrics::{Counter, Histogram, counter, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use metrics_util::layers::FanoutBuilder;

use crate::decision_log::DecisionLog;
use crate::otlp::OtlpRecorder;

/// The decision latency histogram, labelled by route.
pub(crate) const DECISION_DURATION: &str = "floodwall_check_duration_seconds";
/// Answers by route and status class.
pub(crate) const REQUESTS_TOTAL: &str = "floodwall_requests_total";

/// The route label of the check API.
pub(crate) const CHECK_ROUTE: &str = "POST /v1/check";
/// The route label of requests no route matched (or whose path was refused before matching).
pub(crate) const UNMATCHED_ROUTE: &str = "unmatched";

/// Latency buckets, in seconds: from 2 µs (a memory-store check takes a few) to 250 ms (far
/// past any store deadline worth having).
pub(crate) const BUCKETS: [f64; 16] = [
    0.000_002, 0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001,
    0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
];

/// The recorder that exports every metric over OTLP too, when `[telemetry]` asks for it.
static OTLP: OnceLock<OtlpRecorder> = OnceLock::new();

/// Records every metric into `recorder` as well as Prometheus's, from the recorder's
/// installation on. The process's first call wins.
pub(crate) fn export_metrics_too(recorder: OtlpRecorder) {
    let _ = OTLP.set(recorder);
}

/// Whether metrics are exported over OTLP too.
fn exporting() -> bool {
    OTLP.get().is_some()
}

/// The process's Prometheus recorder, installed on first use (before any layer registers its
/// counters), with every metric's `# HELP`; beside it the OTLP recorder, when one was given
/// first. `None` if the embedding program installed another recorder first.
pub(crate) fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            let installed = match OTLP.get() {
                Some(otlp) => metrics::set_global_recorder(
                    FanoutBuilder::default()
                        .add_recorder(recorder)
                        .add_recorder(otlp.clone())
                        .build(),
                )
                .is_ok(),
                None => metrics::set_global_recorder(recorder).is_ok(),
            };
            installed.then_some(())?;
            describe();
            Some(handle)
        })
        .as_ref()
}

/// Brings the figures the limiter and its store keep themselves (fallbacks, store errors,
/// abandoned callers, the store's keys and breakers) into their metrics: before each scrape,
/// and at each upkeep when they are exported over OTLP.
pub(crate) fn refresh_limiter_metrics(limiter: &Limiter) {
    let stats = limiter.stats();
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
    store_gauges(limiter.store().stats());
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
            if let Some(master) = stats.sentinel {
                metrics::counter!("floodwall_redis_master_changes_total").absolute(master.changes);
                metrics::gauge!("floodwall_redis_master_changed_at_seconds")
                    .set(master.changed_at_unix_ms as f64 / 1000.0);
            }
        }
        _ => {}
    }
}

fn describe() {
    describe_counter!(
        floodwall_http::DECISIONS_TOTAL,
        "Decisions by policy and outcome: allowed, denied, shadow_denied (a shadow policy would have denied), error (no decision: the store failed and the policy fails closed)."
    );
    describe_histogram!(
        DECISION_DURATION,
        metrics::Unit::Seconds,
        "Time to decide a request (the store call alone), by route; route=\"POST /v1/check\" for the check API, \"grpc ShouldRateLimit\" for Envoy's."
    );
    describe_counter!(
        REQUESTS_TOTAL,
        "Answers by route (the configured match, \"POST /v1/check\", or \"unmatched\") and status class (1xx to 5xx)."
    );
    describe_counter!(
        crate::rls::RLS_REQUESTS_TOTAL,
        "Envoy ShouldRateLimit answers by domain (a configured one, or \"unknown\") and code: ok, over_limit, unavailable (the store failed and a policy fails closed), invalid."
    );
    describe_counter!(
        "floodwall_fallbacks_total",
        "Checks answered without the store, by kind: fail_open (allowed), fail_closed (503), local (the in-process limiter)."
    );
    describe_counter!(
        "floodwall_store_errors_total",
        "Store failures by kind: timeout, circuit_open, redis, reply, config, and the refusals wrongpass, noauth, noperm."
    );
    describe_counter!(
        "floodwall_abandoned_total",
        "Calls whose caller left before its answer (a reset, a passed deadline, a cancelled task), by front end: http, check, leases, rls, rlqs, python. What such a call took is given back."
    );
    describe_counter!(
        "floodwall_store_abandoned_total",
        "Redis calls whose caller stopped waiting before Redis answered; each still ran to its end, and its breaker heard how it went."
    );
    describe_counter!(
        floodwall_http::SETTLES_TOTAL,
        "Costs charged after the answer (an RLS apply_on_stream_done call, a route's settle_from, POST /v1/settle), by front end and outcome: charged, or failed (the cost is lost)."
    );
    describe_counter!(
        "floodwall_given_back_total",
        "In-flight units given back to Redis for callers that were gone, or after calls that failed once they may have run."
    );
    describe_gauge!("floodwall_memory_keys", "Keys the memory store tracks now.");
    describe_gauge!(
        "floodwall_memory_max_keys",
        "The memory store's bound on tracked keys ([storage] max_keys)."
    );
    describe_counter!(
        "floodwall_admin_actions_total",
        "Admin actions (block, unblock, penalise, reward, reset, allow, deny, unallow, undeny), by the name of the token that made them."
    );
    describe_counter!(
        "floodwall_memory_reclaimed_total",
        "Keys the memory store forgot because they were back at rest."
    );
    describe_counter!(
        "floodwall_memory_evicted_total",
        "Keys the memory store evicted while full, least used first, to make room for new ones."
    );
    describe_gauge!(
        "floodwall_breaker_open",
        "Redis circuit breakers open now (one per node)."
    );
    describe_gauge!(
        "floodwall_breakers",
        "Redis circuit breakers (one per node)."
    );
    describe_gauge!(
        crate::rlqs::RLQS_STREAMS,
        "Envoy RateLimitQuotaService streams open now."
    );
    describe_counter!(
        crate::rlqs::RLQS_REPORTS_TOTAL,
        "Bucket usage reports taken from Envoys over RLQS, by policy."
    );
    describe_counter!(
        crate::rlqs::RLQS_ASSIGNMENTS_TOTAL,
        "Token-bucket shares assigned to Envoys over RLQS, by policy."
    );
    describe_counter!(
        "floodwall_redis_master_changes_total",
        "Behind Sentinel: Redis masters the store has used since it started, the first one included."
    );
    describe_gauge!(
        "floodwall_redis_master_changed_at_seconds",
        "Behind Sentinel: when the store last changed Redis master, in seconds since the Unix epoch."
    );
}

/// How often recorded histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// How often the limiter's own figures are brought into the metrics an OTLP reader exports
/// (Prometheus's scrape brings them itself).
const EXPORTED_REFRESH_EVERY: Duration = Duration::from_millis(100);

/// Folds histogram samples into buckets every [`UPKEEP_EVERY`] until `stopped` completes.
/// Without it every check's latency sample is kept until the next scrape, so a service that
/// nobody scrapes would grow by a sample per request. When metrics are exported over OTLP,
/// also refreshes `limiter`'s figures for the exporter's reads.
pub(crate) async fn upkeep(limiter: Limiter, stopped: impl std::future::Future<Output = ()>) {
    let Some(handle) = prometheus() else { return };
    let exporting = exporting();
    let mut upkeep = tokio::time::interval(UPKEEP_EVERY);
    let mut refresh = tokio::time::interval(EXPORTED_REFRESH_EVERY);
    for every in [&mut upkeep, &mut refresh] {
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = upkeep.tick() => handle.run_upkeep(),
            _ = refresh.tick(), if exporting => refresh_limiter_metrics(&limiter),
            () = &mut stopped => return,
        }
    }
}

/// One route's instruments, registered once so that recording costs no registry lookup.
#[derive(Debug)]
pub(crate) struct RouteInstruments {
    latency: Histogram,
    /// Answers of status class 1xx to 5xx.
    answers: [Counter; 5],
}

impl RouteInstruments {
    /// The instruments of the route labelled `route` (a configuration name, never a raw path).
    pub(crate) fn new(route: &str) -> Self {
        let class = |class: &'static str| counter!(REQUESTS_TOTAL, "route" => route.to_owned(), "status" => class);
        RouteInstruments {
            latency: metrics::histogram!(DECISION_DURATION, "route" => route.to_owned()),
            answers: [
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
            ],
        }
    }

    /// Counts an answer.
    pub(crate) fn answered(&self, status: StatusCode) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.answers[class].increment(1);
    }

    /// Records how long a decision took.
    pub(crate) fn decided(&self, elapsed: Duration) {
        self.latency.record(elapsed.as_secs_f64());
    }
}

/// What the service does with each decision of one route or front end, whichever it is: times
/// it in the route's histogram and, when the decision log is on, writes its line.
#[derive(Debug, Clone)]
pub(crate) struct DecisionWatch {
    /// The route's label, as the log names it (a configuration name, never a raw path).
    label: Arc<str>,
    instruments: Arc<RouteInstruments>,
    log: Option<Arc<DecisionLog>>,
}

impl DecisionWatch {
    pub(crate) fn new(
        label: Arc<str>,
        instruments: Arc<RouteInstruments>,
        log: Option<Arc<DecisionLog>>,
    ) -> Self {
        DecisionWatch {
            label,
            instruments,
            log,
        }
    }

    /// The route's instruments.
    pub(crate) fn instruments(&self) -> &RouteInstruments {
        &self.instruments
    }
}

impl Observer for DecisionWatch {
    /// Times the decision and, when the decision log is on, offers it the decision.
    fn decided(&self, decision: &Observed<'_, '_>) {
        self.instruments.decided(decision.took);
        if let Some(log) = self.log.as_deref() {
            log.record(&self.label, decision.check, decision.outcome);
        }
    }
}
