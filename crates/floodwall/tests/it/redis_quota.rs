//! The quota script against the Rust `Quota::report` on the same random report sequences,
//! with an injected clock; and two stores on one server granting from one set of shares.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use floodwall::core::quota::{Capacity, Quota, Usage};
use floodwall::redis::{RedisConfig, RedisStore};
use floodwall::{Algorithm, Clock, ManualClock, Policy, StoreError};
use floodwall_testkit::RedisServer;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const EPOCH_US: u64 = 1_767_225_600_000_000;
const TTL: Duration = Duration::from_secs(10);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn store(server: &RedisServer, clock: &ManualClock, prefix: String) -> RedisStore {
    let config = RedisConfig::new(server.url())
        .prefix(prefix)
        .timeout(Duration::from_secs(5))
        .clock(clock.clone());
    RedisStore::connect(config).await.unwrap()
}

fn policies() -> impl Strategy<Value = Policy> {
    let algorithm = proptest::sample::select(vec![
        Algorithm::FixedWindow,
        Algorithm::SlidingWindow,
        Algorithm::TokenBucket,
        Algorithm::Gcra,
    ]);
    (
        algorithm,
        1u64..=400,
        1u64..=120,
        proptest::option::of(1u64..=500),
    )
        .prop_map(|(algorithm, limit, seconds, burst)| {
            let policy =
                Policy::new("shared", algorithm, limit, Duration::from_secs(seconds)).unwrap();
            match burst {
                Some(burst) if algorithm.has_burst() => policy.with_burst(burst).unwrap(),
                _ => policy,
            }
        })
}

/// (advance µs, reporter, requests, elapsed µs)
fn reports() -> impl Strategy<Value = Vec<(u64, u64, u64, u64)>> {
    let advance = prop_oneof![2 => Just(0u64), 5 => 0u64..5_000_000, 1 => 0u64..15_000_000];
    // Reporter ids across the whole u64 range: the script keeps them as hex and must order them
    // as the numbers are ordered.
    let reporter = prop_oneof![0u64..6, Just(u64::MAX), Just(1 << 60)];
    proptest::collection::vec((advance, reporter, 0u64..3_000, 0u64..10_000_000), 1..40)
}

#[test]
fn the_quota_script_agrees_with_the_rust_shares() {
    let server = RedisServer::start().unwrap();
    let rt = runtime();
    let cases = AtomicU64::new(0);
    let mut runner = TestRunner::new(Config {
        cases: 48,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&(policies(), reports()), |(policy, reports)| {
            let case = cases.fetch_add(1, Ordering::Relaxed);
            let clock = ManualClock::new(EPOCH_US);
            let redis = rt.block_on(store(&server, &clock, format!("quota{case}")));
            let capacity = Capacity::of(&policy).unwrap();
            let mut quota = Quota::new();
            for (advance, reporter, requests, elapsed_us) in reports {
                clock.advance_us(advance);
                let usage = Usage {
                    requests,
                    elapsed_us,
                };
                let expected = quota.report(
                    reporter,
                    usage,
                    clock.now_us(),
                    capacity,
                    TTL.as_micros() as u64,
                );
                let granted = rt
                    .block_on(redis.report_quota(&policy, b"tenant", reporter, usage, TTL))
                    .unwrap();
                prop_assert_eq!(granted, expected);
            }
            Ok(())
        })
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_grant_from_one_set_of_shares() {
    let server = RedisServer::start().unwrap();
    let clock = ManualClock::new(EPOCH_US);
    let a = store(&server, &clock, "shared".into()).await;
    let b = store(&server, &clock, "shared".into()).await;
    let policy = Policy::new("api", Algorithm::Gcra, 800, Duration::from_secs(60)).unwrap();
    let busy = Usage {
        requests: 10_000,
        elapsed_us: 60_000_000,
    };
    // One Envoy streams to each instance; neither instance knows the other's reporter.
    let first = a
        .report_quota(&policy, b"acme", 1, busy, TTL)
        .await
        .unwrap();
    let second = b
        .report_quota(&policy, b"acme", 2, busy, TTL)
        .await
        .unwrap();
    assert_eq!((first.per_period, second.per_period), (700, 100));
    clock.advance(Duration::from_secs(1));
    let first = a
        .report_quota(&policy, b"acme", 1, busy, TTL)
        .await
        .unwrap();
    clock.advance(Duration::from_secs(1));
    let second = b
        .report_quota(&policy, b"acme", 2, busy, TTL)
        .await
        .unwrap();
    assert_eq!((first.per_period, second.per_period), (350, 350));
    // Another tenant shares its own rate.
    let other = a
        .report_quota(&policy, b"globex", 1, busy, TTL)
        .await
        .unwrap();
    assert_eq!(other.per_period, 700);
    // The state expires with its last share.
    let key = "shared:api:q{acme}";
    let ttl_ms: i64 = server.cli(&["PTTL", key]).unwrap().parse().unwrap();
    assert!(ttl_ms > 0, "{ttl_ms}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_flight_limit_cannot_be_shared() {
    let server = RedisServer::start().unwrap();
    let clock = ManualClock::new(EPOCH_US);
    let redis = store(&server, &clock, "x".into()).await;
    let policy = Policy::new("slots", Algorithm::Concurrency, 5, Duration::from_secs(60)).unwrap();
    let usage = Usage {
        requests: 1,
        elapsed_us: 1,
    };
    let error = redis
        .report_quota(&policy, b"k", 1, usage, TTL)
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Config { .. }), "{error}");
}
