//! What `ShouldRateLimit` answers: one status per descriptor, the RateLimit headers, and on
//! `OVER_LIMIT` the same problem+json body as HTTP's 429 and the violated policies as metadata.

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::HeaderValue;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit,
};
use envoy_types::pb::google::protobuf::{self as pb, value::Kind};
use floodwall::{Calendar, Decision, Mode, Policy, Source, Verdict};
use floodwall_http::RateLimitHeaders;
use http::HeaderMap;

use super::rules::Special;

/// The Envoy unit a policy's period is exactly, if any.
fn unit(policy: &Policy) -> Unit {
    match policy.calendar() {
        Calendar::Months(1) => return Unit::Month,
        Calendar::Months(12) => return Unit::Year,
        Calendar::Weeks(1) => return Unit::Week,
        Calendar::Months(_) | Calendar::Weeks(_) => return Unit::Unknown,
        _ => {}
    }
    period_unit(policy.period())
}

/// The Envoy unit `period` is, as envoyproxy/ratelimit counts units: a week is 7 days, a month
/// 30 and a year 365 (so a file's `unit: month` reports MONTH, as that service does).
pub(crate) fn period_unit(period: Duration) -> Unit {
    const DAY: u64 = 86_400;
    if period.subsec_nanos() != 0 {
        return Unit::Unknown;
    }
    match period.as_secs() {
        1 => Unit::Second,
        60 => Unit::Minute,
        3600 => Unit::Hour,
        DAY => Unit::Day,
        604_800 => Unit::Week,
        2_592_000 => Unit::Month,
        31_536_000 => Unit::Year,
        _ => Unit::Unknown,
    }
}

fn saturating_u32(value: u64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

/// A protobuf Duration.
pub(crate) fn duration(span: Duration) -> pb::Duration {
    pb::Duration {
        seconds: i64::try_from(span.as_secs()).unwrap_or(i64::MAX),
        // Below 10^9, so it fits.
        nanos: span.subsec_nanos() as i32,
    }
}

/// A descriptor no rule limits: OK, nothing to report.
pub(crate) fn not_limited() -> DescriptorStatus {
    DescriptorStatus {
        code: Code::Ok as i32,
        ..DescriptorStatus::default()
    }
}

/// A descriptor limited by `unlimited: true`: OK, with all the remaining a status can carry, as
/// envoyproxy/ratelimit answers (so Envoy's X-RateLimit headers never read as exhausted).
pub(crate) fn unlimited() -> DescriptorStatus {
    DescriptorStatus {
        code: Code::Ok as i32,
        limit_remaining: u32::MAX,
        ..DescriptorStatus::default()
    }
}

/// How long until the window of `period` (counted from the Unix epoch, as envoyproxy/ratelimit
/// counts windows) ends.
fn window_left(period: Duration) -> Duration {
    use floodwall::Clock as _;
    let period_us = u64::try_from(period.as_micros()).unwrap_or(u64::MAX).max(1);
    let now_us = floodwall::SystemClock::new().now_us();
    Duration::from_micros(period_us - now_us % period_us)
}

/// A descriptor limited by `requests_per_unit: 0`, `label` by name and `period` its unit: over
/// the limit when it asked for anything, with nothing remaining until the unit's window ends
/// (and in every window after).
pub(crate) fn zero(label: &str, period: Duration, over: bool) -> DescriptorStatus {
    let reset = window_left(period);
    DescriptorStatus {
        code: if over { Code::OverLimit } else { Code::Ok } as i32,
        current_limit: Some(RateLimit {
            name: label.to_owned(),
            requests_per_unit: 0,
            unit: period_unit(period) as i32,
        }),
        limit_remaining: 0,
        duration_until_reset: Some(duration(reset)),
        quota: None,
    }
}

/// The status of a descriptor limited by `decisions` (its policies' parts of the verdict):
/// OVER_LIMIT when an enforced one denies; the limit, remaining and reset of the policy closest
/// to denying. A verdict admitted without counting (the store failed open) reports no remaining
/// or reset.
pub(crate) fn status<'p>(
    decisions: impl Iterator<Item = (&'p Policy, &'p Decision)>,
    source: Source,
) -> DescriptorStatus {
    let mut over = false;
    let mut closest: Option<(&Policy, &Decision)> = None;
    for (policy, decision) in decisions {
        over |= !decision.allowed && policy.mode() == Mode::Enforce;
        let nearer = closest.is_none_or(|(_, best)| {
            (decision.allowed, decision.remaining) < (best.allowed, best.remaining)
        });
        if nearer {
            closest = Some((policy, decision));
        }
    }
    let Some((policy, decision)) = closest else {
        return not_limited();
    };
    let counted = source != Source::FailOpen;
    DescriptorStatus {
        code: if over { Code::OverLimit } else { Code::Ok } as i32,
        current_limit: Some(RateLimit {
            name: policy.name().to_owned(),
            requests_per_unit: saturating_u32(policy.limit()),
            unit: unit(policy) as i32,
        }),
        limit_remaining: if counted {
            saturating_u32(decision.remaining)
        } else {
            0
        },
        duration_until_reset: counted.then(|| duration(decision.reset_after)),
        quota: None,
    }
}

/// The labels of the `requests_per_unit: 0` limits that were asked for units, and the whole
/// seconds until the last of their windows ends.
pub(crate) fn zeros_hit<'s>(
    specials: impl Iterator<Item = &'s (Special<'s>, u64)>,
) -> (Vec<&'s str>, u64) {
    let mut labels = Vec::new();
    let mut wait = 0;
    for (special, units) in specials {
        if let (Special::Zero { label, period }, 1..) = (special, units) {
            labels.push(*label);
            let left = window_left(*period);
            wait = wait.max(left.as_secs() + u64::from(left.subsec_nanos() > 0));
        }
    }
    (labels, wait.max(1))
}

/// Sets `Retry-After` among `headers` to `seconds`, replacing the verdict's own.
pub(crate) fn set_retry_after(headers: &mut Vec<HeaderValue>, seconds: u64) {
    headers.retain(|header| !header.key.eq_ignore_ascii_case("retry-after"));
    headers.push(HeaderValue {
        key: "retry-after".to_owned(),
        value: seconds.to_string(),
        raw_value: Vec::new(),
    });
}

/// The rate-limit headers an HTTP route would send for `verdict`, as Envoy header values.
pub(crate) fn headers(headers: &RateLimitHeaders, verdict: &Verdict) -> Vec<HeaderValue> {
    let mut map = HeaderMap::new();
    headers.write(&mut map, verdict);
    map.iter()
        .filter_map(|(name, value)| {
            Some(HeaderValue {
                key: name.as_str().to_owned(),
                value: value.to_str().ok()?.to_owned(),
                raw_value: Vec::new(),
            })
        })
        .collect()
}

/// `{"violated_policies": [...]}`, the dynamic metadata of a denial.
pub(crate) fn violated_metadata(violated: &[&str]) -> pb::Struct {
    let list = pb::ListValue {
        values: violated
            .iter()
            .map(|name| pb::Value {
                kind: Some(Kind::StringValue((*name).to_owned())),
            })
            .collect(),
    };
    let mut metadata = pb::Struct::default();
    metadata.fields.insert(
        "violated_policies".to_owned(),
        pb::Value {
            kind: Some(Kind::ListValue(list)),
        },
    );
    metadata
}

#[cfg(test)]
mod tests {
    use super::*;
    use floodwall::Algorithm;

    #[test]
    fn envoy_units_are_reported_only_when_the_period_is_one() {
        let with = |period: u64| {
            let policy = Policy::new("p", Algorithm::FixedWindow, 5, Duration::from_secs(period));
            unit(&policy.unwrap())
        };
        assert_eq!(with(1), Unit::Second);
        assert_eq!(with(60), Unit::Minute);
        assert_eq!(with(3600), Unit::Hour);
        assert_eq!(with(86_400), Unit::Day);
        assert_eq!(with(30), Unit::Unknown);
        assert_eq!(with(7 * 86_400), Unit::Week);
        assert_eq!(with(30 * 86_400), Unit::Month);
        assert_eq!(with(365 * 86_400), Unit::Year);
        assert_eq!(with(2 * 86_400), Unit::Unknown);
        assert_eq!(unit(&Policy::weekly("w", 5, 1).unwrap()), Unit::Week);
        assert_eq!(unit(&Policy::monthly("m", 5, 1).unwrap()), Unit::Month);
        assert_eq!(unit(&Policy::monthly("y", 5, 12).unwrap()), Unit::Year);
        assert_eq!(unit(&Policy::monthly("q", 5, 3).unwrap()), Unit::Unknown);
    }
}
