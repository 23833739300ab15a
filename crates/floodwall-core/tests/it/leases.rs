//! `concurrency` holds and releases against the reference model: random holders take units and
//! give them back (or never do) while time passes, and every decision agrees.

use floodwall_core::algorithm::{self, Outcome};
use floodwall_core::{Algorithm, Holder, Policy, State};
use floodwall_testkit::ReferenceModel;
use proptest::prelude::*;

use crate::strategies;

/// One step of a sequence: after `advance` µs, holder `holder` (0: a plain check) takes `cost`
/// units, or gives back everything it holds.
#[derive(Debug, Clone)]
enum Op {
    Hold {
        advance: u64,
        holder: u64,
        cost: u64,
    },
    Release {
        advance: u64,
        holder: u64,
    },
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let advance = prop_oneof![3 => Just(0u64), 4 => 0u64..400, 2 => 0u64..6_000];
    let holder = 0u64..6;
    let op = prop_oneof![
        3 => (advance.clone(), holder.clone(), 0u64..=4)
            .prop_map(|(advance, holder, cost)| Op::Hold { advance, holder, cost }),
        2 => (advance, holder).prop_map(|(advance, holder)| Op::Release { advance, holder }),
    ];
    proptest::collection::vec(op, 1..80)
}

fn held(outcome: Result<Outcome<State>, floodwall_core::CostError>) -> Outcome<State> {
    outcome.expect("costs stay within the limit")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every hold's decision, remaining, reset_after and retry_after equals the model's, with
    /// releases and timeouts in between.
    #[test]
    fn holds_and_releases_agree_with_the_reference_model(
        policy in strategies::policy(Algorithm::Concurrency).prop_filter("room for costs", |p| p.limit() >= 4),
        start in strategies::start(),
        ops in ops(),
    ) {
        let mut model = ReferenceModel::new(policy.clone(), start);
        let mut state: Option<State> = None;
        let mut now = start;
        // A holder's units go back with one release; its next hold is a new lease.
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                Op::Hold { advance, holder, cost } => {
                    now += advance;
                    let expected = model.hold(now, cost, holder).unwrap();
                    let outcome = held(algorithm::hold(state.take(), now, cost, Holder(holder.into()), &policy));
                    prop_assert_eq!(outcome.decision, expected, "op {} at +{}µs", i, now - start);
                    state = outcome.new_state;
                }
                Op::Release { advance, holder } => {
                    now += advance;
                    model.release(holder);
                    let (kept, _) = algorithm::release(state.take(), now, Holder(holder.into()), &policy);
                    state = kept;
                }
            }
        }
    }
}

/// A policy of another algorithm releases nothing: its units were spent.
#[test]
fn a_rate_gives_nothing_back_on_release() {
    let policy = Policy::new(
        "p",
        Algorithm::FixedWindow,
        1,
        std::time::Duration::from_secs(1),
    )
    .unwrap();
    let spent = held(algorithm::hold(None, 0, 1, Holder(7), &policy));
    let (kept, _) = algorithm::release(spent.new_state, 1, Holder(7), &policy);
    let after = held(algorithm::step(kept, 2, 1, &policy));
    assert!(!after.decision.allowed);
}
