//! The gate front ends decide through: a passage holds in-flight units until its guard goes,
//! answers an impossible cost as the limiter does, and applies the refund rule.

use std::time::Duration;

use std::sync::{Arc, Mutex};

use floodwall::gate::{Front, Gate, Observed, Observer, Passing};
use floodwall::{Algorithm, Check, Error, Limiter, ManualClock, MemoryStore, Policy};

#[tokio::test]
async fn a_held_passage_keeps_its_slot_until_its_guard_goes() {
    let limiter = Limiter::new(MemoryStore::new());
    let gate = Gate::new(limiter.clone(), Front::Http);
    let policies = [Policy::new(
        "exports",
        Algorithm::Concurrency,
        1,
        Duration::from_secs(60),
    )
    .unwrap()];
    let hold = Passing {
        hold: true,
        ..Passing::default()
    };
    let mut first = gate.pass(Check::new(&policies, b"k", 1), hold).await;
    assert!(first.outcome().unwrap().allowed());
    let guard = first.take_held();
    assert!(guard.is_some());
    drop(first);
    let second = gate.pass(Check::new(&policies, b"k", 1), hold).await;
    assert!(
        !second.outcome().unwrap().allowed(),
        "the slot is still held"
    );
    drop(guard);
    let third = gate.pass(Check::new(&policies, b"k", 1), hold).await;
    assert!(third.outcome().unwrap().allowed(), "the guard gave it back");
    assert_eq!(limiter.stats().abandoned.get(Front::Http), 0);
}

#[tokio::test]
async fn an_impossible_cost_passes_as_the_limiters_error() {
    let gate = Gate::new(Limiter::new(MemoryStore::new()), Front::Check);
    let policies = [Policy::new("p", Algorithm::FixedWindow, 5, Duration::from_secs(60)).unwrap()];
    let passage = gate
        .pass(Check::new(&policies, b"k", 6), Passing::default())
        .await;
    assert!(matches!(passage.outcome(), Err(Error::Check(_))));
    assert_eq!(passage.refundable().count(), 0);
}

#[tokio::test]
async fn a_passage_refunds_only_what_still_counts() {
    let clock = ManualClock::new(1_700_000_000_000_000);
    let gate = Gate::new(
        Limiter::new(MemoryStore::builder().clock(clock.clone()).build()),
        Front::Http,
    );
    let policies = [
        Policy::new("minute", Algorithm::FixedWindow, 5, Duration::from_secs(60)).unwrap(),
        Policy::new(
            "hour",
            Algorithm::FixedWindow,
            5,
            Duration::from_secs(3_600),
        )
        .unwrap(),
    ];
    let passage = gate
        .pass(Check::new(&policies, b"k", 1), Passing::default())
        .await;
    // Both still count the request right after it.
    assert_eq!(passage.refundable().collect::<Vec<_>>(), [0, 1]);
    let verdict = passage.outcome().unwrap();
    // The rule is the verdict's: past the minute's reset, only the hour still counts it.
    let past_minute = verdict.decisions()[0].reset_after + Duration::from_millis(1);
    assert_eq!(verdict.refundable(past_minute).collect::<Vec<_>>(), [1]);
}

#[tokio::test]
async fn a_caller_who_leaves_before_the_first_poll_is_counted() {
    let limiter = Limiter::new(MemoryStore::new());
    let gate = Gate::new(limiter.clone(), Front::Rls);
    let policies = [Policy::new("p", Algorithm::FixedWindow, 5, Duration::from_secs(60)).unwrap()];
    let passing = gate.pass(Check::new(&policies, b"k", 1), Passing::default());
    drop(passing);
    assert_eq!(limiter.stats().abandoned.get(Front::Rls), 1);
    let answered = gate
        .pass(Check::new(&policies, b"k", 1), Passing::default())
        .await;
    assert!(answered.outcome().unwrap().allowed());
    assert_eq!(limiter.stats().abandoned.get(Front::Rls), 1);
}

/// One decision as an observer was told of it: keys, cost, allowed (none: an error), admitted.
type Heard = (Vec<Vec<u8>>, u64, Option<bool>, bool);

/// What an observer was told, decision by decision.
#[derive(Default)]
struct Told(Mutex<Vec<Heard>>);

impl Observer for Told {
    fn decided(&self, decision: &Observed<'_, '_>) {
        let keys = decision.check.pairs().iter().map(|(_, k)| k.to_vec());
        let outcome = decision.outcome.ok().map(floodwall::Verdict::allowed);
        let told = (
            keys.collect(),
            decision.check.cost(),
            outcome,
            decision.admitted,
        );
        self.0.lock().unwrap().push(told);
    }
}

#[tokio::test]
async fn every_observer_is_told_of_each_decision_once() {
    let (first, second) = (Arc::new(Told::default()), Arc::new(Told::default()));
    let gate = Gate::new(Limiter::new(MemoryStore::new()), Front::Check)
        .observed_by(first.clone())
        .observed_by(second.clone());
    let policies = [Policy::new("p", Algorithm::FixedWindow, 2, Duration::from_secs(60)).unwrap()];
    let judged = Passing {
        judged_only: true,
        ..Passing::default()
    };
    for passing in [Passing::default(), judged, Passing::default()] {
        let _ = gate.pass(Check::new(&policies, b"k", 1), passing).await;
    }
    // Not a decision: a cost the policy can never admit.
    let _ = gate
        .pass(Check::new(&policies, b"k", 3), Passing::default())
        .await;
    let k = || vec![b"k".to_vec()];
    let expected = [
        (k(), 1, Some(true), true),
        // Allowed, but only judged: not an admission.
        (k(), 1, Some(true), false),
        (k(), 1, Some(false), false),
    ];
    assert_eq!(*first.0.lock().unwrap(), expected);
    assert_eq!(*second.0.lock().unwrap(), expected);
}
