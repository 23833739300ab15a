//! States this policy did not leave, as a store can hand them back: written under a larger
//! limit (a GCRA fraction of too many units), exactly at the edge of a burst, or a count far
//! above the limit after the limit was lowered. Each is answered as the policy now says.

use std::time::Duration;

use floodwall_core::algorithm::{self, gcra, sliding_log, sliding_window};
use floodwall_core::{Algorithm, Policy, State};
use proptest::prelude::*;

use crate::strategies::EPOCH_US;

fn gcra_policy(limit: u64, period_us: u64, burst: u64) -> Policy {
    Policy::new(
        "p",
        Algorithm::Gcra,
        limit,
        Duration::from_micros(period_us),
    )
    .unwrap()
    .with_burst(burst)
    .unwrap()
}

fn gcra_at(tat_us: u64, tat_frac: u64) -> Option<State> {
    Some(State::Gcra(gcra::State { tat_us, tat_frac }))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A GCRA fraction of a microsecond is below one unit of `1 / limit`; one left by a larger
    /// limit is cut to the largest the new limit has, never carried over as whole units.
    #[test]
    fn a_fraction_from_a_larger_limit_is_cut_not_carried(
        limit in 2u64..=8,
        period_us in 1_000u64..=5_000,
        burst in 1u64..=12,
        ahead in 0u64..12_000,
        fraction in 0u64..64,
        cost in 0u64..=12,
    ) {
        let policy = gcra_policy(limit, period_us, burst);
        let cost = cost.min(policy.capacity());
        let now = EPOCH_US;
        let foreign = algorithm::step(gcra_at(now + ahead, limit + fraction), now, cost, &policy).unwrap();
        let cut = algorithm::step(gcra_at(now + ahead, limit - 1), now, cost, &policy).unwrap();
        prop_assert_eq!(foreign.decision, cut.decision);
        prop_assert_eq!(foreign.ttl_us, cut.ttl_us);
    }
}

/// A TAT exactly one burst's worth of whole microseconds ahead, with a fraction below the
/// burst's own, is inside the burst: it is kept, not clamped up to the burst's edge. GCRA of 3
/// per ms with a burst of 2: the debt may reach 2 000 (in thirds of a µs); 666 µs ahead is a
/// debt of 1 998, and one more unit (1 000) fits once 333 µs have passed.
#[test]
fn a_state_at_the_edge_of_its_burst_is_kept_as_it_is() {
    let policy = gcra_policy(3, 1_000, 2);
    let now = EPOCH_US;
    let denied = algorithm::step(gcra_at(now + 666, 0), now, 1, &policy).unwrap();
    assert!(!denied.decision.allowed);
    assert_eq!(
        denied.decision.retry_after,
        Some(Duration::from_micros(333))
    );
    let on_time = algorithm::step(gcra_at(now + 666, 0), now + 333, 1, &policy).unwrap();
    assert!(on_time.decision.allowed);
}

/// A TAT from a clock that was ahead is clamped to one burst even when a unit's interval is
/// shorter than a microsecond (5 000 per ms, burst 1: a fifth of a µs), so the wait is that
/// refill rounded up, not the 500 µs the clock stepped back.
#[test]
fn a_state_from_the_future_is_clamped_under_sub_microsecond_intervals() {
    let policy = gcra_policy(5_000, 1_000, 1);
    let now = EPOCH_US;
    let outcome = algorithm::step(gcra_at(now + 500, 0), now, 1, &policy).unwrap();
    assert!(!outcome.decision.allowed);
    assert_eq!(outcome.decision.retry_after, Some(Duration::from_micros(1)));
}

/// A sliding window whose previous count is far above the limit (the limit was lowered, or
/// the count came from a larger policy) weighs that count exactly, even where the product no
/// longer fits in 64 bits: 10^13 units two seconds before the end of their weight still fill
/// a window of a million.
#[test]
fn a_previous_count_above_sixty_four_bits_of_weight_still_denies() {
    let policy = Policy::new(
        "p",
        Algorithm::SlidingWindow,
        1_000_000,
        Duration::from_secs(3_600),
    )
    .unwrap();
    let period = policy.period_us();
    let start = EPOCH_US - EPOCH_US % period;
    let state = Some(State::SlidingWindow(sliding_window::State {
        window_start_us: start,
        previous: 10_000_000_000_000,
        current: 0,
    }));
    // 10^13 × 2 000 000 µs is past u64::MAX; the share is 10^13 × 2 s / 1 h ≈ 5.6 × 10^9.
    let outcome = algorithm::step(state, start + period - 2_000_000, 1, &policy).unwrap();
    assert!(!outcome.decision.allowed);
    assert_eq!(outcome.decision.remaining, 0);
}

/// A sliding window stored in a window ahead of now (the clock stepped back) still counts as
/// the current one: a spent client stays denied rather than getting a fresh window.
#[test]
fn a_sliding_window_from_a_window_ahead_still_counts() {
    let policy = Policy::new("p", Algorithm::SlidingWindow, 5, Duration::from_secs(60)).unwrap();
    let period = policy.period_us();
    let start = EPOCH_US - EPOCH_US % period;
    let ahead = Some(State::SlidingWindow(sliding_window::State {
        window_start_us: start + 3 * period,
        previous: 0,
        current: 5,
    }));
    let outcome = algorithm::step(ahead, start + 10, 1, &policy).unwrap();
    assert!(!outcome.decision.allowed);
    assert_eq!(outcome.decision.remaining, 0);
}

/// A sliding log keeps one entry per instant: a burst admitted within one microsecond costs
/// one entry, and a log built from entries counts their units.
#[test]
fn a_sliding_log_keeps_one_entry_per_instant() {
    let policy = Policy::new("p", Algorithm::SlidingLog, 10, Duration::from_secs(1)).unwrap();
    let mut state = None;
    for _ in 0..3 {
        state = algorithm::step(state, EPOCH_US, 1, &policy)
            .unwrap()
            .new_state;
    }
    state = algorithm::step(state, EPOCH_US + 1, 2, &policy)
        .unwrap()
        .new_state;
    let Some(State::SlidingLog(log)) = state else {
        panic!("a sliding log state, not {state:?}");
    };
    let entries: Vec<(u64, u64)> = log.entries().map(|e| (e.at_us, e.units)).collect();
    assert_eq!(entries, [(EPOCH_US, 3), (EPOCH_US + 1, 2)]);
    assert_eq!(log.total(), 5);

    let rebuilt = sliding_log::State::from_entries(log.entries().copied());
    assert_eq!((rebuilt.total(), rebuilt.entries().len()), (5, 2));
    let outcome =
        algorithm::step(Some(State::SlidingLog(rebuilt)), EPOCH_US + 2, 6, &policy).unwrap();
    assert!(!outcome.decision.allowed, "5 of 10 used: 6 more do not fit");
    assert_eq!(outcome.decision.remaining, 5);
}
