//! OpenTelemetry export over OTLP/gRPC, when `[telemetry]` is configured: the library's
//! sampled decision spans (through `tracing-opentelemetry`) and every metric of `/metrics`
//! (through [`OtlpRecorder`]). Nothing here runs, and no exporter thread exists, without it.

pub(crate) mod caller;
mod metrics;

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};

use crate::config::TelemetryConfig;

pub use self::metrics::OtlpRecorder;

/// How long one export may take before it is given up (and its data dropped). A stopping
/// service waits at most this for each exporter's last export, so that a collector that is
/// down cannot hold a stop past a grace period (the drain's 4 s, these, and some margin fit in
/// Kubernetes' default 30 s, and in the 15 s of `deploy/kubernetes`).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The span exporter could not be built.
    #[error("cannot export spans to {endpoint}: {source}")]
    Spans {
        /// The configured endpoint.
        endpoint: String,
        /// What the exporter said.
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// The metric exporter could not be built.
    #[error("cannot export metrics to {endpoint}: {source}")]
    Metrics {
        /// The configured endpoint.
        endpoint: String,
        /// What the exporter said.
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// The running exporters; [`Telemetry::shutdown`] sends what they still hold.
#[derive(Debug)]
pub struct Telemetry {
    spans: Option<SdkTracerProvider>,
    metrics: Option<SdkMeterProvider>,
    recorder: Option<OtlpRecorder>,
}

impl Telemetry {
    /// Starts the exporters `config` asks for: spans when its sampling ratio is above 0
    /// (setting the library's decision sampling to it), metrics when they are on. Must be
    /// called inside the Tokio runtime that will carry the exports.
    ///
    /// # Errors
    ///
    /// [`TelemetryError`] when an exporter cannot be built from the endpoint.
    pub fn start(config: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
        let resource = Resource::builder()
            .with_service_name(config.service_name.clone())
            .build();
        let spans = match config.sampling_ratio > 0.0 {
            true => {
                let exporter = opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(config.endpoint.clone())
                    .with_timeout(EXPORT_TIMEOUT)
                    .build()
                    .map_err(|source| TelemetryError::Spans {
                        endpoint: config.endpoint.clone(),
                        source,
                    })?;
                Some(
                    SdkTracerProvider::builder()
                        .with_batch_exporter(exporter)
                        // The library draws which decisions are spanned; every span it makes
                        // is kept.
                        .with_sampler(Sampler::AlwaysOn)
                        .with_resource(resource.clone())
                        .build(),
                )
            }
            false => None,
        };
        let (metrics, recorder) = match config.metrics {
            true => {
                let exporter = opentelemetry_otlp::MetricExporter::builder()
                    .with_tonic()
                    .with_endpoint(config.endpoint.clone())
                    .with_timeout(EXPORT_TIMEOUT)
                    .build()
                    .map_err(|source| TelemetryError::Metrics {
                        endpoint: config.endpoint.clone(),
                        source,
                    })?;
                let reader = PeriodicReader::builder(exporter)
                    .with_interval(config.metrics_interval)
                    .build();
                let provider = SdkMeterProvider::builder()
                    .with_reader(reader)
                    .with_resource(resource)
                    .build();
                let meter = opentelemetry::metrics::MeterProvider::meter(&provider, "floodwall");
                let recorder = OtlpRecorder::new(meter, &crate::telemetry::BUCKETS);
                (Some(provider), Some(recorder))
            }
            false => (None, None),
        };
        if spans.is_some() {
            floodwall::trace::sample_decisions(config.sampling_ratio);
        }
        Ok(Telemetry {
            spans,
            metrics,
            recorder,
        })
    }

    /// The tracer the `tracing` layer sends the library's spans to, when spans are exported.
    pub fn tracer(&self) -> Option<SdkTracer> {
        self.spans
            .as_ref()
            .map(|provider| provider.tracer("floodwall"))
    }

    /// Installs the metric recorder beside Prometheus's, when metrics are exported. Call it
    /// before the service starts: metrics registered earlier are not exported.
    pub fn install_metrics(&mut self) {
        if let Some(recorder) = self.recorder.take() {
            crate::telemetry::export_metrics_too(recorder);
        }
    }

    /// Stops sampling, then exports what the exporters still hold and stops them; blocks
    /// until they are done, each for at most its export timeout (2 s).
    pub fn shutdown(self) {
        floodwall::trace::sample_decisions(0.0);
        if let Some(provider) = self.spans {
            let _ = provider.shutdown_with_timeout(EXPORT_TIMEOUT);
        }
        if let Some(provider) = self.metrics {
            let _ = provider.shutdown();
        }
    }
}
