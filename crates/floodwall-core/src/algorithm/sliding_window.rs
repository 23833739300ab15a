//! `sliding_window`: the weighted approximation of a sliding window with two counters.
//!
//! A request of cost `c` is admitted iff `previous × (period − elapsed) / period + current + c ≤ limit`,
//! where `elapsed` is the time since the current window started, in microseconds. The comparison
//! is done in integers (`previous × (period − elapsed) ≤ (limit − current − c) × period`), which the
//! policy bound `limit × period_us < 2^52` keeps exact in Lua.
//!
//! Debt: the current window's count may pass the limit by up to `max_debt` (a debit); when
//! the window rolls, that excess stays counted in the new current window, and only the rest
//! becomes the previous window's decaying weight. A gap of two whole windows forgives it.

use super::{Meter, div_ceil, narrow, window_start};
use crate::policy::Policy;

/// The sliding-window (weighted counter) algorithm.
#[derive(Debug, Clone, Copy)]
pub struct SlidingWindow;

/// The counts of the current window and the one before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    /// Start of the current window, a multiple of the period.
    pub window_start_us: u64,
    /// Units admitted in the window before.
    pub previous: u64,
    /// Units admitted in the current window.
    pub current: u64,
}

/// `ceil(previous × (period − elapsed) / period)`: the previous window's weighted share.
fn weighted_previous(state: &State, now_us: u64, period: u64) -> u64 {
    let left = period - (now_us - state.window_start_us);
    // Within u64 unless a lowered limit left a count far above the policy's bound.
    match state.previous.checked_mul(left) {
        Some(weight) => weight.div_ceil(period),
        None => narrow(div_ceil(
            u128::from(state.previous) * u128::from(left),
            u128::from(period),
        )),
    }
}

/// The excess of `count` over the limit that a window carries into the next, at most `max_debt`.
fn carry(count: u64, policy: &Policy) -> u64 {
    count.saturating_sub(policy.limit()).min(policy.max_debt())
}

/// The smallest `elapsed` in `[0, period)` at which `count × (period − elapsed) ≤ budget × period`,
/// or `period` if none.
fn first_elapsed_within(count: u64, budget: u64, period: u64) -> u64 {
    if count == 0 {
        return 0;
    }
    let slack = u128::from(budget) * u128::from(period) / u128::from(count);
    period - narrow(slack.min(u128::from(period)))
}

impl Meter for SlidingWindow {
    type State = State;
    const HAS_BURST: bool = false;
    const MULTIPLIES_CAPACITY_BY_PERIOD: bool = true;
    const CARRIES_DEBT: bool = true;

    fn fresh(now_us: u64, policy: &Policy) -> State {
        State {
            window_start_us: window_start(now_us, policy.period_us()),
            previous: 0,
            current: 0,
        }
    }

    #[inline]
    fn catch_up(state: &mut State, now_us: u64, policy: &Policy) {
        let period = policy.period_us();
        let current = window_start(now_us, period);
        if state.window_start_us == current {
            return;
        }
        if state.window_start_us > current {
            // The clock stepped back: count the stored windows as the current ones, so the
            // lockout ends within two periods at most.
            state.window_start_us = current;
        } else if state.window_start_us + period == current {
            let carried = carry(state.current, policy);
            *state = State {
                window_start_us: current,
                previous: state.current - carried,
                current: carried,
            };
        } else if state.window_start_us + 2 * period == current {
            // The window between counted only what it carried, which it carries no further.
            *state = State {
                window_start_us: current,
                previous: carry(state.current, policy),
                current: 0,
            };
        } else {
            *state = State {
                window_start_us: current,
                previous: 0,
                current: 0,
            };
        }
    }

    #[inline]
    fn remaining(state: &State, now_us: u64, policy: &Policy) -> u64 {
        policy
            .limit()
            .saturating_sub(state.current)
            .saturating_sub(weighted_previous(state, now_us, policy.period_us()))
    }

    fn wait_us(state: &State, now_us: u64, need: u64, policy: &Policy) -> u64 {
        let (limit, period, start) = (policy.limit(), policy.period_us(), state.window_start_us);
        // Later in this window, as the previous window's weight decays?
        if state.current + need <= limit {
            let elapsed =
                first_elapsed_within(state.previous, limit - state.current - need, period);
            if elapsed < period {
                return (start + elapsed).saturating_sub(now_us);
            }
        }
        // In the next window, where today's count becomes the decaying previous one, less
        // the debt it carries?
        let carried = carry(state.current, policy);
        if carried + need <= limit {
            let previous = state.current - carried;
            let elapsed = first_elapsed_within(previous, limit - carried - need, period);
            if elapsed < period {
                return (start + period + elapsed).saturating_sub(now_us);
            }
        }
        // In the window after, where the debt is the decaying previous count?
        let elapsed = first_elapsed_within(carried, limit - need, period);
        if elapsed < period {
            return (start + 2 * period + elapsed).saturating_sub(now_us);
        }
        // Only once every count has left.
        start + 3 * period - now_us
    }

    #[inline]
    fn consume(state: &mut State, _now_us: u64, cost: u64, _policy: &Policy) {
        state.current += cost;
    }

    fn refund(state: &mut State, _now_us: u64, cost: u64, _policy: &Policy) {
        // Units consumed before the window rolled now sit in `previous`.
        let from_current = cost.min(state.current);
        state.current -= from_current;
        state.previous = state.previous.saturating_sub(cost - from_current);
    }

    fn debit(state: &mut State, _now_us: u64, cost: u64, policy: &Policy) {
        // Up to the limit and the most a key may owe; a count already past that (a limit
        // lowered since) stays as it is.
        let most = policy.limit() + policy.max_debt();
        state.current = state
            .current
            .max(state.current.saturating_add(cost).min(most));
    }

    #[inline]
    fn debt(state: &State, _now_us: u64, policy: &Policy) -> u64 {
        carry(state.current, policy)
    }

    #[inline]
    fn reset_after_us(state: &State, now_us: u64, policy: &Policy) -> u64 {
        let period = policy.period_us();
        if carry(state.current, policy) > 0 {
            state.window_start_us + 3 * period - now_us
        } else if state.current > 0 {
            state.window_start_us + 2 * period - now_us
        } else if state.previous > 0 {
            state.window_start_us + period - now_us
        } else {
            0
        }
    }
}
