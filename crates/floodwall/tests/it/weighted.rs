//! Weighted checks, a cost per (policy, key) pair decided all-or-nothing: the memory store
//! against each pair's own `step`, and Redis (one node) against the memory store, refunds
//! included.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use floodwall::core::algorithm::{self, State};
use floodwall::redis::{RedisConfig, RedisStore};
use floodwall::store::Store;
use floodwall::{Algorithm, Check, ManualClock, MemoryStore, Mode, Policy};
use floodwall_testkit::RedisServer;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const EPOCH_US: u64 = 1_767_225_600_000_000;

fn policy(name: &'static str) -> impl Strategy<Value = Policy> {
    let algorithm = proptest::sample::select(Algorithm::ALL.to_vec());
    (algorithm, 1u64..=12, 1_000u64..=2_000_000, any::<bool>()).prop_map(
        move |(algorithm, limit, period_us, shadow)| {
            let policy = Policy::new(name, algorithm, limit, Duration::from_micros(period_us));
            let policy = policy.unwrap();
            if shadow {
                policy.with_mode(Mode::Shadow)
            } else {
                policy
            }
        },
    )
}

/// (advance µs, cost of the first pair, cost of the second, refund instead of a decision).
fn operations() -> impl Strategy<Value = Vec<(u64, u64, u64, bool)>> {
    let cost = prop_oneof![2 => Just(0u64), 5 => Just(1u64), 3 => 0u64..=12];
    let advance = prop_oneof![3 => Just(0u64), 4 => 0u64..50_000, 2 => 0u64..3_000_000];
    proptest::collection::vec(
        (advance, cost.clone(), cost, proptest::bool::weighted(0.15)),
        1..40,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A weighted check is admitted exactly when every enforced pair admits its own cost, and
    /// then each pair that admits consumes exactly its own cost; otherwise nothing changes.
    #[test]
    fn the_memory_store_decides_each_pair_at_its_own_cost_all_or_nothing(
        first in policy("first"),
        second in policy("second"),
        start in 0u64..10_000_000,
        operations in operations(),
    ) {
        let start = EPOCH_US + start;
        let clock = ManualClock::new(start);
        let store = MemoryStore::builder().clock(clock.clone()).build();
        let (mut a, mut b): (Option<State>, Option<State>) = (None, None);
        let mut now = start;
        for (advance, cost_a, cost_b, _) in operations {
            now += advance;
            clock.set_us(now);
            let (cost_a, cost_b) = (cost_a.min(first.capacity()), cost_b.min(second.capacity()));
            let pairs = [(&first, &b"a"[..], cost_a), (&second, &b"b"[..], cost_b)];
            let check = Check::weighted(pairs).unwrap();
            let answer = store.decide_sync(&check);
            // The oracle: each pair alone at its own cost. A pair that admits when every
            // enforced pair admits is exactly `step`; otherwise it is judged and nothing is
            // consumed: a denial reads as `step`'s own (which consumes nothing), an admission
            // that is not committed as a peek's.
            let own_a = algorithm::step(a.clone(), now, cost_a, &first).unwrap();
            let own_b = algorithm::step(b.clone(), now, cost_b, &second).unwrap();
            let admits = |own: &algorithm::Outcome<State>, policy: &Policy| {
                own.decision.allowed || policy.mode() == Mode::Shadow
            };
            let allowed = admits(&own_a, &first) && admits(&own_b, &second);
            prop_assert_eq!(answer.allowed, allowed);
            for ((state, own, policy), decision) in
                [(&mut a, own_a, &first), (&mut b, own_b, &second)].into_iter().zip(&answer.decisions)
            {
                if allowed || !own.decision.allowed {
                    prop_assert_eq!(decision, &own.decision);
                    if own.decision.allowed {
                        *state = own.new_state;
                    }
                } else {
                    let peek = algorithm::step(state.clone(), now, 0, policy).unwrap();
                    prop_assert_eq!(decision, &peek.decision);
                }
            }
        }
    }
}

/// The script decides and refunds weighted pairs as the memory store does.
#[test]
fn weighted_pairs_on_redis_agree_with_the_memory_store() {
    let server = RedisServer::start().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut runner = TestRunner::new(Config::with_cases(96));
    let cases = AtomicU64::new(0);
    let strategy = (
        policy("first"),
        policy("second"),
        0u64..10_000_000,
        operations(),
    );
    runner
        .run(&strategy, |(first, second, start, operations)| {
            let case = cases.fetch_add(1, Ordering::Relaxed);
            runtime.block_on(async {
                let start = EPOCH_US + start;
                let clock = ManualClock::new(start);
                let config = RedisConfig::new(server.url())
                    .prefix(format!("weighted{case}"))
                    .timeout(Duration::from_secs(5))
                    .deny_cache(0)
                    .clock(clock.clone());
                let redis = RedisStore::connect(config).await.unwrap();
                let memory = MemoryStore::builder().clock(clock.clone()).build();
                let mut now = start;
                for (i, (advance, cost_a, cost_b, refund)) in operations.into_iter().enumerate() {
                    now += advance;
                    clock.set_us(now);
                    let (cost_a, cost_b) =
                        (cost_a.min(first.capacity()), cost_b.min(second.capacity()));
                    let pairs = [(&first, &b"a"[..], cost_a), (&second, &b"b"[..], cost_b)];
                    let check = Check::weighted(pairs).unwrap();
                    let (expected, actual) = if refund {
                        (
                            memory.refund_sync(&check),
                            redis.refund(&check).await.unwrap(),
                        )
                    } else {
                        (
                            memory.decide_sync(&check),
                            redis.decide(&check).await.unwrap(),
                        )
                    };
                    prop_assert_eq!(actual, expected, "operation {}", i);
                }
                Ok(())
            })
        })
        .unwrap();
}
