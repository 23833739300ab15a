//! `step` against the brute-force reference models (docs/testing.md: A6, A11), GCRA against the token
//! bucket, and `retry_after` honesty.

use floodwall_core::algorithm::{self, Outcome};
use floodwall_core::{Algorithm, Policy, State};
use floodwall_testkit::ReferenceModel;
use proptest::prelude::*;

use crate::strategies;

fn step(state: Option<State>, now: u64, cost: u64, policy: &Policy) -> Outcome<State> {
    algorithm::step(state, now, cost, policy).expect("cost within capacity")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    /// Every decision, remaining, reset_after and retry_after equals the reference model's.
    #[test]
    fn step_agrees_with_the_reference_model(
        policy in strategies::algorithm().prop_flat_map(strategies::policy),
        start in strategies::start(),
        requests in strategies::requests(),
    ) {
        let mut model = ReferenceModel::new(policy.clone(), start);
        let mut state = None;
        let mut now = start;
        for (i, (advance, cost)) in requests.into_iter().enumerate() {
            now += advance;
            let expected = model.decide(now, cost);
            match algorithm::step(state.clone(), now, cost, &policy) {
                Ok(outcome) => {
                    let expected = expected.expect("the model admits the same costs");
                    prop_assert_eq!(outcome.decision, expected, "request {} at +{}µs cost {}", i, now - start, cost);
                    prop_assert_eq!(outcome.ttl_us, u64::try_from(expected.reset_after.as_micros()).unwrap());
                    state = outcome.new_state;
                }
                Err(error) => prop_assert_eq!(Err(error), expected),
            }
        }
    }

    /// GCRA and the token bucket with the same policy answer identically on every sequence.
    #[test]
    fn gcra_and_token_bucket_admit_identically(
        limit in 1u64..=50,
        period_us in 1_000u64..=2_000_000,
        burst in proptest::option::of(1u64..=60),
        start in strategies::start(),
        requests in proptest::collection::vec((0u64..200_000, 0u64..=60), 1..200),
    ) {
        let period = std::time::Duration::from_micros(period_us);
        let with_burst = |algorithm| {
            let policy = Policy::new("p", algorithm, limit, period).unwrap();
            match burst { Some(b) => policy.with_burst(b).unwrap(), None => policy }
        };
        let (gcra, bucket) = (with_burst(Algorithm::Gcra), with_burst(Algorithm::TokenBucket));
        let (mut gcra_state, mut bucket_state) = (None, None);
        let mut now = start;
        for (advance, cost) in requests {
            now += advance;
            let cost = cost.min(gcra.capacity());
            let g = step(gcra_state, now, cost, &gcra);
            let b = step(bucket_state, now, cost, &bucket);
            prop_assert_eq!(g.decision, b.decision);
            prop_assert_eq!(g.ttl_us, b.ttl_us);
            gcra_state = g.new_state;
            bucket_state = b.new_state;
        }
    }
}

proptest! {
    // docs/testing.md: A6: 10 000 cases in memory.
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    /// A denied client that waits exactly `retry_after` is admitted; 1 µs earlier it is not.
    #[test]
    fn retry_after_is_exact(
        policy in strategies::algorithm().prop_flat_map(|a| {
            // Wider policies than the model can brute-force: only `step` is involved here.
            (Just(a), 1u64..=1_000, 1_000u64..=3_600_000_000)
        }).prop_map(|(a, limit, period_us)| {
            Policy::new("p", a, limit.min(if a == Algorithm::SlidingLog { 1_000 } else { limit }),
                std::time::Duration::from_micros(period_us)).unwrap()
        }),
        start in strategies::start(),
        requests in proptest::collection::vec((0u64..5_000_000, 1u64..=1_000), 1..80),
    ) {
        let mut state = None;
        let mut now = start;
        for (advance, cost) in requests {
            now += advance;
            let cost = cost.min(policy.capacity());
            let outcome = step(state.clone(), now, cost, &policy);
            if let Some(retry) = outcome.decision.retry_after {
                let retry = u64::try_from(retry.as_micros()).unwrap();
                prop_assert!(retry >= 1);
                let on_time = step(state.clone(), now + retry, cost, &policy);
                prop_assert!(on_time.decision.allowed, "not admitted after exactly {}µs", retry);
                let early = step(state.clone(), now + retry - 1, cost, &policy);
                prop_assert!(!early.decision.allowed, "admitted 1µs before {}µs", retry);
            }
            state = outcome.new_state;
        }
    }
}

/// Calendar windows against the reference model, on sequences that cross month and year ends
/// (leap Februaries included) and week boundaries: whole-week periods start on Mondays,
/// calendar months on the first, with their real lengths.
mod calendar {
    use super::*;
    use std::time::Duration;

    const DAY_US: u64 = 86_400_000_000;

    /// A calendar policy (1, 2, 3, 4, 6 or 12 months; 1 or 2 weeks from Monday), or a window
    /// of 7 or 14 days, which stays aligned to the epoch.
    fn policy() -> impl Strategy<Value = Policy> {
        let months = proptest::sample::select(floodwall_core::CALENDAR_MONTHS.to_vec());
        prop_oneof![
            (1u64..=6, months)
                .prop_map(|(limit, months)| Policy::monthly("p", limit, months).unwrap()),
            (1u64..=6, 1u32..=2)
                .prop_map(|(limit, weeks)| Policy::weekly("p", limit, weeks).unwrap()),
            (1u64..=6, 1u32..=2).prop_map(|(limit, weeks)| Policy::new(
                "p",
                Algorithm::FixedWindow,
                limit,
                Duration::from_secs(7 * 86_400) * weeks
            )
            .unwrap()),
        ]
    }

    /// Within a day of a month end somewhere from 1999 to 2101 (the century Februaries and
    /// several leap ones among them).
    fn start() -> impl Strategy<Value = u64> {
        (10_592u64..48_000, 0u64..2 * DAY_US).prop_map(|(day, offset)| day * DAY_US + offset)
    }

    /// Steps of up to a few days, and now and then several weeks.
    fn requests() -> impl Strategy<Value = Vec<(u64, u64)>> {
        let advance = prop_oneof![
            3 => Just(0u64),
            3 => 0u64..3_600_000_000,
            3 => 0u64..3 * DAY_US,
            1 => 0u64..40 * DAY_US,
        ];
        proptest::collection::vec((advance, 0u64..=3), 1..40)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn calendar_windows_agree_with_the_reference_model(
            policy in policy(),
            start in start(),
            requests in requests(),
        ) {
            let mut model = ReferenceModel::new(policy.clone(), start);
            let mut state = None;
            let mut now = start;
            for (i, (advance, cost)) in requests.into_iter().enumerate() {
                now += advance;
                let cost = cost.min(policy.capacity());
                let expected = model.decide(now, cost).unwrap();
                let outcome = step(state.clone(), now, cost, &policy);
                prop_assert_eq!(outcome.decision, expected, "request {} at {}µs cost {}", i, now, cost);
                state = outcome.new_state;
            }
        }
    }
}
