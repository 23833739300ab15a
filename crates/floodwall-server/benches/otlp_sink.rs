//! A collector that takes OTLP/gRPC spans and metrics and keeps nothing but their counts: the
//! far end of `bench/telemetry.sh`, so that the service's exporters export for real.
//!
//! `otlp_sink --listen 127.0.0.1:PORT`: serves until killed, printing the spans and metric
//! exports received each second (one JSON line) to standard output. Run without `--listen`
//! (as `cargo bench` does), it only says how to run it.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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

#[derive(Clone, Default)]
struct Counts {
    spans: Arc<AtomicU64>,
    metric_exports: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl TraceService for Counts {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans: usize = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.spans.fetch_add(spans as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Counts {
    async fn export(
        &self,
        _request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.metric_exports.fetch_add(1, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(listen) = args
        .iter()
        .position(|a| a == "--listen")
        .and_then(|at| args.get(at + 1))
    else {
        eprintln!("otlp_sink: run by bench/telemetry.sh (needs --listen ADDR)");
        return;
    };
    let listen: std::net::SocketAddr = listen.parse().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let counts = Counts::default();
        let routes = tonic::service::Routes::new(TraceServiceServer::new(counts.clone()))
            .add_service(MetricsServiceServer::new(counts.clone()))
            .into_axum_router();
        let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
        tokio::spawn(async move { axum::serve(listener, routes).await });
        let mut every = tokio::time::interval(Duration::from_secs(1));
        loop {
            every.tick().await;
            println!(
                "{{\"spans\": {}, \"metric_exports\": {}}}",
                counts.spans.load(Ordering::Relaxed),
                counts.metric_exports.load(Ordering::Relaxed)
            );
        }
    });
}
