//! `[telemetry]`: OpenTelemetry export (OTLP over gRPC) of sampled decisions as spans and of
//! the service's metrics. Absent, nothing is exported and no exporter runs.

use std::time::Duration;

use super::error::Diagnostics;
use super::raw::RawConfig;
use super::validate::{duration, parse_or};

/// `[telemetry]`: where spans and metrics go, and how many decisions are spanned.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryConfig {
    /// The collector's OTLP/gRPC endpoint, `http://host:port` (cleartext HTTP/2: TLS to the
    /// collector is not built in).
    pub endpoint: String,
    /// The fraction of decisions spanned, from 0 (none: metrics only) to 1 (every one).
    pub sampling_ratio: f64,
    /// The `service.name` resource attribute of everything exported.
    pub service_name: String,
    /// Whether the metrics (those of `/metrics`) are exported too.
    pub metrics: bool,
    /// How often metrics are exported.
    pub metrics_interval: Duration,
}

/// The default `sampling_ratio`: one decision in a hundred.
pub const DEFAULT_SAMPLING_RATIO: f64 = 0.01;

/// The default `metrics_interval`.
pub const DEFAULT_METRICS_INTERVAL: Duration = Duration::from_secs(10);

/// The shortest `metrics_interval`: an export a tenth of a second is already more than any
/// collector wants.
const SHORTEST_METRICS_INTERVAL: Duration = Duration::from_millis(100);

pub(super) fn telemetry(
    raw: &RawConfig,
    diagnostics: &mut Diagnostics<'_>,
) -> Option<TelemetryConfig> {
    let section = raw.telemetry.as_ref()?;
    let endpoint = parse_or(
        diagnostics,
        &section.endpoint,
        |text| {
            let uri: http::Uri = text
                .parse()
                .map_err(|_| format!("endpoint {text:?} is not a URL"))?;
            match (uri.scheme_str(), uri.authority()) {
                (Some("http"), Some(_)) => Ok(text.clone()),
                (Some("https"), _) => Err(format!(
                    "endpoint {text:?}: TLS to the collector is not supported"
                )),
                _ => Err(format!("endpoint {text:?} must be http://host:port")),
            }
        },
        Some(
            "the collector's OTLP/gRPC address, e.g. \"http://127.0.0.1:4317\"; for TLS, send to a collector agent on the node or in the pod, which forwards over TLS",
        ),
    );
    let sampling_ratio = section.sampling_ratio.as_ref().and_then(|ratio| {
        parse_or(
            diagnostics,
            ratio,
            |ratio| {
                Some(*ratio)
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or(format!("sampling_ratio {ratio} must be from 0 to 1"))
            },
            Some("the fraction of decisions traced, e.g. 0.01 for one in a hundred (0: metrics only)"),
        )
    });
    let service_name = section.service_name.as_ref().and_then(|name| {
        parse_or(
            diagnostics,
            name,
            |name| {
                Some(name.clone())
                    .filter(|n| !n.is_empty() && n.len() <= 255 && !n.chars().any(char::is_control))
                    .ok_or(format!(
                        "service_name {name:?} must be 1 to 255 printable characters"
                    ))
            },
            Some("the service.name collectors group spans and metrics by, e.g. \"floodwall\""),
        )
    });
    let metrics_interval = section.metrics_interval.as_ref().and_then(|interval| {
        parse_or(
            diagnostics,
            interval,
            |text| match duration(text)? {
                every if every >= SHORTEST_METRICS_INTERVAL => Ok(every),
                _ => Err(format!("metrics_interval {text:?} must be at least 100ms")),
            },
            Some("how often metrics are exported, e.g. \"10s\""),
        )
    });
    Some(TelemetryConfig {
        endpoint: endpoint?,
        sampling_ratio: sampling_ratio.unwrap_or(DEFAULT_SAMPLING_RATIO),
        service_name: service_name.unwrap_or_else(|| "floodwall".to_owned()),
        metrics: section.metrics.unwrap_or(true),
        metrics_interval: metrics_interval.unwrap_or(DEFAULT_METRICS_INTERVAL),
    })
}
