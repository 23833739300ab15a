//! A clock that steps back never locks a client out for longer than the policy allows
//! (docs/testing.md: B2, B3): stored times in the future are clamped.

use std::time::Duration;

use floodwall_core::algorithm;
use floodwall_core::{Algorithm, Policy};

const NOW: u64 = 1_767_225_600_000_000;
const HOUR: u64 = 3_600_000_000;

#[test]
fn a_state_from_an_hour_ahead_blocks_at_most_one_period() {
    for algorithm in Algorithm::ALL {
        let policy = Policy::new("p", algorithm, 5, Duration::from_secs(1)).unwrap();
        // Exhaust the key an hour in the future (a Redis clock that later jumped back).
        let mut state = None;
        for _ in 0..5 {
            let outcome = algorithm::step(state, NOW + HOUR, 1, &policy).unwrap();
            assert!(outcome.decision.allowed);
            state = outcome.new_state;
        }
        let denied = algorithm::step(state.clone(), NOW, 1, &policy).unwrap();
        let retry = denied.decision.retry_after.unwrap_or_default();
        // Sliding window: up to two periods (its count can decay as the previous window's).
        assert!(
            retry <= 2 * policy.period(),
            "{algorithm}: retry {retry:?} after the clock stepped back"
        );
        // The denial's clamped state is what a store keeps.
        let later = algorithm::step(denied.new_state, NOW + 2_000_000, 1, &policy).unwrap();
        assert!(
            later.decision.allowed,
            "{algorithm}: still locked out two periods later"
        );
    }
}

#[test]
fn lowering_the_limit_below_usage_clamps_remaining_to_zero() {
    for algorithm in Algorithm::ALL {
        let high = Policy::new("p", algorithm, 10, Duration::from_secs(60)).unwrap();
        let low = Policy::new("p", algorithm, 3, Duration::from_secs(60)).unwrap();
        let spent = algorithm::step(None, NOW, 8, &high).unwrap();
        let after = algorithm::step(spent.new_state.clone(), NOW + 1, 0, &low).unwrap();
        if algorithm == Algorithm::TokenBucket {
            // A bucket stores tokens left, not usage: its 2 tokens fit the smaller bucket.
            assert_eq!(after.decision.remaining, 2);
        } else {
            // The others store usage (GCRA: debt), which now exceeds the limit.
            assert_eq!(after.decision.remaining, 0, "{algorithm}");
            assert!(!after.decision.allowed, "{algorithm}");
            assert!(after.decision.retry_after.is_some(), "{algorithm}");
        }
        // Raising it above usage admits immediately (docs/testing.md: A8).
        let higher = Policy::new("p", algorithm, 20, Duration::from_secs(60)).unwrap();
        let raised = algorithm::step(spent.new_state, NOW + 2, 1, &higher).unwrap();
        assert!(raised.decision.allowed, "{algorithm}");
    }
}

#[test]
fn a_cost_above_capacity_is_an_error_not_a_denial() {
    for algorithm in Algorithm::ALL {
        let policy = Policy::new("p", algorithm, 3, Duration::from_secs(1)).unwrap();
        let error = algorithm::step(None, NOW, 4, &policy).unwrap_err();
        assert_eq!((error.cost, error.capacity), (4, 3), "{algorithm}");
    }
}

/// A limit raised under an exhausted key: the counting algorithms count what was used against
/// the new limit at once; token bucket and GCRA, whose state is what is left to draw (tokens)
/// or owed in time (the theoretical arrival time), give the next unit after one interval of the
/// new rate, then refill at it. The README documents exactly this.
#[test]
fn raising_the_limit_of_an_exhausted_key_is_documented_per_algorithm() {
    for algorithm in Algorithm::ALL {
        let low = Policy::new("p", algorithm, 3, Duration::from_secs(3600)).unwrap();
        let high = Policy::new("p", algorithm, 100, Duration::from_secs(3600)).unwrap();
        let spent = algorithm::step(None, NOW, 3, &low).unwrap();
        let after = algorithm::step(spent.new_state.clone(), NOW + 1, 1, &high).unwrap();
        match algorithm {
            Algorithm::TokenBucket | Algorithm::Gcra => {
                assert!(!after.decision.allowed, "{algorithm}");
                // One interval of the new rate: 3600 s / 100, less the microsecond passed.
                let wait = after.decision.retry_after.unwrap();
                assert_eq!(wait, Duration::from_micros(36_000_000 - 1), "{algorithm}");
                let waited = NOW + 1 + 36_000_000;
                let later = algorithm::step(spent.new_state, waited, 1, &high).unwrap();
                assert!(later.decision.allowed, "{algorithm}");
            }
            _ => {
                assert!(after.decision.allowed, "{algorithm}");
                assert_eq!(after.decision.remaining, 96, "{algorithm}");
            }
        }
    }
}
