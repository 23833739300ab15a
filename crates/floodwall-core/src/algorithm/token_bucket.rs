//! `token_bucket`: a bucket of `burst` tokens (default `limit`), refilled continuously at
//! `limit / period`.
//!
//! Tokens are kept as an exact integer *credit* in units of `1 / period_us` token: one token is
//! `period_us` credit, and the bucket gains `limit` credit per microsecond. Fractions of a token
//! are therefore never rounded, and the admissions equal [`gcra`](super::gcra)'s on every sequence.

use super::Meter;
use crate::policy::Policy;

/// The token-bucket algorithm.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket;

/// The bucket's credit at `updated_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    /// Tokens × `period_us`, at most `burst × period_us`.
    pub credit: u64,
    /// When `credit` was last brought up to date, in microseconds since the Unix epoch.
    pub updated_us: u64,
}

/// Credit of a full bucket: `burst × period_us`, below 2^52 by the policy bound.
fn full(policy: &Policy) -> u64 {
    policy.capacity() * policy.period_us()
}

impl Meter for TokenBucket {
    type State = State;
    const HAS_BURST: bool = true;
    const MULTIPLIES_CAPACITY_BY_PERIOD: bool = true;

    fn fresh(now_us: u64, policy: &Policy) -> State {
        State {
            credit: full(policy),
            updated_us: now_us,
        }
    }

    fn catch_up(state: &mut State, now_us: u64, policy: &Policy) {
        // A last update in the future (the clock stepped back) is taken as now: nothing is
        // refilled for the gap, and the wait is never longer than one full refill.
        let elapsed = now_us.saturating_sub(state.updated_us);
        // Saturating: a long pause overflows the product, and any overflow means a full bucket.
        let gained = elapsed.saturating_mul(policy.limit());
        state.credit = state.credit.saturating_add(gained).min(full(policy));
        state.updated_us = now_us;
    }

    fn remaining(state: &State, _now_us: u64, policy: &Policy) -> u64 {
        state.credit / policy.period_us()
    }

    fn wait_us(state: &State, _now_us: u64, need: u64, policy: &Policy) -> u64 {
        (need * policy.period_us() - state.credit).div_ceil(policy.limit())
    }

    fn consume(state: &mut State, _now_us: u64, cost: u64, policy: &Policy) {
        state.credit -= cost * policy.period_us();
    }

    fn refund(state: &mut State, _now_us: u64, cost: u64, policy: &Policy) {
        state.credit = (state.credit + cost * policy.period_us()).min(full(policy));
    }

    fn reset_after_us(state: &State, _now_us: u64, policy: &Policy) -> u64 {
        (full(policy) - state.credit).div_ceil(policy.limit())
    }
}
