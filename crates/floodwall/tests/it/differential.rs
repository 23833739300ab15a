//! `MemoryStore` against the brute-force reference models on the same random sequences, under a
//! `ManualClock` (docs/testing.md: A6, A11), single policies and all-or-nothing pairs.

use crate::support::check_sync;
use std::time::Duration;

use floodwall::{Algorithm, Check, CheckError, ManualClock, MemoryStore, Mode, Policy, Verdict};
use floodwall_testkit::ReferenceModel;
use proptest::prelude::*;

const EPOCH_US: u64 = 1_767_225_600_000_000;

fn policy(name: &'static str, algorithm: Algorithm) -> impl Strategy<Value = Policy> {
    (1u64..=8, 1_000u64..=5_000, proptest::option::of(1u64..=12)).prop_map(
        move |(limit, period_us, burst)| {
            let p = Policy::new(name, algorithm, limit, Duration::from_micros(period_us)).unwrap();
            match burst {
                Some(b) if algorithm.has_burst() => p.with_burst(b).unwrap(),
                _ => p,
            }
        },
    )
}

fn algorithm() -> impl Strategy<Value = Algorithm> {
    proptest::sample::select(Algorithm::ALL.to_vec())
}

/// (advance µs, key index, cost): a few keys interleaved, so keys must not share state.
fn requests() -> impl Strategy<Value = Vec<(u64, usize, u64)>> {
    let advance = prop_oneof![3 => Just(0u64), 4 => 0u64..400, 2 => 0u64..6_000, 1 => 0u64..16_000];
    let cost = prop_oneof![1 => Just(0u64), 6 => Just(1u64), 3 => 0u64..=13];
    proptest::collection::vec((advance, 0usize..3, cost), 1..80)
}

fn store(clock: &ManualClock) -> MemoryStore {
    MemoryStore::builder()
        .max_keys(1_000)
        .clock(clock.clone())
        .build()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn memory_store_agrees_with_the_reference_model(
        policy in algorithm().prop_flat_map(|a| policy("p", a)),
        start in 0u64..10_000_000,
        requests in requests(),
    ) {
        let start = EPOCH_US + start;
        let clock = ManualClock::new(start);
        let store = store(&clock);
        let keys = ["alice", "bob", "{carol}"];
        let mut models: Vec<_> = keys.iter().map(|_| ReferenceModel::new(policy.clone(), start)).collect();
        let policies = [policy];
        for (i, (advance, key, cost)) in requests.into_iter().enumerate() {
            clock.advance_us(advance);
            let now = start + (clock_now(&clock) - start);
            let expected = models[key].decide(now, cost);
            // A cost no policy can admit never reaches the store: the check is refused first.
            match (Check::new(&policies, keys[key].as_bytes(), cost), expected) {
                (Ok(check), Ok(expected)) => {
                    let verdict = Verdict::from_answer(&policies, store.decide_sync(&check));
                    prop_assert_eq!(verdict.decisions()[0], expected, "request {}", i);
                    prop_assert_eq!(verdict.allowed(), expected.allowed);
                    prop_assert_eq!(verdict.retry_after(), expected.retry_after);
                }
                (Err(CheckError::Cost(a)), Err(b)) => prop_assert_eq!(a, b),
                (actual, expected) => prop_assert!(false, "check {:?} vs model {:?}", actual, expected),
            }
        }
    }

    /// Two policies on one key, one possibly in shadow mode: admitted only if every enforced
    /// policy admits, and then only the admitting policies consume.
    #[test]
    fn several_policies_are_all_or_nothing(
        first in algorithm().prop_flat_map(|a| policy("first", a)),
        second in algorithm().prop_flat_map(|a| policy("second", a)),
        second_shadow in any::<bool>(),
        start in 0u64..10_000_000,
        requests in requests(),
    ) {
        let start = EPOCH_US + start;
        let clock = ManualClock::new(start);
        let store = store(&clock);
        let second = if second_shadow { second.with_mode(Mode::Shadow) } else { second };
        let policies = [first, second];
        let mut models: Vec<_> = policies.iter().map(|p| ReferenceModel::new(p.clone(), start)).collect();
        for (advance, _, cost) in requests {
            clock.advance_us(advance);
            let now = clock_now(&clock);
            let capacity = policies.iter().map(Policy::capacity).min().unwrap();
            let cost = cost.min(capacity).max(1);
            let judged: Vec<_> = models.iter().map(|m| m.judge(now, cost).unwrap()).collect();
            let allowed = policies.iter().zip(&judged).all(|(p, d)| p.mode() == Mode::Shadow || d.allowed);
            let expected: Vec<_> = if allowed {
                models.iter_mut().zip(&judged).map(|(m, d)| {
                    if d.allowed { m.decide(now, cost).unwrap() } else { *d }
                }).collect()
            } else {
                judged
            };
            let verdict = check_sync(&store, &policies, b"client", cost);
            prop_assert_eq!(verdict.allowed(), allowed);
            prop_assert_eq!(verdict.decisions().to_vec(), expected);
        }
    }
}

/// (advance µs, refund?, cost): checks and refunds of one key, interleaved.
fn checks_and_refunds() -> impl Strategy<Value = Vec<(u64, bool, u64)>> {
    let advance = prop_oneof![3 => Just(0u64), 4 => 0u64..400, 2 => 0u64..6_000];
    let cost = prop_oneof![6 => Just(1u64), 3 => 0u64..=13];
    proptest::collection::vec((advance, proptest::bool::weighted(0.3), cost), 1..60)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Refunds give back exactly what the model gives back (its newest admissions, or that much
    /// credit), never past a full quota, and later decisions agree again.
    #[test]
    fn refunds_agree_with_the_reference_model(
        policy in algorithm().prop_flat_map(|a| policy("p", a)),
        start in 0u64..10_000_000,
        operations in checks_and_refunds(),
    ) {
        let start = EPOCH_US + start;
        let clock = ManualClock::new(start);
        let store = store(&clock);
        let mut model = ReferenceModel::new(policy.clone(), start);
        let policies = [policy];
        for (i, (advance, refund, cost)) in operations.into_iter().enumerate() {
            clock.advance_us(advance);
            let now = clock_now(&clock);
            let cost = cost.min(policies[0].capacity());
            let check = Check::new(&policies, b"client", cost).unwrap();
            if refund {
                let expected = model.refund(now, cost);
                let answer = store.refund_sync(&check);
                prop_assert_eq!(answer.decisions[0], expected, "refund {}", i);
            } else {
                let expected = model.decide(now, cost).unwrap();
                let answer = store.decide_sync(&check);
                prop_assert_eq!(answer.decisions[0], expected, "request {}", i);
            }
        }
    }
}

fn clock_now(clock: &ManualClock) -> u64 {
    use floodwall::Clock;
    clock.now_us()
}
