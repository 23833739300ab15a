//! `refund` against the brute-force reference model: interleaved with `step` on one key, it
//! gives back exactly what the model gives back (the newest admissions for the windows, that
//! much credit for the buckets), never past a full quota, and later decisions agree again.

use floodwall_core::algorithm;
use floodwall_testkit::ReferenceModel;
use proptest::prelude::*;

use crate::strategies;

/// (advance µs, refund?, cost): checks and refunds of one key, interleaved.
fn checks_and_refunds() -> impl Strategy<Value = Vec<(u64, bool, u64)>> {
    let advance = prop_oneof![3 => Just(0u64), 4 => 0u64..400, 2 => 0u64..6_000];
    let cost = prop_oneof![6 => Just(1u64), 3 => 0u64..=13];
    proptest::collection::vec((advance, proptest::bool::weighted(0.3), cost), 1..60)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn refunds_agree_with_the_reference_model(
        policy in strategies::algorithm().prop_flat_map(strategies::policy),
        start in strategies::start(),
        operations in checks_and_refunds(),
    ) {
        let mut model = ReferenceModel::new(policy.clone(), start);
        let mut state = None;
        let mut now = start;
        for (i, (advance, refund, cost)) in operations.into_iter().enumerate() {
            now += advance;
            let cost = cost.min(policy.capacity());
            let (outcome, expected) = if refund {
                (algorithm::refund(state.clone(), now, cost, &policy), model.refund(now, cost))
            } else {
                (algorithm::step(state.clone(), now, cost, &policy), model.decide(now, cost).unwrap())
            };
            let outcome = outcome.unwrap();
            prop_assert_eq!(outcome.decision, expected, "operation {} (refund: {})", i, refund);
            prop_assert_eq!(outcome.ttl_us, u64::try_from(expected.reset_after.as_micros()).unwrap());
            // A key back at rest is not kept.
            prop_assert_eq!(outcome.new_state.is_none(), outcome.ttl_us == 0);
            state = outcome.new_state;
        }
    }
}
