//! The Lua script against the Rust `step` on the same random sequences, with an injected clock
//! (RELIABILITY A11), and all-or-nothing policy pairs against the memory store.

use crate::support::{StoreExt, check_sync};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use floodwall::core::algorithm;
use floodwall::redis::{RedisConfig, RedisStore};
use floodwall::{
    Algorithm, Check, CheckError, ManualClock, MemoryStore, Mode, Policy, Store, Verdict,
};
use floodwall_testkit::RedisServer;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const EPOCH_US: u64 = 1_767_225_600_000_000;

/// Wider than the brute-force models allow: `step` is the oracle here.
fn policy(name: &'static str) -> impl Strategy<Value = Policy> {
    let algorithm = proptest::sample::select(Algorithm::ALL.to_vec());
    (
        algorithm,
        1u64..=50,
        1_000u64..=10_000_000,
        proptest::option::of(1u64..=80),
    )
        .prop_map(move |(algorithm, limit, period_us, burst)| {
            let p = Policy::new(name, algorithm, limit, Duration::from_micros(period_us)).unwrap();
            match burst {
                Some(b) if algorithm.has_burst() => p.with_burst(b).unwrap(),
                _ => p,
            }
        })
}

fn requests() -> impl Strategy<Value = Vec<(u64, u64)>> {
    let advance = prop_oneof![3 => Just(0u64), 4 => 0u64..50_000, 2 => 0u64..3_000_000, 1 => 0u64..30_000_000];
    let cost = prop_oneof![1 => Just(0u64), 6 => Just(1u64), 3 => 0u64..=90];
    proptest::collection::vec((advance, cost), 1..40)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn store(server: &RedisServer, clock: &ManualClock, case: u64) -> RedisStore {
    // A prefix per case keeps cases apart on one server; a generous deadline absorbs a busy CI;
    // no deny cache, because this compares the script itself with `step`.
    let config = RedisConfig::new(server.url())
        .prefix(format!("case{case}"))
        .timeout(Duration::from_secs(5))
        .deny_cache(0)
        .clock(clock.clone());
    RedisStore::connect(config).await.unwrap()
}

#[test]
fn the_lua_script_agrees_with_step() {
    let server = RedisServer::start().unwrap();
    let rt = runtime();
    let mut runner = TestRunner::new(Config::with_cases(128));
    let cases = AtomicU64::new(0);
    let strategy = (policy("p"), 0u64..10_000_000, requests());
    runner
        .run(&strategy, |(policy, start, requests)| {
            let case = cases.fetch_add(1, Ordering::Relaxed);
            rt.block_on(async {
                let start = EPOCH_US + start;
                let clock = ManualClock::new(start);
                let store = store(&server, &clock, case).await;
                let policies = [policy.clone()];
                let (mut state, mut now) = (None, start);
                for (i, (advance, cost)) in requests.into_iter().enumerate() {
                    now += advance;
                    clock.set_us(now);
                    let expected = algorithm::step(state.clone(), now, cost, &policy);
                    // A cost no policy can admit never reaches the script: the check is refused.
                    let actual = match Check::new(&policies, b"client", cost) {
                        Ok(check) => Ok(Verdict::from_answer(
                            &policies,
                            store.acquire(&check).await.unwrap(),
                        )),
                        Err(error) => Err(error),
                    };
                    match (actual, expected) {
                        (Ok(verdict), Ok(outcome)) => {
                            prop_assert_eq!(
                                verdict.decisions()[0],
                                outcome.decision,
                                "request {}",
                                i
                            );
                            state = outcome.new_state;
                        }
                        (Err(CheckError::Cost(a)), Err(b)) => prop_assert_eq!(a, b),
                        (actual, expected) => {
                            prop_assert!(false, "redis {:?} vs step {:?}", actual, expected)
                        }
                    }
                }
                Ok(())
            })
        })
        .unwrap();
}

#[test]
fn policy_pairs_agree_with_the_memory_store() {
    let server = RedisServer::start().unwrap();
    let rt = runtime();
    let mut runner = TestRunner::new(Config::with_cases(96));
    let cases = AtomicU64::new(0);
    let strategy = (
        policy("first"),
        policy("second"),
        any::<bool>(),
        0u64..10_000_000,
        requests(),
    );
    runner
        .run(&strategy, |(first, second, shadow, start, requests)| {
            let case = cases.fetch_add(1, Ordering::Relaxed);
            rt.block_on(async {
                let start = EPOCH_US + start;
                let clock = ManualClock::new(start);
                let redis = store(&server, &clock, 1_000_000 + case).await;
                let memory = MemoryStore::builder().clock(clock.clone()).build();
                let second = if shadow {
                    second.with_mode(Mode::Shadow)
                } else {
                    second
                };
                let policies = [first, second];
                let capacity = policies.iter().map(Policy::capacity).min().unwrap();
                let mut now = start;
                for (advance, cost) in requests {
                    now += advance;
                    clock.set_us(now);
                    let cost = cost.min(capacity);
                    let expected = check_sync(&memory, &policies, b"client", cost).unwrap();
                    let actual = redis.check(&policies, b"client", cost).await.unwrap();
                    prop_assert_eq!(actual, expected);
                }
                Ok(())
            })
        })
        .unwrap();
}
