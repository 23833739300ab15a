//! Spans for sampled decisions, for whatever `tracing` subscriber the program installs (an
//! OpenTelemetry exporter, say): one `floodwall.decision` span per sampled decision of a
//! [`Gate`](crate::gate::Gate), with one `floodwall.store` child per store call it made.
//!
//! Off until [`sample_decisions`] is given a ratio above zero: an unsampled decision costs one
//! relaxed atomic load, and no span is made for it. A decision made inside a front end's
//! [`CALLER_SPAN`] (its caller asked for a trace) is spanned whenever spans are on. Spans are at `TRACE` level under the
//! target [`TARGET`], so a subscriber that logs at `info` ignores them; route that target to
//! the exporter.
//!
//! The decision span's fields:
//!
//! - `floodwall.policy`: the names of the check's policies, comma-separated;
//! - `floodwall.front`: the front end that asked (`http`, `check`, `rls`, …);
//! - `floodwall.store`: `memory`, `redis` or `plugged`;
//! - `floodwall.outcome`: `allowed`, `denied`, `error` (no decision: the store failed and a
//!   policy fails closed), or `abandoned` (the caller left before its answer);
//! - `floodwall.answered_by`: who decided, as [`Source::as_str`](crate::Source::as_str) names it (`store`,
//!   `fail_open` when the store failed and `on_error` allowed, `local`, `prefetched`, …);
//! - `floodwall.latency_us`: the decision's time in microseconds.
//!
//! The store span's `floodwall.store.outcome` is `ok`, the failure's
//! [`StoreErrorKind`](crate::StoreErrorKind) (`timeout`, `circuit_open`, `redis`, …), or
//! `abandoned` when its caller stopped waiting (a deadline, a reset).
//!
//! Client keys are never recorded: they are a client's to choose, and often personal.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tracing::field::Empty;
use tracing::{Level, Span};

use crate::{Check, Error, StoreError, Verdict};

/// The target of every span this module makes.
pub const TARGET: &str = "floodwall::trace";

/// The decision span's name.
pub const DECISION_SPAN: &str = "floodwall.decision";

/// The store call span's name.
pub const STORE_SPAN: &str = "floodwall.store";

/// The name of a span a front end may run a request in, under [`TARGET`], when its caller
/// asked for it to be traced (a sampled W3C trace context, say): the decisions made inside it
/// are spanned whatever the sampling ratio, as its children.
pub const CALLER_SPAN: &str = "floodwall.request";

/// Decisions are sampled when a draw below this is made from `0..u64::MAX`; 0 is off.
static THRESHOLD: AtomicU64 = AtomicU64::new(0);

/// Spans `ratio` of the decisions of every gate in the process from now on, drawn
/// independently per decision: 0 (the default) spans none, 1 every one. Values outside 0..=1
/// are clamped, NaN is 0.
pub fn sample_decisions(ratio: f64) {
    let ratio = if ratio.is_nan() {
        0.0
    } else {
        ratio.clamp(0.0, 1.0)
    };
    // u64::MAX as f64 rounds up to 2^64, so 1.0 saturates to u64::MAX: every draw is below it.
    let threshold = (ratio * u64::MAX as f64) as u64;
    THRESHOLD.store(threshold, Ordering::Relaxed);
}

/// The ratio [`sample_decisions`] set.
pub fn decision_sampling() -> f64 {
    THRESHOLD.load(Ordering::Relaxed) as f64 / u64::MAX as f64
}

/// Whether decisions are spanned at all: the store's spans are made only then.
#[inline]
fn on() -> bool {
    THRESHOLD.load(Ordering::Relaxed) != 0
}

/// Draws whether the next decision is spanned; a decision made inside a [`CALLER_SPAN`] is,
/// whenever spans are on at all.
#[inline]
fn sampled() -> bool {
    let threshold = THRESHOLD.load(Ordering::Relaxed);
    threshold != 0
        && (threshold == u64::MAX
            || draw() < threshold
            || Span::current()
                .metadata()
                .is_some_and(|m| m.name() == CALLER_SPAN))
}

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let mut bytes = [0u8; 8];
    // A failed draw leaves a fixed odd seed: sampling is then still uniform, only predictable.
    let _ = getrandom::fill(&mut bytes);
    u64::from_le_bytes(bytes) | 1
}

/// xorshift64*: uniform enough for sampling, and no lock, no syscall per draw.
fn draw() -> u64 {
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

/// A span whose outcome field says `abandoned` unless [`Outcome::finish`] recorded another:
/// the caller left before its answer. A disabled span records nothing.
struct Outcome {
    span: Span,
    field: &'static str,
}

impl Outcome {
    fn finish(mut self, outcome: &'static str) {
        self.span.record(self.field, outcome);
        self.span = Span::none();
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        if !self.span.is_disabled() {
            self.span.record(self.field, "abandoned");
        }
    }
}

/// Runs `work` inside `span`; a disabled span costs no enter and exit on every poll.
pub(crate) async fn within<F: Future>(span: &Span, work: F) -> F::Output {
    match span.is_disabled() {
        true => work.await,
        false => tracing::Instrument::instrument(work, span.clone()).await,
    }
}

/// The span of one decision, when it is sampled.
pub(crate) struct DecisionSpan(Outcome);

impl DecisionSpan {
    /// A span for `check` decided for `front` on `store`, or a disabled one when the
    /// decision is not sampled.
    #[inline]
    pub(crate) fn start(check: &Check<'_>, front: &'static str, store: &'static str) -> Self {
        let span = match sampled() {
            false => Span::none(),
            true => tracing::span!(
                target: TARGET,
                Level::TRACE,
                DECISION_SPAN,
                "floodwall.policy" = %PolicyNames(check),
                "floodwall.front" = front,
                "floodwall.store" = store,
                "floodwall.outcome" = Empty,
                "floodwall.answered_by" = Empty,
                "floodwall.latency_us" = Empty,
            ),
        };
        DecisionSpan(Outcome {
            span,
            field: "floodwall.outcome",
        })
    }

    /// The span, to run the decision in (disabled when not sampled).
    pub(crate) fn span(&self) -> &Span {
        &self.0.span
    }

    /// Records how the decision ended and how long it took.
    pub(crate) fn finish(self, outcome: Result<&Verdict, &Error>, took: Duration) {
        if self.0.span.is_disabled() {
            return;
        }
        let (outcome, answered_by) = match outcome {
            Ok(verdict) if verdict.allowed() => ("allowed", verdict.source().as_str()),
            Ok(verdict) => ("denied", verdict.source().as_str()),
            Err(_) => ("error", "none"),
        };
        self.0.span.record("floodwall.answered_by", answered_by);
        // As i64: OpenTelemetry's integers are signed, and an unsigned one arrives as text.
        let latency_us = i64::try_from(took.as_micros()).unwrap_or(i64::MAX);
        self.0.span.record("floodwall.latency_us", latency_us);
        self.0.finish(outcome);
    }
}

/// The span of one store call inside a spanned decision.
pub(crate) struct StoreSpan(Outcome);

impl StoreSpan {
    /// A child of the current decision span, or a disabled span when there is none.
    #[inline]
    pub(crate) fn start() -> Self {
        let parent = match on() {
            true => Span::current(),
            false => Span::none(),
        };
        let span = match parent.metadata().map(|m| m.name()) {
            Some(DECISION_SPAN) => tracing::span!(
                target: TARGET,
                parent: &parent,
                Level::TRACE,
                STORE_SPAN,
                "floodwall.store.outcome" = Empty,
            ),
            _ => Span::none(),
        };
        StoreSpan(Outcome {
            span,
            field: "floodwall.store.outcome",
        })
    }

    /// The span, to run the call in.
    pub(crate) fn span(&self) -> &Span {
        &self.0.span
    }

    /// Records how the call ended.
    pub(crate) fn finish(self, outcome: Result<(), &StoreError>) {
        if self.0.span.is_disabled() {
            return;
        }
        self.0.finish(match outcome {
            Ok(()) => "ok",
            Err(error) => error.kind().as_str(),
        });
    }
}

/// A check's policy names, comma-separated, written only when a span records them.
struct PolicyNames<'a, 'c>(&'a Check<'c>);

impl fmt::Display for PolicyNames<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, policy) in self.0.policies().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(policy.name())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_ratios_map_to_thresholds_and_back() {
        sample_decisions(1.0);
        assert_eq!(THRESHOLD.load(Ordering::Relaxed), u64::MAX);
        assert!((0..1000).all(|_| sampled()));
        sample_decisions(0.0);
        assert!(!on());
        assert!((0..1000).all(|_| !sampled()));
        sample_decisions(f64::NAN);
        assert!(!on());
        sample_decisions(0.25);
        assert!((decision_sampling() - 0.25).abs() < 1e-9);
        let drawn = (0..100_000).filter(|_| sampled()).count();
        // 25 000 expected; 5 standard deviations (137 each) either side.
        assert!((24_300..=25_700).contains(&drawn), "{drawn}");
        sample_decisions(0.0);
    }
}
