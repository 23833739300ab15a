//! `fixed_window`: one counter per window. Windows are aligned to multiples of the period since
//! the Unix epoch, or follow the calendar: weeks from Monday, months from the first (all UTC). Admits at most `limit` units per window, so up to `2 × limit`
//! across a boundary (documented: the price of keeping one counter).
//!
//! Debt: a window's count may pass the limit by up to `max_debt` (a debit); the next window
//! starts with that excess counted, so it pays the debt from its own quota. A gap of a whole
//! window or more forgives it.

use super::Meter;
use crate::calendar;
use crate::policy::{Calendar, Policy};

/// The window containing `now_us`, as `[start, end)` in microseconds since the epoch.
pub fn window(now_us: u64, policy: &Policy) -> (u64, u64) {
    match policy.calendar() {
        Calendar::Months(months) => calendar::month_window(now_us, u64::from(months)),
        Calendar::Weeks(weeks) => calendar::week_window(now_us, u64::from(weeks)),
        _ => calendar::period_window(now_us, policy.period_us()),
    }
}

/// What the window starting at `next_us` owes from `state`'s: the excess of an adjacent
/// window's count over the limit, at most `max_debt`.
fn carried(state: &State, next_us: u64, policy: &Policy) -> u64 {
    let adjacent = window(next_us - 1, policy).0 == state.window_start_us;
    match adjacent {
        true => state
            .count
            .saturating_sub(policy.limit())
            .min(policy.max_debt()),
        false => 0,
    }
}

/// The fixed-window algorithm.
#[derive(Debug, Clone, Copy)]
pub struct FixedWindow;

/// Units admitted in the window starting at `window_start_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    /// Start of the counted window.
    pub window_start_us: u64,
    /// Units admitted in it.
    pub count: u64,
}

impl Meter for FixedWindow {
    type State = State;
    const HAS_BURST: bool = false;
    const MULTIPLIES_CAPACITY_BY_PERIOD: bool = false;
    const CARRIES_DEBT: bool = true;

    fn fresh(now_us: u64, policy: &Policy) -> State {
        State {
            window_start_us: window(now_us, policy).0,
            count: 0,
        }
    }

    #[inline]
    fn catch_up(state: &mut State, now_us: u64, policy: &Policy) {
        let current = window(now_us, policy).0;
        if state.window_start_us < current {
            *state = State {
                window_start_us: current,
                count: carried(state, current, policy),
            };
        } else {
            // A window in the future (the clock stepped back) is counted as the current one, so
            // the lockout lasts at most until the current window ends.
            state.window_start_us = current;
        }
    }

    #[inline]
    fn remaining(state: &State, _now_us: u64, policy: &Policy) -> u64 {
        policy.limit().saturating_sub(state.count)
    }

    fn wait_us(state: &State, now_us: u64, need: u64, policy: &Policy) -> u64 {
        // The next window starts with the debt carried (at most max_debt <= limit), and the
        // one after it empty; need <= limit.
        let end = window(now_us, policy).1;
        if carried(state, end, policy) + need <= policy.limit() {
            end - now_us
        } else {
            window(end, policy).1 - now_us
        }
    }

    #[inline]
    fn consume(state: &mut State, _now_us: u64, cost: u64, _policy: &Policy) {
        state.count += cost;
    }

    fn refund(state: &mut State, _now_us: u64, cost: u64, _policy: &Policy) {
        state.count = state.count.saturating_sub(cost);
    }

    fn debit(state: &mut State, _now_us: u64, cost: u64, policy: &Policy) {
        // Up to the limit and the most a key may owe; a count already past that (a limit
        // lowered since) stays as it is.
        let most = policy.limit() + policy.max_debt();
        state.count = state.count.max(state.count.saturating_add(cost).min(most));
    }

    #[inline]
    fn debt(state: &State, _now_us: u64, policy: &Policy) -> u64 {
        // A count past the limit by more (a limit lowered since) owes no more than that.
        state
            .count
            .saturating_sub(policy.limit())
            .min(policy.max_debt())
    }

    #[inline]
    fn reset_after_us(state: &State, now_us: u64, policy: &Policy) -> u64 {
        let end = window(now_us, policy).1;
        if state.count == 0 {
            0
        } else if carried(state, end, policy) > 0 {
            window(end, policy).1 - now_us
        } else {
            end - now_us
        }
    }
}
