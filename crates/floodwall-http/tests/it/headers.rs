//! The headers under random policies and timings: every RateLimit field parses as RFC 9651 with
//! the draft's types (G3), and every Retry-After is whole seconds, at least 1, not earlier than
//! the denying policies' `t`, and honest: waiting it out admits the same request (G2).

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use floodwall::{Algorithm, Limiter, ManualClock, MemoryStore, Policy};
use floodwall_http::{HeaderMode, RateLimitLayer};
use http::StatusCode;
use proptest::prelude::*;
use tower::ServiceExt;

use crate::support::{cost_from_header, get_from, parse_list};

fn ceil_seconds(duration: Duration) -> i64 {
    i64::try_from(duration.as_nanos().div_ceil(1_000_000_000)).unwrap()
}

fn algorithm() -> impl Strategy<Value = Algorithm> {
    prop::sample::select(Algorithm::ALL.to_vec())
}

async fn run(policy: Policy, steps: Vec<(u64, u64)>) -> Result<(), TestCaseError> {
    let clock = ManualClock::new(1_700_000_000_000_000);
    let limiter = Limiter::new(MemoryStore::builder().clock(clock.clone()).build());
    let layer = RateLimitLayer::builder(limiter, policy.clone())
        .cost(cost_from_header)
        .headers(HeaderMode::Both)
        .build();
    let app = Router::new()
        .route("/", get(|| async { "hello" }))
        .route_layer(layer);
    let request = |cost: u64| {
        let mut request = get_from("/", "192.0.2.1:1");
        request.headers_mut().insert("x-cost", cost.into());
        request
    };
    for (advance_ms, cost) in steps {
        clock.advance(Duration::from_millis(advance_ms));
        let response = app.clone().oneshot(request(cost)).await.unwrap();
        let headers = response.headers();
        let quota = parse_list(headers, "ratelimit-policy");
        let state = parse_list(headers, "ratelimit");
        prop_assert_eq!(quota.len(), 1);
        prop_assert_eq!(&quota[0].name, policy.name());
        prop_assert_eq!(
            quota[0].param("q"),
            i64::try_from(policy.capacity()).unwrap()
        );
        if policy.algorithm() == Algorithm::Concurrency {
            // Requests in flight have no window.
            prop_assert_eq!(quota[0].unit.as_deref(), Some("concurrent-requests"));
            prop_assert!(quota[0].params.iter().all(|(key, _)| key != "w"));
        } else {
            prop_assert_eq!(quota[0].unit.as_deref(), None);
            prop_assert_eq!(quota[0].param("w"), ceil_seconds(policy.period()).max(1));
        }
        prop_assert!(state[0].param("r") >= 0 && state[0].param("t") >= 0);
        if response.status() == StatusCode::OK {
            prop_assert!(!headers.contains_key("retry-after"));
            continue;
        }
        prop_assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry: i64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
        prop_assert!(retry >= 1);
        prop_assert!(retry >= state[0].param("t"), "Retry-After before t");
        prop_assert!(
            retry <= ceil_seconds(policy.period() * 2).max(1),
            "retry {retry}"
        );
        // Honest: after exactly Retry-After seconds the same request goes through.
        clock.advance(Duration::from_secs(retry.unsigned_abs()));
        let again = app.clone().oneshot(request(cost)).await.unwrap();
        prop_assert_eq!(
            again.status(),
            StatusCode::OK,
            "not admitted after Retry-After"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn retry_after_and_ratelimit_fields_hold_for_any_policy_and_timing(
        algorithm in algorithm(),
        limit in 1u64..12,
        period_ms in 1u64..150_000,
        steps in prop::collection::vec((0u64..4_000, 1u64..4), 1..40),
    ) {
        let policy = Policy::new("p", algorithm, limit, Duration::from_millis(period_ms)).unwrap();
        let steps = steps.into_iter().map(|(ms, cost)| (ms, cost.min(limit))).collect();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(run(policy, steps))?;
    }
}

/// A client that paces itself by `RateLimit-Policy` alone — never more than `q` units in any
/// `w` seconds — sends `steps` (milliseconds since its previous attempt) and skips any attempt
/// that would break its own pacing; every request it does send must be admitted.
async fn paced_client(policy: Policy, steps: Vec<u64>) -> Result<(), TestCaseError> {
    let clock = ManualClock::new(1_700_000_000_000_000);
    let limiter = Limiter::new(MemoryStore::builder().clock(clock.clone()).build());
    let layer = RateLimitLayer::builder(limiter, policy.clone()).build();
    let app = Router::new()
        .route("/", get(|| async { "hello" }))
        .route_layer(layer);
    let first = app
        .clone()
        .oneshot(get_from("/", "192.0.2.1:1"))
        .await
        .unwrap();
    let quota = parse_list(first.headers(), "ratelimit-policy");
    let (q, w) = (quota[0].param("q"), quota[0].param("w"));
    let window_ms = u64::try_from(w).unwrap() * 1000;
    let mut now_ms = 0u64;
    let mut sent = vec![0u64];
    for advance_ms in steps {
        clock.advance(Duration::from_millis(advance_ms));
        now_ms += advance_ms;
        let recent = sent.iter().filter(|&&t| t + window_ms > now_ms).count();
        if i64::try_from(recent).unwrap() >= q {
            continue;
        }
        let response = app
            .clone()
            .oneshot(get_from("/", "192.0.2.1:1"))
            .await
            .unwrap();
        prop_assert_eq!(
            response.status(),
            StatusCode::OK,
            "{:?} denied a client keeping to q={} per w={} s at {} ms (sent at {:?})",
            policy,
            q,
            w,
            now_ms,
            sent
        );
        sent.push(now_ms);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// `q` and `w` are a promise: for the buckets `q` is the burst and `w` the time to refill
    /// it (a bucket of 2/s with a burst of 10 says `q=10;w=5`, not `w=1`), and a client that
    /// keeps to `q` per `w` is never denied, by any algorithm whose count is exact.
    #[test]
    fn a_client_keeping_to_q_per_w_is_never_denied(
        algorithm in prop::sample::select(vec![
            Algorithm::TokenBucket, Algorithm::Gcra, Algorithm::FixedWindow, Algorithm::SlidingLog,
        ]),
        limit in 1u64..8,
        burst_factor in 1u64..5,
        period_ms in 1u64..4_000,
        steps in prop::collection::vec(0u64..3_000, 1..60),
    ) {
        let period = Duration::from_millis(period_ms);
        let mut policy = Policy::new("p", algorithm, limit, period).unwrap();
        if algorithm.has_burst() {
            policy = policy.with_burst(limit * burst_factor).unwrap();
        }
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(paced_client(policy, steps))?;
    }
}

#[tokio::test]
async fn a_bucket_advertises_its_burst_over_the_time_to_refill_it() {
    let bucket = Policy::new("api", Algorithm::TokenBucket, 2, Duration::from_secs(1))
        .unwrap()
        .with_burst(10)
        .unwrap();
    let limiter = Limiter::new(MemoryStore::new());
    let app = Router::new()
        .route("/", get(|| async { "hello" }))
        .route_layer(RateLimitLayer::new(limiter, bucket));
    let response = app.oneshot(get_from("/", "192.0.2.1:1")).await.unwrap();
    assert_eq!(response.headers()["ratelimit-policy"], "\"api\";q=10;w=5");
}

/// `RateLimitHeaders` prepares `RateLimit-Policy` for the policies it was built for, and a
/// verdict on any other policies still gets its own: another name, another quota, another
/// window, or fewer policies.
#[tokio::test]
async fn a_verdict_on_other_policies_gets_their_own_policy_header() {
    use floodwall_http::RateLimitHeaders;
    let policy = |name: &str, limit: u64, seconds: u64| {
        Policy::new(
            name,
            Algorithm::FixedWindow,
            limit,
            Duration::from_secs(seconds),
        )
        .unwrap()
    };
    let prepared = [policy("a", 10, 60), policy("b", 5, 1)];
    let headers = RateLimitHeaders::new(HeaderMode::Draft, &prepared);
    let limiter = Limiter::new(MemoryStore::new());
    let cases: [(&[Policy], &str); 8] = [
        (&prepared, "\"a\";q=10;w=60, \"b\";q=5;w=1"),
        (
            &[policy("c", 10, 60), policy("b", 5, 1)],
            "\"c\";q=10;w=60, \"b\";q=5;w=1",
        ),
        (
            &[policy("a", 11, 60), policy("b", 5, 1)],
            "\"a\";q=11;w=60, \"b\";q=5;w=1",
        ),
        (
            &[policy("a", 10, 61), policy("b", 5, 1)],
            "\"a\";q=10;w=61, \"b\";q=5;w=1",
        ),
        // The same differences in every policy at once.
        (
            &[policy("c", 10, 60), policy("d", 5, 1)],
            "\"c\";q=10;w=60, \"d\";q=5;w=1",
        ),
        (
            &[policy("a", 11, 60), policy("b", 6, 1)],
            "\"a\";q=11;w=60, \"b\";q=6;w=1",
        ),
        (
            &[policy("a", 10, 61), policy("b", 5, 2)],
            "\"a\";q=10;w=61, \"b\";q=5;w=2",
        ),
        (&prepared[..1], "\"a\";q=10;w=60"),
    ];
    for (policies, expected) in cases {
        let check = floodwall::Check::new(policies, b"k", 1).unwrap();
        let verdict = limiter.decide(&check).await.unwrap();
        let mut map = http::HeaderMap::new();
        headers.write(&mut map, &verdict);
        assert_eq!(map["ratelimit-policy"], expected);
    }
}
