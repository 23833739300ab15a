//! `sliding_log`: exact; at most `limit` units in any interval of length `period` ending now.
//!
//! An admitted unit at time `t` counts while `now < t + period`. Memory grows with the limit (at
//! most one entry per admitted unit; same-instant admissions share an entry here, while the Redis
//! script stores one sorted-set member per unit).
//!
//! It carries no debt: a charge past the limit would break the promise of at most `limit`
//! units in any period, whatever came after, so a debit charges only what is left.

use std::collections::VecDeque;

use super::Meter;
use crate::policy::Policy;

/// The sliding-log algorithm.
#[derive(Debug, Clone, Copy)]
pub struct SlidingLog;

/// Admitted units, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    entries: VecDeque<Entry>,
    total: u64,
}

/// Units admitted at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// When they were admitted, in microseconds since the Unix epoch.
    pub at_us: u64,
    /// How many units.
    pub units: u64,
}

impl State {
    /// A log of `entries`, which must be sorted by time.
    pub fn from_entries(entries: impl IntoIterator<Item = Entry>) -> Self {
        let entries: VecDeque<Entry> = entries.into_iter().collect();
        let total = entries.iter().map(|e| e.units).sum();
        State { entries, total }
    }

    /// The admitted units, oldest first.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = &Entry> {
        self.entries.iter()
    }

    /// Units currently in the log.
    pub fn total(&self) -> u64 {
        self.total
    }
}

impl Meter for SlidingLog {
    type State = State;
    const HAS_BURST: bool = false;
    const MAX_LIMIT: u64 = crate::policy::MAX_LOG_LIMIT;
    const MULTIPLIES_CAPACITY_BY_PERIOD: bool = false;

    fn fresh(_now_us: u64, _policy: &Policy) -> State {
        State::default()
    }

    fn catch_up(state: &mut State, now_us: u64, policy: &Policy) {
        let period = policy.period_us();
        while let Some(oldest) = state.entries.front() {
            if oldest.at_us + period > now_us {
                break;
            }
            state.total -= oldest.units;
            state.entries.pop_front();
        }
        // Entries in the future (the clock stepped back) count as admitted now, so they expire
        // within one period; they are the newest, hence at the back.
        for entry in state.entries.iter_mut().rev() {
            if entry.at_us <= now_us {
                break;
            }
            entry.at_us = now_us;
        }
    }

    fn remaining(state: &State, _now_us: u64, policy: &Policy) -> u64 {
        policy.limit().saturating_sub(state.total)
    }

    fn wait_us(state: &State, now_us: u64, need: u64, policy: &Policy) -> u64 {
        // The oldest units must leave the interval until `need` fit.
        let to_free = state.total + need - policy.limit();
        let mut freed = 0;
        for entry in &state.entries {
            freed += entry.units;
            if freed >= to_free {
                return entry.at_us + policy.period_us() - now_us;
            }
        }
        policy.period_us()
    }

    fn consume(state: &mut State, now_us: u64, cost: u64, _policy: &Policy) {
        state.total += cost;
        match state.entries.back_mut() {
            Some(newest) if newest.at_us == now_us => newest.units += cost,
            _ => state.entries.push_back(Entry {
                at_us: now_us,
                units: cost,
            }),
        }
    }

    fn refund(state: &mut State, _now_us: u64, cost: u64, _policy: &Policy) {
        // The newest units are the ones a refund gives back: they are what was just consumed.
        let mut left = cost;
        while left > 0 {
            let Some(newest) = state.entries.back_mut() else {
                break;
            };
            let taken = left.min(newest.units);
            newest.units -= taken;
            state.total -= taken;
            left -= taken;
            if newest.units == 0 {
                state.entries.pop_back();
            }
        }
    }

    fn reset_after_us(state: &State, now_us: u64, policy: &Policy) -> u64 {
        state
            .entries
            .back()
            .map_or(0, |newest| newest.at_us + policy.period_us() - now_us)
    }
}
