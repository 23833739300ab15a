//! OpenTelemetry export, received by a collector written here (the OTLP/gRPC trace and metrics
//! services of `opentelemetry-proto`, on tonic): the spans and metrics of a known sequence of
//! decisions through the real binary, a Redis stall's store spans and a caller who walked
//! away, and, with `[telemetry]` absent, nothing sent and no exporter thread.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use floodwall_testkit::RedisServer;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point;
use opentelemetry_proto::tonic::trace::v1::Span;
use reqwest::{Client, StatusCode};
use serde_json::json;

use crate::binary::{Floodwall, config_file};

/// What the collector was sent.
#[derive(Clone, Default)]
struct Collector {
    /// Every span, with its resource's `service.name`.
    spans: Arc<Mutex<Vec<(String, Span)>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .as_ref()
                .and_then(|resource| string(&resource.attributes, "service.name"))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                spans.extend(scope.spans.into_iter().map(|span| (service.clone(), span)));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.metrics.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

impl Collector {
    /// A collector on a free loopback port.
    async fn start() -> (Collector, SocketAddr) {
        let collector = Collector::default();
        let routes = tonic::service::Routes::new(TraceServiceServer::new(collector.clone()))
            .add_service(MetricsServiceServer::new(collector.clone()))
            .into_axum_router();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, routes).await });
        (collector, address)
    }

    /// The decision spans received so far.
    fn decisions(&self) -> Vec<(String, Span)> {
        self.named("floodwall.decision")
    }

    fn named(&self, name: &str) -> Vec<(String, Span)> {
        let spans = self.spans.lock().unwrap();
        spans
            .iter()
            .filter(|(_, s)| s.name == name)
            .cloned()
            .collect()
    }

    /// Waits up to 10 s for `done` to hold of the spans received.
    async fn wait_for_spans(&self, what: &str, done: impl Fn(&[(String, Span)]) -> bool) {
        for _ in 0..200 {
            if done(&self.spans.lock().unwrap()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no {what} in {:#?}", self.spans.lock().unwrap());
    }

    /// The latest exported point of the metric `name` whose attributes include `labels`: a
    /// sum's value, or a histogram's count.
    fn latest(&self, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        let exports = self.metrics.lock().unwrap();
        let metrics = exports
            .iter()
            .flat_map(|export| &export.resource_metrics)
            .flat_map(|resource| &resource.scope_metrics)
            .flat_map(|scope| &scope.metrics)
            .filter(|metric| metric.name == name);
        let matches = |attributes: &[KeyValue]| {
            labels
                .iter()
                .all(|(k, v)| string(attributes, k).as_deref() == Some(v))
        };
        let mut latest = None;
        for metric in metrics {
            match &metric.data {
                Some(Data::Sum(sum)) => {
                    for point in sum.data_points.iter().filter(|p| matches(&p.attributes)) {
                        latest = match point.value {
                            Some(number_data_point::Value::AsInt(n)) => u64::try_from(n).ok(),
                            Some(number_data_point::Value::AsDouble(x)) => Some(x as u64),
                            None => latest,
                        };
                    }
                }
                Some(Data::Histogram(histogram)) => {
                    for point in histogram
                        .data_points
                        .iter()
                        .filter(|p| matches(&p.attributes))
                    {
                        latest = Some(point.count);
                    }
                }
                _ => {}
            }
        }
        latest
    }

    fn received_anything(&self) -> bool {
        !self.spans.lock().unwrap().is_empty() || !self.metrics.lock().unwrap().is_empty()
    }
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn string(attributes: &[KeyValue], key: &str) -> Option<String> {
    match attribute(attributes, key) {
        Some(Value::StringValue(text)) => Some(text.clone()),
        _ => None,
    }
}

fn span_string(span: &Span, key: &str) -> Option<String> {
    string(&span.attributes, key)
}

/// The names of the process's threads (as the kernel keeps them: 15 bytes at most).
fn thread_names(pid: u32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect()
}

fn exporter_threads(pid: u32) -> Vec<String> {
    thread_names(pid)
        .into_iter()
        .filter(|name| name.starts_with("OpenTelemetry"))
        .collect()
}

/// A policy of 3 an hour behind the check API, and `telemetry` (a `[telemetry]` section, or
/// nothing) and `storage`.
fn config(storage: &str, telemetry: &str) -> String {
    format!(
        r#"
{storage}

[[policy]]
name = "three"
algorithm = "fixed_window"
limit = 3
period = "1h"

{telemetry}
"#
    )
}

fn telemetry(collector: SocketAddr) -> String {
    format!(
        r#"
[telemetry]
endpoint = "http://{collector}"
sampling_ratio = 1.0
service_name = "floodwall-under-test"
metrics_interval = "200ms"
"#
    )
}

/// Spans are exported within 100 ms of their end, not the default 5 s.
const QUICK_BATCHES: [(&str, &str); 1] = [("OTEL_BSP_SCHEDULE_DELAY", "100")];

async fn check(client: &Client, service: &Floodwall, key: &str) -> StatusCode {
    let body = json!({"policy": "three", "key": key});
    let response = client
        .post(service.url("/v1/check"))
        .json(&body)
        .send()
        .await;
    response.unwrap().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_decision_is_a_span_with_its_store_call_and_the_metrics_follow() {
    let (collector, address) = Collector::start().await;
    let file = config_file(&config("", &telemetry(address)));
    let service = Floodwall::serve_with(Some(file.path()), &QUICK_BATCHES, false);
    let client = Client::new();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(check(&client, &service, "203.0.113.7").await);
    }
    assert_eq!(
        statuses,
        [
            [StatusCode::OK; 3].as_slice(),
            &[StatusCode::TOO_MANY_REQUESTS; 2]
        ]
        .concat()
    );
    collector
        .wait_for_spans("5 decision spans", |spans| {
            spans
                .iter()
                .filter(|(_, s)| s.name == "floodwall.decision")
                .count()
                == 5
        })
        .await;
    let decisions = collector.decisions();
    let outcomes: Vec<String> = decisions
        .iter()
        .map(|(_, span)| span_string(span, "floodwall.outcome").unwrap())
        .collect();
    assert_eq!(
        outcomes.iter().filter(|o| *o == "allowed").count(),
        3,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes.iter().filter(|o| *o == "denied").count(),
        2,
        "{outcomes:?}"
    );
    for (service_name, span) in &decisions {
        assert_eq!(service_name, "floodwall-under-test");
        assert_eq!(
            span_string(span, "floodwall.policy").as_deref(),
            Some("three")
        );
        assert_eq!(
            span_string(span, "floodwall.front").as_deref(),
            Some("check")
        );
        assert_eq!(
            span_string(span, "floodwall.store").as_deref(),
            Some("memory")
        );
        assert_eq!(
            span_string(span, "floodwall.answered_by").as_deref(),
            Some("store")
        );
        let latency = attribute(&span.attributes, "floodwall.latency_us");
        assert!(
            matches!(latency, Some(Value::IntValue(us)) if *us >= 0),
            "{latency:?}"
        );
        assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
        // The client's key is never exported.
        let exported = format!("{span:?}");
        assert!(!exported.contains("203.0.113.7"), "{exported}");
    }
    // One store call under each decision.
    collector
        .wait_for_spans("5 store spans", |spans| {
            spans
                .iter()
                .filter(|(_, s)| s.name == "floodwall.store")
                .count()
                == 5
        })
        .await;
    for (_, store_call) in collector.named("floodwall.store") {
        assert_eq!(
            span_string(&store_call, "floodwall.store.outcome").as_deref(),
            Some("ok")
        );
        let parent = decisions
            .iter()
            .find(|(_, d)| d.span_id == store_call.parent_span_id);
        let (_, parent) = parent.expect("a store span's parent is a decision span");
        assert_eq!(parent.trace_id, store_call.trace_id);
    }
    // The counters and histogram of /metrics, exported as they are.
    for _ in 0..100 {
        if collector.latest(
            "floodwall_decisions_total",
            &[("policy", "three"), ("outcome", "denied")],
        ) == Some(2)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let decided = |outcome| {
        collector.latest(
            "floodwall_decisions_total",
            &[("policy", "three"), ("outcome", outcome)],
        )
    };
    assert_eq!(decided("allowed"), Some(3));
    assert_eq!(decided("denied"), Some(2));
    assert_eq!(
        collector.latest(
            "floodwall_check_duration_seconds",
            &[("route", "POST /v1/check")]
        ),
        Some(5)
    );
    assert_eq!(
        collector.latest(
            "floodwall_requests_total",
            &[("route", "POST /v1/check"), ("status", "4xx")]
        ),
        Some(2)
    );
    // The gauges of the store, refreshed for the exporter without a scrape.
    let exported_names: Vec<String> = collector
        .metrics
        .lock()
        .unwrap()
        .iter()
        .flat_map(|e| &e.resource_metrics)
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .map(|m| m.name.clone())
        .collect();
    assert!(
        exported_names.iter().any(|n| n == "floodwall_memory_keys"),
        "{exported_names:?}"
    );
    assert_eq!(
        exporter_threads(service.pid()).len(),
        2,
        "{:?}",
        thread_names(service.pid())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_stall_shows_timeouts_the_breaker_and_a_caller_who_left_in_the_store_spans() {
    let (collector, address) = Collector::start().await;
    let redis = RedisServer::start().unwrap();
    let storage = format!(
        "[storage]\nurl = \"{}\"\ntimeout = \"300ms\"\non_error = \"allow\"",
        redis.url()
    );
    let file = config_file(&config(&storage, &telemetry(address)));
    let service = Floodwall::serve_with(Some(file.path()), &QUICK_BATCHES, false);
    let client = Client::new();
    assert_eq!(check(&client, &service, "healthy").await, StatusCode::OK);
    redis.pause().unwrap();
    // Past the store's deadline: answered by on_error, the store call a timeout.
    assert_eq!(check(&client, &service, "stalled").await, StatusCode::OK);
    // A caller who gives up before the deadline.
    let gave_up = tokio::time::timeout(
        Duration::from_millis(50),
        check(&client, &service, "impatient"),
    )
    .await;
    assert!(gave_up.is_err(), "answered while Redis hung");
    // Its call still runs to the store's deadline: the breaker's second failure.
    tokio::time::sleep(Duration::from_millis(400)).await;
    // More stalled calls until the breaker opens: one answered at once, without Redis. (The
    // third failure opens it; on a loaded machine the abandoned call may end after the next.)
    let mut stalled = 0;
    loop {
        stalled += 1;
        let started = tokio::time::Instant::now();
        assert_eq!(
            check(&client, &service, "stalled-again").await,
            StatusCode::OK
        );
        if started.elapsed() < Duration::from_millis(150) {
            break;
        }
        assert!(stalled < 10, "the breaker never opened");
    }
    redis.resume().unwrap();
    let expected = 3 + stalled;
    collector
        .wait_for_spans("every decision and its store call", |spans| {
            let named = |name| spans.iter().filter(|(_, s)| s.name == name).count();
            named("floodwall.decision") == expected && named("floodwall.store") == expected
        })
        .await;
    let mut decisions = collector.decisions();
    decisions.sort_by_key(|(_, span)| span.start_time_unix_nano);
    let stores = collector.named("floodwall.store");
    let store_outcome = |decision: &Span| {
        let (_, call) = stores
            .iter()
            .find(|(_, s)| s.parent_span_id == decision.span_id)
            .unwrap();
        span_string(call, "floodwall.store.outcome").unwrap()
    };
    let seen: Vec<(String, String, String, String)> = decisions
        .iter()
        .map(|(_, d)| {
            (
                span_string(d, "floodwall.store").unwrap(),
                span_string(d, "floodwall.outcome").unwrap(),
                span_string(d, "floodwall.answered_by").unwrap_or_default(),
                store_outcome(d),
            )
        })
        .collect();
    let owned = |(a, b, c, d): (&str, &str, &str, &str)| {
        (a.to_owned(), b.to_owned(), c.to_owned(), d.to_owned())
    };
    let first = [
        ("redis", "allowed", "store", "ok"),
        ("redis", "allowed", "fail_open", "timeout"),
        ("redis", "abandoned", "", "abandoned"),
    ]
    .map(owned);
    assert_eq!(seen[..3], first, "{seen:#?}");
    let (last, between) = seen[3..].split_last().unwrap();
    let timed_out = owned(("redis", "allowed", "fail_open", "timeout"));
    assert!(between.iter().all(|s| *s == timed_out), "{seen:#?}");
    assert_eq!(
        *last,
        owned(("redis", "allowed", "fail_open", "circuit_open"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_telemetry_nothing_is_sent_and_no_exporter_runs() {
    let (collector, address) = Collector::start().await;
    // Even with the standard variables pointing at a collector: only [telemetry] turns it on.
    let endpoint = format!("http://{address}");
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
    ];
    let file = config_file(&config("", ""));
    let service = Floodwall::serve_with(Some(file.path()), &env, false);
    let client = Client::new();
    for _ in 0..5 {
        check(&client, &service, "203.0.113.7").await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!collector.received_anything());
    assert_eq!(exporter_threads(service.pid()), Vec::<String>::new());
    assert!(
        thread_names(service.pid())
            .iter()
            .any(|name| name.starts_with("tokio"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_is_logged_and_holds_up_neither_decisions_nor_a_stop() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let file = config_file(&config("", &telemetry(closed)));
    let mut service = Floodwall::serve_with(Some(file.path()), &QUICK_BATCHES, false);
    let client = Client::new();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(check(&client, &service, "203.0.113.7").await);
    }
    assert_eq!(
        statuses,
        [
            [StatusCode::OK; 3].as_slice(),
            &[StatusCode::TOO_MANY_REQUESTS; 2]
        ]
        .concat()
    );
    // Said, not silent: each failed export is an error line.
    let line = service.log_line("BatchSpanProcessor.ExportError").await;
    assert!(line.contains("ERROR"), "{line}");
    service.log_line("PeriodicReader.ExportError").await;
    let stopping = tokio::time::Instant::now();
    service.signal("-TERM");
    let code = tokio::task::spawn_blocking(move || service.wait())
        .await
        .unwrap();
    assert_eq!(code, Some(0));
    // The drain, then at most 2 s for each exporter's last attempt.
    let took = stopping.elapsed();
    assert!(took < Duration::from_secs(6), "the stop took {took:?}");
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_sampled_trace_is_followed_through_the_check_api_and_rls() {
    let (collector, address) = Collector::start().await;
    // So small a ratio that no decision is drawn: only the callers' own traces are spanned.
    let telemetry =
        telemetry(address).replace("sampling_ratio = 1.0", "sampling_ratio = 0.000000001");
    let rls = "[rls]\nlisten = \"127.0.0.1:0\"\n\n[[rls.rule]]\ndomain = \"edge\"\ndescriptor = [\"remote_address\"]\npolicies = [\"three\"]\n";
    let file = config_file(&config("", &format!("{rls}\n{telemetry}")));
    let service = Floodwall::serve_with(Some(file.path()), &QUICK_BATCHES, false);
    let client = Client::new();
    // (trace id, caller's span id, sampled): W3C's flags 01 is sampled, 00 is not.
    let checked = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let unsampled = ("0af7651916cd43dd8448eb211c80319d", "b7ad6b7169203332");
    for ((trace, span), flags) in [(checked, "01"), (unsampled, "00")] {
        let response = client
            .post(service.url("/v1/check"))
            .header("traceparent", format!("00-{trace}-{span}-{flags}"))
            .json(&json!({"policy": "three", "key": "k"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let asked = ("1bf7651916cd43dd8448eb211c80319c", "c7ad6b7169203331");
    let mut rls_client = crate::rls::connect(service.rls.expect("an RLS listener")).await;
    let descriptors = vec![crate::rls::descriptor(&[(
        "remote_address",
        "198.51.100.1",
    )])];
    let mut call = tonic::Request::new(crate::rls::request(descriptors));
    let traceparent = format!("00-{}-{}-01", asked.0, asked.1);
    call.metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    rls_client.should_rate_limit(call).await.unwrap();
    collector
        .wait_for_spans("2 decision spans", |spans| {
            spans
                .iter()
                .filter(|(_, s)| s.name == "floodwall.decision")
                .count()
                == 2
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let decisions = collector.decisions();
    assert_eq!(
        decisions.len(),
        2,
        "the unsampled caller's decision is not spanned"
    );
    let requests = collector.named("floodwall.request");
    for ((trace, caller), front) in [(checked, "check"), (asked, "rls")] {
        let (_, decision) = decisions
            .iter()
            .find(|(_, d)| d.trace_id == hex(trace))
            .unwrap_or_else(|| panic!("no decision in trace {trace}: {decisions:#?}"));
        let (_, request) = requests
            .iter()
            .find(|(_, r)| r.span_id == decision.parent_span_id)
            .expect("the decision's parent is the request's span");
        assert_eq!(request.trace_id, hex(trace));
        assert_eq!(
            request.parent_span_id,
            hex(caller),
            "the caller's span is its parent"
        );
        assert_eq!(
            span_string(request, "floodwall.front").as_deref(),
            Some(front)
        );
        assert_eq!(
            span_string(decision, "floodwall.front").as_deref(),
            Some(front)
        );
    }
}
