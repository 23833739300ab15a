//! `debit` against the brute-force reference model: interleaved with `step` and `refund` on
//! one key, a charge past what is left puts the key in debt up to `max_debt` exactly as the
//! model does (a bucket's credit below zero, a fixed window's count carried into the next),
//! denials and retries while it owes agree, and a key never owes more than `max_debt`.

use floodwall_core::algorithm;
use floodwall_testkit::ReferenceModel;
use proptest::prelude::*;

use crate::strategies;

/// What one operation on the key does.
#[derive(Debug, Clone, Copy)]
enum Operation {
    Check,
    Refund,
    Debit,
}

/// (advance µs, operation, cost): debits cost up to twice any capacity in use.
fn operations() -> impl Strategy<Value = Vec<(u64, Operation, u64)>> {
    let advance = prop_oneof![3 => Just(0u64), 4 => 0u64..400, 2 => 0u64..6_000];
    let operation = prop_oneof![
        5 => Just(Operation::Check),
        1 => Just(Operation::Refund),
        3 => Just(Operation::Debit),
    ];
    let cost = prop_oneof![4 => Just(1u64), 4 => 0u64..=24];
    proptest::collection::vec((advance, operation, cost), 1..50)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn debits_agree_with_the_reference_model(
        policy in strategies::algorithm().prop_flat_map(strategies::policy_with_debt),
        start in strategies::start(),
        operations in operations(),
    ) {
        let mut model = ReferenceModel::new(policy.clone(), start);
        let mut state = None;
        let mut now = start;
        for (i, (advance, operation, cost)) in operations.into_iter().enumerate() {
            now += advance;
            let (outcome, expected) = match operation {
                Operation::Check => {
                    let cost = cost.min(policy.capacity());
                    (algorithm::step(state.clone(), now, cost, &policy).unwrap(), model.decide(now, cost).unwrap())
                }
                Operation::Refund => {
                    let cost = cost.min(policy.capacity());
                    (algorithm::refund(state.clone(), now, cost, &policy).unwrap(), model.refund(now, cost))
                }
                Operation::Debit => (algorithm::debit(state.clone(), now, cost, &policy), model.debit(now, cost)),
            };
            prop_assert_eq!(outcome.decision, expected, "operation {} ({:?} of {})", i, operation, cost);
            prop_assert_eq!(outcome.ttl_us, u64::try_from(expected.reset_after.as_micros()).unwrap());
            prop_assert!(outcome.decision.debt <= policy.max_debt());
            prop_assert!(outcome.decision.debt == 0 || outcome.decision.remaining == 0);
            prop_assert_eq!(outcome.new_state.is_none(), outcome.ttl_us == 0);
            state = outcome.new_state;
        }
    }
}
