//! Random policies and request sequences, shared by the property tests.

use std::time::Duration;

use floodwall_core::{Algorithm, Policy};
use proptest::prelude::*;

/// Early in 2026, in µs; sequences start at a random offset from it so windows are unaligned.
pub(crate) const EPOCH_US: u64 = 1_767_225_600_000_000;

/// A policy of `algorithm` small enough for the reference models to brute-force: limit 1–8,
/// period 1–5 ms in whole microseconds, and for the buckets a burst of 1–12 half the time.
pub(crate) fn policy(algorithm: Algorithm) -> impl Strategy<Value = Policy> {
    (1u64..=8, 1_000u64..=5_000, proptest::option::of(1u64..=12)).prop_map(
        move |(limit, period_us, burst)| {
            let policy = Policy::new("p", algorithm, limit, Duration::from_micros(period_us))
                .expect("valid by construction");
            match burst {
                Some(burst) if algorithm.has_burst() => {
                    policy.with_burst(burst).expect("valid by construction")
                }
                _ => policy,
            }
        },
    )
}

/// A sequence of (advance µs, cost): mostly bursts within a period, sometimes long pauses,
/// costs from 0 (peek) to a little over any capacity in use (errors).
pub(crate) fn requests() -> impl Strategy<Value = Vec<(u64, u64)>> {
    let advance = prop_oneof![
        3 => Just(0u64),
        4 => 0u64..400,
        2 => 0u64..6_000,
        1 => 0u64..16_000,
    ];
    let cost = prop_oneof![
        1 => Just(0u64),
        6 => Just(1u64),
        3 => 0u64..=13,
    ];
    proptest::collection::vec((advance, cost), 1..60)
}

/// A start time: a random offset from [`EPOCH_US`].
pub(crate) fn start() -> impl Strategy<Value = u64> {
    (0u64..10_000_000).prop_map(|offset| EPOCH_US + offset)
}

/// Every algorithm.
pub(crate) fn algorithm() -> impl Strategy<Value = Algorithm> {
    proptest::sample::select(Algorithm::ALL.to_vec())
}

/// A policy of `algorithm` as [`policy`] makes, with a `max_debt` from 0 to its capacity when
/// the algorithm carries debt.
pub(crate) fn policy_with_debt(algorithm: Algorithm) -> impl Strategy<Value = Policy> {
    (policy(algorithm), 0u64..=12).prop_map(move |(policy, max_debt)| {
        if !algorithm.carries_debt() {
            return policy;
        }
        let max_debt = max_debt.min(policy.capacity());
        policy
            .with_max_debt(max_debt)
            .expect("valid by construction")
    })
}
