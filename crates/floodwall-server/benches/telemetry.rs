//! What OpenTelemetry costs a decision: a memory-store decision through a check API's gate,
//! with the service's `tracing` layer sending spans to an OpenTelemetry batch processor (its
//! exporter discards them, so the collector's side is not measured), at sampling off, 1 % and
//! 100 %; and the metrics one decision records (its latency histogram and two counters), into
//! Prometheus's recorder alone and into it and the OTLP recorder together.
//!
//! `cargo bench -p floodwall-server --bench telemetry`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use floodwall::gate::{Front, Gate, Passing};
use floodwall::{Algorithm, Check, Limiter, MemoryStore, Policy};
use metrics::{Key, Label, Recorder};
use metrics_exporter_prometheus::PrometheusBuilder;
use metrics_util::layers::FanoutBuilder;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;

/// Takes every batch and keeps nothing.
#[derive(Debug)]
struct Discard;

impl SpanExporter for Discard {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        drop(batch);
        std::future::ready(Ok(()))
    }
}

impl PushMetricExporter for Discard {
    fn export(&self, _metrics: &ResourceMetrics) -> impl Future<Output = OTelSdkResult> + Send {
        std::future::ready(Ok(()))
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }

    fn temporality(&self) -> Temporality {
        Temporality::Cumulative
    }
}

/// The service's latency buckets.
const BUCKETS: [f64; 16] = [
    0.000_002, 0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001,
    0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
];

fn decision_spans(c: &mut Criterion) {
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(Discard)
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("floodwall"))
        .with_filter(
            tracing_subscriber::filter::Targets::new()
                .with_target(floodwall::trace::TARGET, tracing::Level::TRACE),
        );
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer)).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let policy = Policy::new(
        "bench",
        Algorithm::Gcra,
        1_000_000_000,
        Duration::from_secs(1),
    )
    .unwrap();
    let policies = [policy];
    let gate = Gate::new(Limiter::new(MemoryStore::new()), Front::Check);
    let keys: Vec<String> = (0..10_000).map(|i| format!("client-{i}")).collect();
    let mut group = c.benchmark_group("decision_spans");
    for (label, ratio) in [("off", 0.0), ("1%", 0.01), ("100%", 1.0)] {
        floodwall::trace::sample_decisions(ratio);
        let mut next = 0;
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter(|| {
                next = (next + 1) % keys.len();
                let check = Check::new(&policies, keys[next].as_bytes(), 1);
                let passage = runtime.block_on(gate.pass(check, Passing::default()));
                black_box(passage.outcome().is_ok())
            });
        });
    }
    floodwall::trace::sample_decisions(0.0);
    group.finish();
    let _ = provider.shutdown();
}

fn decision_metrics(c: &mut Criterion) {
    let histogram_key = Key::from_parts(
        "floodwall_check_duration_seconds",
        vec![Label::new("route", "POST /v1/check")],
    );
    let decided_key = Key::from_parts(
        "floodwall_decisions_total",
        vec![
            Label::new("policy", "bench"),
            Label::new("outcome", "allowed"),
        ],
    );
    let answered_key = Key::from_parts(
        "floodwall_requests_total",
        vec![
            Label::new("route", "POST /v1/check"),
            Label::new("status", "2xx"),
        ],
    );
    let metadata = metrics::Metadata::new("bench", metrics::Level::INFO, None);
    let prometheus = || {
        PrometheusBuilder::new()
            .set_buckets(&BUCKETS)
            .unwrap()
            .build_recorder()
    };
    let meters = SdkMeterProvider::builder()
        // Aggregated as the service aggregates; exported once a minute, so hardly at all here.
        .with_reader(
            PeriodicReader::builder(Discard)
                .with_interval(Duration::from_secs(60))
                .build(),
        )
        .build();
    let meter = opentelemetry::metrics::MeterProvider::meter(&meters, "floodwall");
    let both = FanoutBuilder::default()
        .add_recorder(prometheus())
        .add_recorder(floodwall_server::otlp::OtlpRecorder::new(meter, &BUCKETS))
        .build();
    let alone = prometheus();
    let recorders: [(&str, &dyn Recorder); 2] =
        [("prometheus", &alone), ("prometheus+otlp", &both)];
    let mut group = c.benchmark_group("decision_metrics");
    for (label, recorder) in recorders {
        let latency = recorder.register_histogram(&histogram_key, &metadata);
        let decided = recorder.register_counter(&decided_key, &metadata);
        let answered = recorder.register_counter(&answered_key, &metadata);
        let mut sample = 0.0;
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter(|| {
                sample = (sample + 0.000_001) % 0.001;
                latency.record(black_box(sample));
                decided.increment(1);
                answered.increment(1);
            });
        });
    }
    group.finish();
}

criterion_group!(benches, decision_spans, decision_metrics);
criterion_main!(benches);
