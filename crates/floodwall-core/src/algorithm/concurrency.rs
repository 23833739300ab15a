//! `concurrency`: at most `limit` units in flight per key. A unit is held from its admission until
//! its holder releases it, or until `period` has passed, whichever comes first: `period` is the
//! lease timeout that gives back the slot of a holder that crashed or was cut off.
//!
//! Units are held by a [`Holder`]: a number the store picks, unique among the holders of one key
//! for as long as they hold (the memory store counts them; Redis uses the call's token). Units
//! admitted without one ([`Holder::ANONYMOUS`]) are given back only by the timeout or a refund.
//! Memory grows with the limit: at most one entry per holder.

use std::collections::VecDeque;

use super::Meter;
use crate::policy::Policy;

/// The concurrency algorithm.
#[derive(Debug, Clone, Copy)]
pub struct Concurrency;

/// Who holds some units of a key: a number unique among the key's holders while they hold. A
/// limiter draws 128 random bits for each, so that a holder named in a lease id can neither be
/// guessed nor tell how many leases were issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Holder(pub u128);

impl Holder {
    /// Units admitted by a plain check: nobody releases them but the timeout.
    pub const ANONYMOUS: Holder = Holder(0);
}

/// The units in flight, soonest to expire first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    holdings: VecDeque<Holding>,
    total: u64,
}

/// Units held by one holder, admitted at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holding {
    /// When the units go back if never released, in microseconds since the Unix epoch.
    pub expires_us: u64,
    /// How many units.
    pub units: u64,
    /// Who holds them.
    pub holder: Holder,
}

impl State {
    /// The holdings, soonest to expire first.
    pub fn holdings(&self) -> impl ExactSizeIterator<Item = &Holding> {
        self.holdings.iter()
    }

    /// Units in flight.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Adds `units` held by `holder` until `expires_us`, keeping the order by expiry (a period
    /// shortened by a reload can expire a new lease before older ones).
    fn push(&mut self, holding: Holding) {
        self.total += holding.units;
        let at = self
            .holdings
            .iter()
            .rposition(|l| l.expires_us <= holding.expires_us)
            .map_or(0, |p| p + 1);
        // Same-instant anonymous units are one entry: nobody tells them apart.
        if holding.holder == Holder::ANONYMOUS
            && let Some(before) = at.checked_sub(1).and_then(|p| self.holdings.get_mut(p))
            && before.holder == Holder::ANONYMOUS
            && before.expires_us == holding.expires_us
        {
            before.units += holding.units;
            return;
        }
        self.holdings.insert(at, holding);
    }

    /// Gives back every unit `holder` holds; returns how many.
    pub fn release(&mut self, holder: Holder) -> u64 {
        if holder == Holder::ANONYMOUS {
            return 0;
        }
        let mut released = 0;
        self.holdings.retain(|l| {
            let mine = l.holder == holder;
            if mine {
                released += l.units;
            }
            !mine
        });
        self.total -= released;
        released
    }
}

impl Meter for Concurrency {
    type State = State;
    const HAS_BURST: bool = false;
    const MAX_LIMIT: u64 = crate::policy::MAX_LOG_LIMIT;
    const MULTIPLIES_CAPACITY_BY_PERIOD: bool = false;

    fn fresh(_now_us: u64, _policy: &Policy) -> State {
        State::default()
    }

    fn catch_up(state: &mut State, now_us: u64, policy: &Policy) {
        while let Some(soonest) = state.holdings.front() {
            if soonest.expires_us > now_us {
                break;
            }
            state.total -= soonest.units;
            state.holdings.pop_front();
        }
        // An expiry further away than one timeout (the clock stepped back) is brought to one
        // timeout from now; those are the latest, hence at the back, and stay in order.
        let latest = now_us + policy.period_us();
        for holding in state.holdings.iter_mut().rev() {
            if holding.expires_us <= latest {
                break;
            }
            holding.expires_us = latest;
        }
    }

    fn remaining(state: &State, _now_us: u64, policy: &Policy) -> u64 {
        policy.limit().saturating_sub(state.total)
    }

    fn wait_us(state: &State, now_us: u64, need: u64, policy: &Policy) -> u64 {
        // The soonest leases must time out until `need` fit; a release may free a slot sooner,
        // but only the timeout is certain.
        let to_free = state.total + need - policy.limit();
        let mut freed = 0;
        for holding in &state.holdings {
            freed += holding.units;
            if freed >= to_free {
                return holding.expires_us - now_us;
            }
        }
        policy.period_us()
    }

    fn consume(state: &mut State, now_us: u64, cost: u64, policy: &Policy) {
        Self::hold(state, now_us, cost, Holder::ANONYMOUS, policy);
    }

    fn hold(state: &mut State, now_us: u64, cost: u64, holder: Holder, policy: &Policy) {
        state.push(Holding {
            expires_us: now_us + policy.period_us(),
            units: cost,
            holder,
        });
    }

    fn release(state: &mut State, holder: Holder) {
        state.release(holder);
    }

    fn refund(state: &mut State, _now_us: u64, cost: u64, _policy: &Policy) {
        // The latest units are the ones a refund gives back: they are what was just admitted.
        let mut left = cost;
        while left > 0 {
            let Some(latest) = state.holdings.back_mut() else {
                break;
            };
            let taken = left.min(latest.units);
            latest.units -= taken;
            state.total -= taken;
            left -= taken;
            if latest.units == 0 {
                state.holdings.pop_back();
            }
        }
    }

    fn reset_after_us(state: &State, now_us: u64, _policy: &Policy) -> u64 {
        state
            .holdings
            .back()
            .map_or(0, |latest| latest.expires_us - now_us)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::algorithm::Evaluation;
    use crate::policy::Algorithm;

    fn policy(limit: u64) -> Policy {
        Policy::new(
            "exports",
            Algorithm::Concurrency,
            limit,
            Duration::from_secs(10),
        )
        .unwrap()
    }

    fn hold(state: &mut State, now: u64, cost: u64, holder: u64, policy: &Policy) -> bool {
        let evaluation = Evaluation::of::<Concurrency>(state, now, cost, policy);
        evaluation
            .conclude_held::<Concurrency>(state, now, cost, policy, true, Holder(holder.into()))
            .0
            .allowed
    }

    #[test]
    fn a_released_slot_is_free_at_once_and_a_kept_one_after_the_timeout() {
        let policy = policy(2);
        let mut state = State::default();
        assert!(hold(&mut state, 0, 1, 1, &policy));
        assert!(hold(&mut state, 1, 1, 2, &policy));
        assert!(!hold(&mut state, 2, 1, 3, &policy));
        assert_eq!(state.release(Holder(2)), 1);
        assert!(hold(&mut state, 3, 1, 3, &policy));
        // Holder 1 never releases: its slot comes back 10 s after it took it.
        let denied = Evaluation::of::<Concurrency>(&mut state, 4, 1, &policy)
            .conclude::<Concurrency>(&mut state, 4, 1, &policy, true)
            .0;
        assert_eq!(
            denied.retry_after,
            Some(Duration::from_micros(10_000_000 - 4))
        );
        assert!(hold(&mut state, 10_000_000, 1, 4, &policy));
    }

    #[test]
    fn a_release_gives_back_only_its_own_units_and_a_second_release_nothing() {
        let policy = policy(5);
        let mut state = State::default();
        assert!(hold(&mut state, 7, 2, 1, &policy));
        assert!(hold(&mut state, 7, 3, 2, &policy));
        assert_eq!(state.release(Holder(1)), 2);
        assert_eq!(state.release(Holder(1)), 0);
        assert_eq!(state.release(Holder::ANONYMOUS), 0);
        assert_eq!(state.total(), 3);
    }

    #[test]
    fn a_plain_check_takes_a_slot_until_the_timeout() {
        let policy = policy(1);
        let check = |state: &mut State, now: u64| {
            Evaluation::of::<Concurrency>(state, now, 1, &policy)
                .conclude::<Concurrency>(state, now, 1, &policy, true)
                .0
        };
        let mut state = State::default();
        assert!(check(&mut state, 5).allowed);
        let denied = check(&mut state, 6);
        assert!(!denied.allowed);
        assert_eq!(
            denied.retry_after,
            Some(Duration::from_micros(10_000_000 - 1))
        );
        assert!(check(&mut state, 10_000_005).allowed, "the slot timed out");
        // Through the one-policy step too.
        let taken = crate::algorithm::step(None, 5, 1, &policy).unwrap();
        let again = crate::algorithm::step(taken.new_state, 6, 1, &policy).unwrap();
        assert!(!again.decision.allowed);
    }

    #[test]
    fn a_clock_that_stepped_back_holds_a_slot_for_at_most_one_timeout() {
        let policy = policy(1);
        let mut state = State::default();
        assert!(hold(&mut state, 100_000_000, 1, 1, &policy));
        // The clock is back at 0: the lease would otherwise last 110 s.
        Concurrency::catch_up(&mut state, 0, &policy);
        assert_eq!(Concurrency::reset_after_us(&state, 0, &policy), 10_000_000);
    }
}
