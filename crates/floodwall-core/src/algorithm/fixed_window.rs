//! `fixed_window`: one counter per window. Windows are aligned to multiples of the period since
//! the Unix epoch, or follow the calendar: weeks from Monday, months from the first (all UTC). Admits at most `limit` units per window, so up to `2 × limit`
//! across a boundary (documented: the price of keeping one counter).

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

    fn fresh(now_us: u64, policy: &Policy) -> State {
        State {
            window_start_us: window(now_us, policy).0,
            count: 0,
        }
    }

    fn catch_up(state: &mut State, now_us: u64, policy: &Policy) {
        let current = window(now_us, policy).0;
        if state.window_start_us < current {
            *state = State {
                window_start_us: current,
                count: 0,
            };
        } else {
            // A window in the future (the clock stepped back) is counted as the current one, so
            // the lockout lasts at most until the current window ends.
            state.window_start_us = current;
        }
    }

    fn remaining(state: &State, _now_us: u64, policy: &Policy) -> u64 {
        policy.limit().saturating_sub(state.count)
    }

    fn wait_us(_state: &State, now_us: u64, _need: u64, policy: &Policy) -> u64 {
        // The next window starts empty and need <= limit.
        window(now_us, policy).1 - now_us
    }

    fn consume(state: &mut State, _now_us: u64, cost: u64, _policy: &Policy) {
        state.count += cost;
    }

    fn refund(state: &mut State, _now_us: u64, cost: u64, _policy: &Policy) {
        state.count = state.count.saturating_sub(cost);
    }

    fn reset_after_us(state: &State, now_us: u64, policy: &Policy) -> u64 {
        if state.count == 0 {
            0
        } else {
            window(now_us, policy).1 - now_us
        }
    }
}
