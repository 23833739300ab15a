//! The rate-limit response headers: draft-ietf-httpapi-ratelimit-headers-10 `RateLimit-Policy` and
//! `RateLimit` (RFC 9651 Structured Fields, serialised by `sfv`), legacy `X-RateLimit-*`, and
//! `Retry-After`.

use std::time::Duration;

use floodwall::{Algorithm, Decision, Policy, Verdict};
use http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use sfv::{Integer, KeyRef, ListSerializer, StringRef};
use smallvec::{SmallVec, smallvec};

/// `RateLimit-Policy`.
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`.
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
/// `X-RateLimit-Limit` (legacy).
pub static X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// `X-RateLimit-Remaining` (legacy).
pub static X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// `X-RateLimit-Reset` (legacy; seconds until reset).
pub static X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// Which rate-limit headers responses carry. `Retry-After` is sent on every 429 whatever the mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum HeaderMode {
    /// `RateLimit-Policy` and `RateLimit`, one list item per policy (the default).
    #[default]
    Draft,
    /// `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` for the policy closest
    /// to denying.
    Legacy,
    /// Both sets.
    Both,
    /// No rate-limit headers.
    None,
}

/// Whole seconds, rounded up.
pub(crate) fn ceil_seconds(duration: Duration) -> u64 {
    let seconds = duration.as_secs();
    if duration.subsec_nanos() > 0 {
        seconds.saturating_add(1)
    } else {
        seconds
    }
}

/// A policy's window for `w`, in whole seconds, rounded up, at least 1: the span over which a
/// client can rely on `q` units.
///
/// For the windows that is the period. For the buckets, whose `q` is the burst, it is the time
/// to refill the burst at the policy's rate (`burst × period / limit`): a bucket of 2/s with a
/// burst of 10 says `q=10;w=5`, which both its sustained rate and its burst honour, where
/// `q=10;w=1` would read as 10 per second.
fn window_seconds(policy: &Policy) -> u64 {
    // capacity == limit for the windows, so this is their period.
    let refill_us = (u128::from(policy.capacity()) * u128::from(policy.period_us()))
        .div_ceil(u128::from(policy.limit()));
    ceil_seconds(Duration::from_micros(
        u64::try_from(refill_us).unwrap_or(u64::MAX),
    ))
    .max(1)
}

/// A decision's `t`: for a policy that denies, when the request would be admitted; otherwise when
/// the quota is full again. A 429's `Retry-After` is the latest `t` among enforced denials.
fn reset_seconds(decision: &Decision) -> u64 {
    match decision.retry_after {
        Some(retry_after) if !decision.allowed => ceil_seconds(retry_after),
        _ => ceil_seconds(decision.reset_after),
    }
}

/// The `Retry-After` of a denied verdict: delay-seconds, rounded up, at least 1.
pub fn retry_after_seconds(verdict: &Verdict) -> u64 {
    ceil_seconds(verdict.retry_after().unwrap_or_default()).max(1)
}

fn integer(value: u64) -> Integer {
    // Structured Field Integers stop at 10^15 - 1; no quota or time of ours comes near it.
    Integer::try_from(value).unwrap_or(Integer::MAX)
}

/// One parameter of a list item: a whole number, or a token-like string.
#[derive(Debug, Clone, Copy)]
enum Parameter {
    Integer(u64),
    String(&'static str),
}

/// A Structured Fields List of String items, one per policy, each with its parameters.
fn list<'a, P>(items: impl Iterator<Item = (&'a str, P)>) -> Option<HeaderValue>
where
    P: IntoIterator<Item = (&'static str, Parameter)>,
{
    let mut serializer = ListSerializer::new();
    for (name, parameters) in items {
        // Policy names are 1-64 of [A-Za-z0-9_.-]: always a valid String.
        let Ok(name) = StringRef::from_str(name) else {
            continue;
        };
        let mut item = serializer.bare_item(name);
        for (key, value) in parameters {
            let key = KeyRef::constant(key);
            item = match value {
                Parameter::Integer(value) => item.parameter(key, integer(value)),
                Parameter::String(value) => match StringRef::from_str(value) {
                    Ok(value) => item.parameter(key, value),
                    Err(_) => item,
                },
            };
        }
    }
    let text = serializer.finish()?;
    HeaderValue::from_str(&text).ok()
}

/// Policy name, `q` and `w`: everything `RateLimit-Policy` says about a rate. An in-flight
/// limit has no window: it says `q` and the quota unit `qu="concurrent-requests"`.
fn policy_item(policy: &Policy) -> (&str, SmallVec<[(&'static str, Parameter); 2]>) {
    let q = ("q", Parameter::Integer(policy.capacity()));
    let parameters = if policy.algorithm() == Algorithm::Concurrency {
        smallvec![q, ("qu", Parameter::String("concurrent-requests"))]
    } else {
        smallvec![q, ("w", Parameter::Integer(window_seconds(policy)))]
    };
    (policy.name(), parameters)
}

/// Writes the rate-limit headers of a verdict, as the layer does; for services that decide
/// outside a layer (a check API). Built for the policies a caller usually checks, so that their
/// `RateLimit-Policy` is serialised once; a verdict on other policies still gets headers for
/// its own policies, computed afresh.
#[derive(Debug, Clone)]
pub struct RateLimitHeaders {
    mode: HeaderMode,
    /// The policies `policy_value` describes, as (name, q, w).
    described: Vec<(String, u64, u64)>,
    policy_value: Option<HeaderValue>,
}

impl RateLimitHeaders {
    /// The headers of `mode`, with `RateLimit-Policy` prepared for `policies`.
    pub fn new(mode: HeaderMode, policies: &[Policy]) -> Self {
        RateLimitHeaders {
            mode,
            described: policies
                .iter()
                .map(|p| (p.name().to_owned(), p.capacity(), window_seconds(p)))
                .collect(),
            policy_value: list(policies.iter().map(policy_item)),
        }
    }

    /// `RateLimit-Policy` for the verdict's policies: the prepared value when they are the ones
    /// it was prepared for.
    fn policy_value(&self, verdict: &Verdict) -> Option<HeaderValue> {
        let prepared = verdict.len() == self.described.len()
            && verdict
                .iter()
                .zip(&self.described)
                .all(|((p, _), (name, q, w))| {
                    p.name() == name && p.capacity() == *q && window_seconds(p) == *w
                });
        if prepared {
            self.policy_value.clone()
        } else {
            list(verdict.iter().map(|(policy, _)| policy_item(policy)))
        }
    }

    /// Writes the headers of the mode for `verdict`, and `Retry-After` when it denies. A verdict
    /// admitted without counting (the store failed and `on_error` allowed it) reports only the
    /// policies (`RateLimit-Policy`, `X-RateLimit-Limit`): it has no remaining or reset to tell.
    pub fn write(&self, headers: &mut HeaderMap, verdict: &Verdict) {
        if verdict.source() == floodwall::Source::FailOpen {
            if matches!(self.mode, HeaderMode::Draft | HeaderMode::Both)
                && let Some(policy_value) = self.policy_value(verdict)
            {
                headers.insert(RATELIMIT_POLICY.clone(), policy_value);
            }
            if let (HeaderMode::Legacy | HeaderMode::Both, Some((policy, _))) =
                (self.mode, verdict.iter().next())
            {
                headers.insert(
                    X_RATELIMIT_LIMIT.clone(),
                    HeaderValue::from(policy.capacity()),
                );
            }
            return;
        }
        if matches!(self.mode, HeaderMode::Draft | HeaderMode::Both) {
            let state_value = list(verdict.iter().map(|(policy, decision)| {
                (
                    policy.name(),
                    [
                        ("r", Parameter::Integer(decision.remaining)),
                        ("t", Parameter::Integer(reset_seconds(decision))),
                    ],
                )
            }));
            if let (Some(policy_value), Some(state_value)) =
                (self.policy_value(verdict), state_value)
            {
                headers.insert(RATELIMIT_POLICY.clone(), policy_value);
                headers.insert(RATELIMIT.clone(), state_value);
            }
        }
        if matches!(self.mode, HeaderMode::Legacy | HeaderMode::Both) {
            // The policy closest to denying: fewest units left, then the longest wait.
            let closest = verdict
                .iter()
                .min_by_key(|(_, d)| (d.allowed, d.remaining, std::cmp::Reverse(reset_seconds(d))));
            if let Some((policy, decision)) = closest {
                headers.insert(
                    X_RATELIMIT_LIMIT.clone(),
                    HeaderValue::from(policy.capacity()),
                );
                headers.insert(
                    X_RATELIMIT_REMAINING.clone(),
                    HeaderValue::from(decision.remaining),
                );
                headers.insert(
                    X_RATELIMIT_RESET.clone(),
                    HeaderValue::from(reset_seconds(decision)),
                );
            }
        }
        if !verdict.allowed() {
            headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_seconds(verdict)));
        }
    }
}
