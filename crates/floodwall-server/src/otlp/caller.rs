//! A caller's own trace, followed: a request that carries a sampled W3C trace context
//! (`traceparent`, which Envoy sends in its RLS calls' metadata when it traces) runs in a
//! `floodwall.request` span whose parent is the caller's span, so that its decisions join the
//! caller's trace, whatever `sampling_ratio` says. An unsampled or malformed context, or one
//! that arrives while spans are not exported, changes nothing.

use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The W3C header (and gRPC metadata key) that carries a caller's trace context.
pub(crate) const TRACEPARENT: &str = "traceparent";

/// The one header the propagator reads.
struct Traceparent<'a>(&'a str);

impl Extractor for Traceparent<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

/// The span to run a request of `front` in, when spans are exported and its `traceparent`
/// (looked up only then) is a sampled trace context.
pub(crate) fn caller_span<'a>(
    front: &'static str,
    traceparent: impl FnOnce() -> Option<&'a [u8]>,
) -> Option<Span> {
    if floodwall::trace::decision_sampling() == 0.0 {
        return None;
    }
    let traceparent = std::str::from_utf8(traceparent()?).ok()?;
    let context = TraceContextPropagator::new().extract(&Traceparent(traceparent));
    let caller = context.span().span_context().clone();
    if !caller.is_valid() || !caller.is_sampled() {
        return None;
    }
    let span = tracing::span!(
        target: floodwall::trace::TARGET,
        tracing::Level::TRACE,
        floodwall::trace::CALLER_SPAN,
        "floodwall.front" = front,
    );
    let _ = span.set_parent(context);
    Some(span)
}

/// Runs `work` inside `span`, if there is one.
pub(crate) async fn within<F: Future>(span: Option<Span>, work: F) -> F::Output {
    match span {
        Some(span) => tracing::Instrument::instrument(work, span).await,
        None => work.await,
    }
}
