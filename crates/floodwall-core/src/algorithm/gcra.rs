//! `gcra`: the generic cell rate algorithm. One timestamp of state, the theoretical arrival time
//! (TAT); the same admissions as [`token_bucket`](super::token_bucket) with the same policy.
//!
//! The emission interval `period / limit` is rarely a whole number of microseconds, so the TAT is
//! kept exactly as `tat_us + tat_frac / limit` microseconds with `0 ≤ tat_frac < limit`. A request
//! of cost `c` is admitted iff `TAT' − now ≤ burst × period / limit`, where `TAT' = max(TAT, now) +
//! c × period / limit`; multiplied through by `limit` every quantity is an integer below 2^53.

use super::Meter;
use crate::policy::Policy;

/// The GCRA algorithm.
#[derive(Debug, Clone, Copy)]
pub struct Gcra;

/// The theoretical arrival time `tat_us + tat_frac / limit` microseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    /// Whole microseconds of the TAT.
    pub tat_us: u64,
    /// The fraction of a microsecond, in units of `1 / limit` µs; below `limit`.
    pub tat_frac: u64,
}

/// `(TAT − now) × limit`, the scaled backlog; zero at rest. May exceed `max_backlog` (and 2^64) only
/// before [`Gcra::catch_up`] clamps it.
fn backlog(state: &State, now_us: u64, policy: &Policy) -> u128 {
    u128::from(state.tat_us - now_us) * u128::from(policy.limit()) + u128::from(state.tat_frac)
}

/// The backlog of a caught-up state, at most the ceiling < 2^53, so plain `u64` arithmetic is
/// exact.
fn current_backlog(state: &State, now_us: u64, policy: &Policy) -> u64 {
    (state.tat_us - now_us) * policy.limit() + state.tat_frac
}

/// Whether a TAT at or after `now_us` is within one burst whatever its fraction: its whole
/// microseconds ahead are strictly fewer than the burst's. A cheap test before the exact one,
/// which decides the rest (equality included).
fn surely_within_burst(state: &State, now_us: u64, max: u64, limit: u64) -> bool {
    state.tat_us - now_us < max / limit
}

/// `burst × period_us`: a full burst's backlog, past which a request is denied; below 2^52 by
/// the policy bound.
fn max_backlog(policy: &Policy) -> u64 {
    policy.capacity() * policy.period_us()
}

/// `(burst + max_debt) × period_us`: the largest backlog a state may carry, a full burst plus
/// the most a key may owe; below 2^53 (`max_debt` is at most the burst).
fn ceiling(policy: &Policy) -> u64 {
    (policy.capacity() + policy.max_debt()) * policy.period_us()
}

/// The state `backlog` ahead of `now_us`.
fn ahead(now_us: u64, backlog: u64, limit: u64) -> State {
    State {
        tat_us: now_us + backlog / limit,
        tat_frac: backlog % limit,
    }
}

impl Meter for Gcra {
    type State = State;
    const HAS_BURST: bool = true;
    const MULTIPLIES_CAPACITY_BY_PERIOD: bool = true;
    const CARRIES_DEBT: bool = true;

    fn fresh(now_us: u64, _policy: &Policy) -> State {
        State {
            tat_us: now_us,
            tat_frac: 0,
        }
    }

    #[inline]
    fn catch_up(state: &mut State, now_us: u64, policy: &Policy) {
        let limit = policy.limit();
        // A fraction left from a larger limit (the policy was changed) is cut, never carried.
        state.tat_frac = state.tat_frac.min(limit - 1);
        if state.tat_us < now_us || (state.tat_us == now_us && state.tat_frac == 0) {
            *state = Self::fresh(now_us, policy);
            return;
        }
        // A TAT further ahead than a full burst and the most a key may owe (the clock stepped
        // back) is clamped to that, so no client waits longer than their refill.
        let max = ceiling(policy);
        if !surely_within_burst(state, now_us, max, limit)
            && backlog(state, now_us, policy) > u128::from(max)
        {
            *state = ahead(now_us, max, limit);
        }
    }

    #[inline]
    fn remaining(state: &State, now_us: u64, policy: &Policy) -> u64 {
        max_backlog(policy).saturating_sub(current_backlog(state, now_us, policy))
            / policy.period_us()
    }

    fn wait_us(state: &State, now_us: u64, need: u64, policy: &Policy) -> u64 {
        // Earliest t with (tat_us − t) × limit + tat_frac + need × period ≤ burst × period.
        let slack = i128::from(max_backlog(policy))
            - i128::from(need * policy.period_us())
            - i128::from(state.tat_frac);
        let at = if slack >= 0 {
            let slack = u64::try_from(slack).unwrap_or(u64::MAX);
            state.tat_us.saturating_sub(slack / policy.limit())
        } else {
            // Only once the TAT itself has passed, i.e. at the next whole microsecond.
            state.tat_us + 1
        };
        at.saturating_sub(now_us)
    }

    #[inline]
    fn consume(state: &mut State, _now_us: u64, cost: u64, policy: &Policy) {
        let limit = policy.limit();
        let scaled = state.tat_frac + cost * policy.period_us();
        state.tat_us += scaled / limit;
        state.tat_frac = scaled % limit;
    }

    fn refund(state: &mut State, now_us: u64, cost: u64, policy: &Policy) {
        // The TAT moves back by `cost` emission intervals, never before now (rest).
        let backlog =
            current_backlog(state, now_us, policy).saturating_sub(cost * policy.period_us());
        *state = ahead(now_us, backlog, policy.limit());
    }

    fn debit(state: &mut State, now_us: u64, cost: u64, policy: &Policy) {
        // The TAT moves on by `cost` emission intervals, up to the ceiling.
        let backlog = current_backlog(state, now_us, policy)
            .saturating_add(cost.saturating_mul(policy.period_us()))
            .min(ceiling(policy));
        *state = ahead(now_us, backlog, policy.limit());
    }

    #[inline]
    fn debt(state: &State, now_us: u64, policy: &Policy) -> u64 {
        current_backlog(state, now_us, policy)
            .saturating_sub(max_backlog(policy))
            .div_ceil(policy.period_us())
    }

    #[inline]
    fn reset_after_us(state: &State, now_us: u64, _policy: &Policy) -> u64 {
        if state.tat_frac > 0 {
            state.tat_us + 1 - now_us
        } else {
            state.tat_us - now_us
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Algorithm;
    use std::time::Duration;

    #[test]
    fn fractional_emission_interval_is_exact() {
        // 3 per second: the interval is 333 333.3… µs, never rounded.
        let policy = Policy::new("p", Algorithm::Gcra, 3, Duration::from_secs(1)).unwrap();
        let mut state = Gcra::fresh(0, &policy);
        Gcra::consume(&mut state, 0, 3, &policy);
        assert_eq!(
            state,
            State {
                tat_us: 1_000_000,
                tat_frac: 0
            }
        );
        assert_eq!(Gcra::remaining(&state, 0, &policy), 0);
        assert_eq!(Gcra::wait_us(&state, 0, 1, &policy), 333_334);
        assert_eq!(Gcra::remaining(&state, 333_333, &policy), 0);
        assert_eq!(Gcra::remaining(&state, 333_334, &policy), 1);
    }

    #[test]
    fn a_tat_a_fraction_past_a_full_burst_is_clamped() {
        // limit 3 per 1 s, burst 3, no debt: the ceiling is 3 000 000, i.e. 1 000 000 whole µs
        // and no fraction.
        let policy = Policy::new("p", Algorithm::Gcra, 3, Duration::from_secs(1))
            .and_then(|policy| policy.with_max_debt(0))
            .unwrap();
        let now = 5_000_000;
        // Whole microseconds equal to the burst, plus a fraction: one third of a µs too far.
        let mut state = State {
            tat_us: now + 1_000_000,
            tat_frac: 1,
        };
        Gcra::catch_up(&mut state, now, &policy);
        assert_eq!(
            state,
            State {
                tat_us: now + 1_000_000,
                tat_frac: 0
            }
        );
        // Strictly inside the burst, nothing changes.
        let mut inside = State {
            tat_us: now + 999_999,
            tat_frac: 2,
        };
        Gcra::catch_up(&mut inside, now, &policy);
        assert_eq!(
            inside,
            State {
                tat_us: now + 999_999,
                tat_frac: 2
            }
        );
    }
}
