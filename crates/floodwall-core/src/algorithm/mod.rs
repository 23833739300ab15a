//! The algorithms as pure functions of (state, now, cost, policy).
//!
//! Each algorithm lives in its own file and implements [`Meter`]: how its state catches up with
//! time, how many units it could admit now, how long until it could admit more, and what
//! consuming and refunding do. The registry ([`for_each_algorithm!`](crate::for_each_algorithm))
//! lists them once. [`step`] and [`Evaluation`] build every decision from those pieces, so the
//! memory store (which decides several policies under one lock before writing any) and the
//! reference-model tests exercise the same arithmetic. The Redis scripts mirror each file line for
//! line; all values are integers below 2^53 so Lua's doubles hold them exactly.

use std::fmt;
use std::time::Duration;

use crate::decision::Decision;
use crate::error::CostError;
use crate::policy::Policy;

pub mod concurrency;
pub mod fixed_window;
pub mod gcra;
mod registry;
pub mod sliding_log;
pub mod sliding_window;
pub mod token_bucket;

pub use concurrency::{Concurrency, Holder};
pub use fixed_window::FixedWindow;
pub use gcra::Gcra;
pub use registry::{Algorithm, State, debit, hold, refund, release, step};
pub use sliding_log::SlidingLog;
pub use sliding_window::SlidingWindow;
pub use token_bucket::TokenBucket;

/// The arithmetic of one algorithm, in whole microseconds and whole units.
///
/// Contract shared by all implementations, for a state that [`catch_up`](Meter::catch_up) brought up to
/// `now_us`: [`remaining`](Meter::remaining) is the largest cost admissible now (so a request of
/// cost `c` is admitted iff `c <= remaining`); [`wait_us`](Meter::wait_us) is the exact time until
/// `need` units become admissible if nothing else is consumed; [`reset_after_us`](Meter::reset_after_us)
/// is the time until the state is back at rest (full quota), zero meaning it can be forgotten.
pub trait Meter {
    /// What the algorithm stores per key.
    type State: Clone + fmt::Debug + PartialEq + Eq;

    /// Whether a policy of this algorithm may have a burst other than its limit.
    const HAS_BURST: bool;

    /// The largest limit (and burst) a policy of this algorithm accepts.
    const MAX_LIMIT: u64 = crate::policy::MAX_LIMIT;

    /// Whether the arithmetic multiplies the capacity by the period in microseconds, which must
    /// then stay below [`EXACT_ARITHMETIC_BOUND`](crate::EXACT_ARITHMETIC_BOUND).
    const MULTIPLIES_CAPACITY_BY_PERIOD: bool;

    /// Whether a key may owe units past zero ([`debit`](Meter::debit) up to the policy's
    /// `max_debt`).
    const CARRIES_DEBT: bool = false;

    /// The state of a key never seen, or back at rest, as of `now_us`.
    fn fresh(now_us: u64, policy: &Policy) -> Self::State;

    /// Brings `state` up to `now_us`: rolls windows, refills buckets, drops expired log entries,
    /// and clamps stored times that lie further in the future than any legitimate state could (a
    /// clock that stepped back), so that no client is locked out for longer than one period.
    fn catch_up(state: &mut Self::State, now_us: u64, policy: &Policy);

    /// The largest cost admissible at `now_us` (never negative, even after the limit was lowered).
    fn remaining(state: &Self::State, now_us: u64, policy: &Policy) -> u64;

    /// Microseconds until `need` units become admissible. Only called when `need > remaining`
    /// and `need <= capacity`.
    fn wait_us(state: &Self::State, now_us: u64, need: u64, policy: &Policy) -> u64;

    /// Records `cost` admitted units at `now_us`. Only called when `cost <= remaining`.
    fn consume(state: &mut Self::State, now_us: u64, cost: u64, policy: &Policy);

    /// Records `cost` admitted units held by `holder`, who may [`release`](Meter::release) them.
    /// Only [`Concurrency`] tells holders apart; for a rate, units are spent, whoever spends them.
    #[inline]
    fn hold(state: &mut Self::State, now_us: u64, cost: u64, holder: Holder, policy: &Policy) {
        let _ = holder;
        Self::consume(state, now_us, cost, policy);
    }

    /// Gives back every unit `holder` holds. A rate has nothing to give back: its units were
    /// spent when admitted.
    fn release(state: &mut Self::State, holder: Holder) {
        let _ = (state, holder);
    }

    /// Gives back `cost` units admitted earlier: the inverse of [`consume`](Meter::consume),
    /// stopping at rest (a full quota), so a refund never grants more than was taken while the
    /// admission it undoes still counts (the state has not been at rest since). Called on a
    /// caught-up state with `cost <= capacity`.
    fn refund(state: &mut Self::State, now_us: u64, cost: u64, policy: &Policy);

    /// Charges `cost` units whatever is left (a cost known only after the answer): past zero,
    /// the key owes the rest, up to the policy's `max_debt`; what would go past that is
    /// forgiven. Called on a caught-up state; `cost` may exceed the capacity. An algorithm that
    /// carries no debt charges only what is left.
    fn debit(state: &mut Self::State, now_us: u64, cost: u64, policy: &Policy) {
        let taken = cost.min(Self::remaining(state, now_us, policy));
        if taken > 0 {
            Self::consume(state, now_us, taken, policy);
        }
    }

    /// Units the key owes past zero (0 unless a debit charged more than was left), rounded
    /// up. While it owes any, [`remaining`](Meter::remaining) is 0. Called on a caught-up
    /// state.
    fn debt(state: &Self::State, now_us: u64, policy: &Policy) -> u64 {
        let _ = (state, now_us, policy);
        0
    }

    /// Microseconds until the key is back at its full quota; zero when it already is.
    fn reset_after_us(state: &Self::State, now_us: u64, policy: &Policy) -> u64;
}

/// The result of one [`step`]: the decision, the state to keep, and how long to keep it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome<S> {
    /// The answer to the request.
    pub decision: Decision,
    /// The state to store; `None` when the key is at rest and can be forgotten. A denied request
    /// consumed nothing, but its state may still differ from the input when a time from the
    /// future (a clock that stepped back) was clamped: store it then, or the clamp does not bound
    /// the lockout (the Redis scripts write on a denial only in that case).
    pub new_state: Option<S>,
    /// Microseconds until `new_state` is back at rest; the expiry to give the stored key.
    pub ttl_us: u64,
}

/// The first half of a decision: a caught-up state and whether the request fits in it.
///
/// Stores that check several policies at once evaluate all of them, then [`conclude`](Evaluation::conclude)
/// each with `commit` set only if every enforced policy admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evaluation {
    /// The largest cost admissible now, before this request.
    pub remaining: u64,
    /// Whether this policy alone admits the request (for cost 0: whether one unit would be).
    pub allowed: bool,
}

impl Evaluation {
    /// Catches `state` up to `now_us` and judges a request of `cost` against it; consumes nothing.
    /// A `cost` of zero judges one unit, so a peek reports whether the next request would pass.
    // Always inlined: every store's decision runs it, and as a call (the compiler's choice
    // across crates) it cost the memory store a tenth of a decision.
    #[inline(always)]
    pub fn of<M: Meter>(state: &mut M::State, now_us: u64, cost: u64, policy: &Policy) -> Self {
        M::catch_up(state, now_us, policy);
        let remaining = M::remaining(state, now_us, policy);
        Evaluation {
            remaining,
            allowed: cost.max(1) <= remaining,
        }
    }

    /// Finishes the decision: consumes `cost` if `commit` and this policy admitted, then reports.
    /// Returns the decision and the state's time to rest in microseconds.
    pub fn conclude<M: Meter>(
        self,
        state: &mut M::State,
        now_us: u64,
        cost: u64,
        policy: &Policy,
        commit: bool,
    ) -> (Decision, u64) {
        self.conclude_held::<M>(state, now_us, cost, policy, commit, Holder::ANONYMOUS)
    }

    /// [`conclude`](Evaluation::conclude), with what is consumed held by `holder`.
    // Always inlined, as `of` is.
    #[inline(always)]
    pub fn conclude_held<M: Meter>(
        self,
        state: &mut M::State,
        now_us: u64,
        cost: u64,
        policy: &Policy,
        commit: bool,
        holder: Holder,
    ) -> (Decision, u64) {
        let consumed = commit && self.allowed && cost > 0;
        let remaining = if consumed {
            M::hold(state, now_us, cost, holder, policy);
            self.remaining - cost
        } else {
            self.remaining
        };
        let retry_after = (!self.allowed)
            .then(|| Duration::from_micros(M::wait_us(state, now_us, cost.max(1), policy)));
        let reset_after_us = M::reset_after_us(state, now_us, policy);
        let decision = Decision {
            allowed: self.allowed,
            capacity: policy.capacity(),
            remaining,
            reset_after: Duration::from_micros(reset_after_us),
            retry_after,
            debt: M::debt(state, now_us, policy),
        };
        (decision, reset_after_us)
    }
}

/// Checks that `cost` can ever be admitted by `policy`.
///
/// # Errors
///
/// [`CostError`] when `cost` exceeds the policy's capacity.
#[inline]
pub fn check_cost(policy: &Policy, cost: u64) -> Result<(), CostError> {
    if cost > policy.capacity() {
        return Err(CostError {
            policy: policy.name().to_owned(),
            cost,
            capacity: policy.capacity(),
        });
    }
    Ok(())
}

/// One decision of algorithm `M`, data in, data out. `cost == 0` peeks.
///
/// # Errors
///
/// [`CostError`] when `cost` exceeds the policy's capacity.
pub fn step_with<M: Meter>(
    state: Option<M::State>,
    now_us: u64,
    cost: u64,
    policy: &Policy,
) -> Result<Outcome<M::State>, CostError> {
    hold_with::<M>(state, now_us, cost, Holder::ANONYMOUS, policy)
}

/// [`step_with`], with what is admitted held by `holder`.
///
/// # Errors
///
/// [`CostError`] when `cost` exceeds the policy's capacity.
pub fn hold_with<M: Meter>(
    state: Option<M::State>,
    now_us: u64,
    cost: u64,
    holder: Holder,
    policy: &Policy,
) -> Result<Outcome<M::State>, CostError> {
    in_place::<M>(state, now_us, cost, policy, |state| {
        let evaluation = Evaluation::of::<M>(state, now_us, cost, policy);
        evaluation.conclude_held::<M>(state, now_us, cost, policy, true, holder)
    })
}

/// Gives back `cost` units of algorithm `M`, data in, data out: the state caught up to `now_us`,
/// then refunded, never past rest. The decision reports the state after the refund (allowed,
/// with no retry).
///
/// # Errors
///
/// [`CostError`] when `cost` exceeds the policy's capacity.
pub fn refund_with<M: Meter>(
    state: Option<M::State>,
    now_us: u64,
    cost: u64,
    policy: &Policy,
) -> Result<Outcome<M::State>, CostError> {
    in_place::<M>(state, now_us, cost, policy, |state| {
        refund_in_place::<M>(state, now_us, cost, policy)
    })
}

/// Charges `cost` units of algorithm `M` whatever is left, data in, data out: the state caught
/// up to `now_us`, then debited (into debt up to the policy's `max_debt`). The decision
/// reports the state after the charge: allowed (a charge is never refused), with its debt.
pub fn debit_with<M: Meter>(
    state: Option<M::State>,
    now_us: u64,
    cost: u64,
    policy: &Policy,
) -> Outcome<M::State> {
    operated::<M>(state, now_us, policy, |state| {
        debit_in_place::<M>(state, now_us, cost, policy)
    })
}

/// Catches `state` up to `now_us` and charges `cost` units whatever is left; returns the
/// decision after the charge and the state's time to rest in microseconds.
pub fn debit_in_place<M: Meter>(
    state: &mut M::State,
    now_us: u64,
    cost: u64,
    policy: &Policy,
) -> (Decision, u64) {
    M::catch_up(state, now_us, policy);
    M::debit(state, now_us, cost, policy);
    given_back::<M>(state, now_us, policy)
}

/// Runs `operate` on `state` (a key never seen is fresh) once `cost` is known to be admissible,
/// and keeps the state only while it is away from rest.
fn in_place<M: Meter>(
    state: Option<M::State>,
    now_us: u64,
    cost: u64,
    policy: &Policy,
    operate: impl FnOnce(&mut M::State) -> (Decision, u64),
) -> Result<Outcome<M::State>, CostError> {
    check_cost(policy, cost)?;
    Ok(operated::<M>(state, now_us, policy, operate))
}

/// Runs `operate` on `state` (a key never seen is fresh), and keeps the state only while it is
/// away from rest.
fn operated<M: Meter>(
    state: Option<M::State>,
    now_us: u64,
    policy: &Policy,
    operate: impl FnOnce(&mut M::State) -> (Decision, u64),
) -> Outcome<M::State> {
    let mut state = state.unwrap_or_else(|| M::fresh(now_us, policy));
    let (decision, ttl_us) = operate(&mut state);
    Outcome {
        decision,
        new_state: (ttl_us > 0).then_some(state),
        ttl_us,
    }
}

/// Catches `state` up to `now_us` and gives back `cost` units (at most the policy's capacity);
/// returns the decision after the refund and the state's time to rest in microseconds.
pub fn refund_in_place<M: Meter>(
    state: &mut M::State,
    now_us: u64,
    cost: u64,
    policy: &Policy,
) -> (Decision, u64) {
    M::catch_up(state, now_us, policy);
    M::refund(state, now_us, cost.min(policy.capacity()), policy);
    given_back::<M>(state, now_us, policy)
}

/// Catches `state` up to `now_us` and gives back every unit `holder` holds (nothing for a rate);
/// returns the decision after the release and the state's time to rest in microseconds.
pub fn release_in_place<M: Meter>(
    state: &mut M::State,
    now_us: u64,
    holder: Holder,
    policy: &Policy,
) -> (Decision, u64) {
    M::catch_up(state, now_us, policy);
    M::release(state, holder);
    given_back::<M>(state, now_us, policy)
}

/// The decision a state reports after units were given back or charged: allowed, with no
/// retry.
fn given_back<M: Meter>(state: &M::State, now_us: u64, policy: &Policy) -> (Decision, u64) {
    let reset_after_us = M::reset_after_us(state, now_us, policy);
    let decision = Decision {
        allowed: true,
        capacity: policy.capacity(),
        remaining: M::remaining(state, now_us, policy),
        reset_after: Duration::from_micros(reset_after_us),
        retry_after: None,
        debt: M::debt(state, now_us, policy),
    };
    (decision, reset_after_us)
}

/// The start of the window containing `now_us`: windows are aligned to multiples of the period
/// since the Unix epoch, so every instance agrees on them.
pub(crate) fn window_start(now_us: u64, period_us: u64) -> u64 {
    now_us - now_us % period_us
}

/// `ceil(a / b)` for `b > 0`.
pub(crate) fn div_ceil(a: u128, b: u128) -> u128 {
    a.div_ceil(b)
}

/// Narrows a value the policy bounds keep below 2^53.
pub(crate) fn narrow(v: u128) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}
