//! `token_bucket`: a bucket of `burst` tokens (default `limit`), refilled continuously at
//! `limit / period`.
//!
//! Tokens are kept as an exact integer *credit* in units of `1 / period_us` token: one token is
//! `period_us` credit, and the bucket gains `limit` credit per microsecond. Fractions of a token
//! are therefore never rounded, and the admissions equal [`gcra`](super::gcra)'s on every sequence.
//! A bucket in debt is empty and owes credit, which refill pays before it fills the bucket.

use super::Meter;
use crate::policy::Policy;

/// The token-bucket algorithm.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket;

/// The bucket's credit at `updated_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    /// Tokens × `period_us`, at most `burst × period_us`; 0 while `owed` is not.
    pub credit: u64,
    /// When `credit` was last brought up to date, in microseconds since the Unix epoch.
    pub updated_us: u64,
    /// Credit owed past an empty bucket (a debit charged more than was left), at most
    /// `max_debt × period_us`.
    pub owed: u64,
}

/// `state`'s credit less what it owes.
fn balance(state: &State) -> i128 {
    i128::from(state.credit) - i128::from(state.owed)
}

/// Sets `state`'s credit and debt from a `balance`, kept between the most a key may owe and
/// a full bucket.
fn set_balance(state: &mut State, balance: i128, policy: &Policy) {
    let floor = -i128::from(policy.max_debt() * policy.period_us());
    let balance = balance.clamp(floor, i128::from(full(policy)));
    // Within ±2^53 after the clamp.
    let magnitude = u64::try_from(balance.unsigned_abs()).unwrap_or(u64::MAX);
    (state.credit, state.owed) = if balance >= 0 {
        (magnitude, 0)
    } else {
        (0, magnitude)
    };
}

/// Credit of a full bucket: `burst × period_us`, below 2^52 by the policy bound.
fn full(policy: &Policy) -> u64 {
    policy.capacity() * policy.period_us()
}

impl Meter for TokenBucket {
    type State = State;
    const HAS_BURST: bool = true;
    const MULTIPLIES_CAPACITY_BY_PERIOD: bool = true;
    const CARRIES_DEBT: bool = true;

    fn fresh(now_us: u64, policy: &Policy) -> State {
        State {
            credit: full(policy),
            updated_us: now_us,
            owed: 0,
        }
    }

    #[inline]
    fn catch_up(state: &mut State, now_us: u64, policy: &Policy) {
        // A last update in the future (the clock stepped back) is taken as now: nothing is
        // refilled for the gap, and the wait is never longer than one full refill.
        let elapsed = now_us.saturating_sub(state.updated_us);
        // Saturating: a long pause overflows the product, and any overflow means a full bucket.
        let gained = elapsed.saturating_mul(policy.limit());
        // Refill pays the debt first; a debt above the policy's (lowered since) is cut to it.
        set_balance(state, balance(state) + i128::from(gained), policy);
        state.updated_us = now_us;
    }

    #[inline]
    fn remaining(state: &State, _now_us: u64, policy: &Policy) -> u64 {
        state.credit / policy.period_us()
    }

    fn wait_us(state: &State, _now_us: u64, need: u64, policy: &Policy) -> u64 {
        (need * policy.period_us() + state.owed - state.credit).div_ceil(policy.limit())
    }

    #[inline]
    fn consume(state: &mut State, _now_us: u64, cost: u64, policy: &Policy) {
        state.credit -= cost * policy.period_us();
    }

    fn refund(state: &mut State, _now_us: u64, cost: u64, policy: &Policy) {
        let given = i128::from(cost * policy.period_us());
        set_balance(state, balance(state) + given, policy);
    }

    fn debit(state: &mut State, _now_us: u64, cost: u64, policy: &Policy) {
        let charged = i128::from(cost) * i128::from(policy.period_us());
        set_balance(state, balance(state) - charged, policy);
    }

    #[inline]
    fn debt(state: &State, _now_us: u64, policy: &Policy) -> u64 {
        state.owed.div_ceil(policy.period_us())
    }

    #[inline]
    fn reset_after_us(state: &State, _now_us: u64, policy: &Policy) -> u64 {
        (full(policy) - state.credit + state.owed).div_ceil(policy.limit())
    }
}
