//! The one list of algorithms, and everything generated from it.
//!
//! [`for_each_algorithm!`](crate::for_each_algorithm) names every algorithm once, in
//! documentation order, as its [`Algorithm`] variant (which is also its [`Meter`] type's name)
//! and its module (which is also its configuration name and its Lua file's name). From it come
//! [`Algorithm`] itself, the stored [`State`] of any algorithm, [`step`] and
//! [`with_meter!`](crate::with_meter); the memory store's tables and the Redis script table are
//! generated from it too. A new algorithm is a new entry here, its own module and its own Lua
//! file.

use std::fmt;
use std::str::FromStr;

use super::{
    CostError, Holder, Meter, Outcome, debit_with, hold_with, refund_with, release_in_place,
};
use crate::error::ParseAlgorithmError;
use crate::policy::Policy;

/// Calls the macro in brackets with every algorithm: `[$($args)*]`, then for each algorithm its
/// documentation, its variant (and `Meter` type) name and its module (and configuration) name,
/// each entry ending in a comma.
///
/// ```
/// macro_rules! names {
///     ([] $($(#[$doc:meta])* $variant:ident $module:ident,)*) => {
///         [$(stringify!($module)),*]
///     };
/// }
/// let names = floodwall_core::for_each_algorithm!([names]);
/// assert_eq!(names[0], "fixed_window");
/// assert_eq!(names.len(), floodwall_core::Algorithm::ALL.len());
/// ```
#[macro_export]
macro_rules! for_each_algorithm {
    ([$($then:tt)+] $($args:tt)*) => {
        $($then)+ ! {
            [$($args)*]
            /// At most `limit` units per window; windows aligned to multiples of `period` since the
            /// Unix epoch.
            FixedWindow fixed_window,
            /// Exact: at most `limit` units in any interval of length `period` ending now.
            SlidingLog sliding_log,
            /// Weighted approximation: `prev × (1 − elapsed/period) + current ≤ limit`.
            SlidingWindow sliding_window,
            /// A bucket of `burst` tokens, refilled continuously at `limit / period`.
            TokenBucket token_bucket,
            /// Generic cell rate algorithm: the same admissions as `TokenBucket` with one timestamp
            /// of state.
            Gcra gcra,
            /// At most `limit` units in flight; a holder that never releases gives its units back
            /// after `period`.
            Concurrency concurrency,
        }
    };
}

/// Runs `$body` with the type alias `$meter` bound to the [`Meter`] of `$algorithm`, an
/// [`Algorithm`] value: one match arm per algorithm, each monomorphised.
///
/// ```
/// use floodwall_core::{Algorithm, Meter, with_meter};
///
/// let burst = with_meter!(Algorithm::Gcra, M => M::HAS_BURST);
/// assert!(burst);
/// ```
#[macro_export]
macro_rules! with_meter {
    ($algorithm:expr, $meter:ident => $body:expr) => {
        $crate::for_each_algorithm!([$crate::__with_meter_arms] $algorithm, $meter, $body)
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __with_meter_arms {
    ([$algorithm:expr, $meter:ident, $body:expr] $($(#[$doc:meta])* $variant:ident $module:ident,)*) => {
        match $algorithm {
            $($crate::Algorithm::$variant => {
                type $meter = $crate::algorithm::$variant;
                $body
            })*
        }
    };
}

macro_rules! algorithm_enum {
    ([] $($(#[$doc:meta])* $variant:ident $module:ident,)*) => {
        /// One of the rate-limiting algorithms.
        ///
        /// Deliberately exhaustive: every store implements every algorithm, so a new one must fail
        /// to compile wherever it is not yet handled.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Algorithm {
            $($(#[$doc])* $variant,)*
        }

        impl Algorithm {
            /// Every algorithm, in the order the documentation lists them.
            pub const ALL: [Algorithm; [$(Algorithm::$variant),*].len()] = [$(Algorithm::$variant),*];

            /// The configuration name: `fixed_window`, `sliding_log`, `sliding_window`,
            /// `token_bucket`, `gcra` or `concurrency`.
            #[inline]
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Algorithm::$variant => stringify!($module),)*
                }
            }
        }

        /// The stored state of any algorithm.
        #[derive(Debug, Clone, PartialEq, Eq)]
        #[allow(missing_docs)] // each variant holds its algorithm's state
        pub enum State {
            $($variant(super::$module::State),)*
        }

        /// Wraps and unwraps one algorithm's state in [`State`].
        trait Stored: Meter + Sized {
            fn wrap(state: Self::State) -> State;
            fn unwrap(state: State) -> Option<Self::State>;
        }

        $(impl Stored for super::$variant {
            fn wrap(state: Self::State) -> State {
                State::$variant(state)
            }
            fn unwrap(state: State) -> Option<Self::State> {
                match state {
                    State::$variant(state) => Some(state),
                    #[allow(unreachable_patterns)]
                    _ => None,
                }
            }
        })*
    };
}

for_each_algorithm!([algorithm_enum]);

impl Algorithm {
    /// Its position in [`Algorithm::ALL`].
    #[inline]
    pub const fn index(self) -> usize {
        // ALL lists the variants in declaration order, so the discriminant is the position.
        self as usize
    }

    /// Whether the algorithm has a burst distinct from its limit.
    #[inline]
    pub fn has_burst(self) -> bool {
        with_meter!(self, M => M::HAS_BURST)
    }

    /// The largest limit a policy of this algorithm accepts.
    #[inline]
    pub fn max_limit(self) -> u64 {
        with_meter!(self, M => M::MAX_LIMIT)
    }

    /// Whether a key may owe units past zero under it (see
    /// [`Policy::with_max_debt`](crate::Policy::with_max_debt)).
    #[inline]
    pub fn carries_debt(self) -> bool {
        with_meter!(self, M => M::CARRIES_DEBT)
    }

    /// Whether its arithmetic multiplies capacity by the period in microseconds, so that the
    /// product must stay below [`EXACT_ARITHMETIC_BOUND`](crate::EXACT_ARITHMETIC_BOUND).
    #[inline]
    pub fn multiplies_capacity_by_period(self) -> bool {
        with_meter!(self, M => M::MULTIPLIES_CAPACITY_BY_PERIOD)
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = ParseAlgorithmError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| ParseAlgorithmError {
                input: s.to_owned(),
            })
    }
}

/// One decision under `policy`'s algorithm, data in, data out. `cost == 0` peeks.
///
/// A `state` of another algorithm's shape is ignored (treated as a key never seen).
///
/// # Errors
///
/// [`CostError`] when `cost` exceeds the policy's capacity.
pub fn step(
    state: Option<State>,
    now_us: u64,
    cost: u64,
    policy: &Policy,
) -> Result<Outcome<State>, CostError> {
    hold(state, now_us, cost, Holder::ANONYMOUS, policy)
}

/// [`step`], with what is admitted held by `holder` until [`release`]d (for `concurrency`; a
/// rate spends its units whoever holds them).
///
/// # Errors
///
/// [`CostError`] when `cost` exceeds the policy's capacity.
pub fn hold(
    state: Option<State>,
    now_us: u64,
    cost: u64,
    holder: Holder,
    policy: &Policy,
) -> Result<Outcome<State>, CostError> {
    with_meter!(policy.algorithm(), M => stored::<M>(
        |state, now_us, cost, policy| hold_with::<M>(state, now_us, cost, holder, policy),
        state, now_us, cost, policy,
    ))
}

/// Gives back `cost` units under `policy`'s algorithm, data in, data out: the inverse of an
/// admission of `cost`, never past a full quota. A `state` of another algorithm's shape is
/// ignored (a key at rest has nothing to give back).
///
/// # Errors
///
/// [`CostError`] when `cost` exceeds the policy's capacity (no admission could have consumed it).
pub fn refund(
    state: Option<State>,
    now_us: u64,
    cost: u64,
    policy: &Policy,
) -> Result<Outcome<State>, CostError> {
    with_meter!(policy.algorithm(), M => stored::<M>(refund_with::<M>, state, now_us, cost, policy))
}

/// Charges `cost` units under `policy`'s algorithm whatever is left, data in, data out: past
/// zero the key owes the rest, up to the policy's `max_debt` (see
/// [`Policy::with_max_debt`](crate::Policy::with_max_debt)); an algorithm that carries no debt
/// charges only what is left. Never refused: the decision is allowed and reports the debt. A
/// `state` of another algorithm's shape is ignored.
///
/// ```
/// use std::time::Duration;
/// use floodwall_core::{Algorithm, Policy, algorithm};
///
/// // 1 000 tokens a minute, and a key may owe up to a minute's worth.
/// let tokens = Policy::new("tokens", Algorithm::FixedWindow, 1_000, Duration::from_secs(60))?
///     .with_max_debt(1_000)?;
/// let minute = 1_700_000_040_000_000; // a window boundary: a multiple of 60 s
/// let asked = algorithm::step(None, minute, 1, &tokens)?; // admitted on an estimate of 1
/// // The answer used 1 300 tokens: 1 299 more than the estimate, 300 past the limit.
/// let settled = algorithm::debit(asked.new_state, minute + 1, 1_299, &tokens);
/// assert_eq!((settled.decision.remaining, settled.decision.debt), (0, 300));
/// // The next minute starts with the 300 owed counted.
/// let next = algorithm::step(settled.new_state, minute + 60_000_000, 0, &tokens)?;
/// assert_eq!((next.decision.remaining, next.decision.debt), (700, 0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn debit(state: Option<State>, now_us: u64, cost: u64, policy: &Policy) -> Outcome<State> {
    with_meter!(policy.algorithm(), M => {
        let outcome = debit_with::<M>(state.and_then(M::unwrap), now_us, cost, policy);
        Outcome {
            decision: outcome.decision,
            new_state: outcome.new_state.map(M::wrap),
            ttl_us: outcome.ttl_us,
        }
    })
}

/// Gives back every unit `holder` holds under `policy`'s algorithm, data in, data out: nothing
/// for a rate (its units were spent). Returns the state to keep (`None` once nothing is held)
/// and its time to rest in microseconds. A `state` of another algorithm's shape is ignored.
pub fn release(
    state: Option<State>,
    now_us: u64,
    holder: Holder,
    policy: &Policy,
) -> (Option<State>, u64) {
    with_meter!(policy.algorithm(), M => {
        let Some(mut state) = state.and_then(M::unwrap) else {
            return (None, 0);
        };
        let (_, ttl_us) = release_in_place::<M>(&mut state, now_us, holder, policy);
        ((ttl_us > 0).then(|| M::wrap(state)), ttl_us)
    })
}

/// One algorithm's `operation` on a stored [`State`], unwrapped going in and wrapped coming out.
fn stored<M: Stored>(
    operation: impl FnOnce(Option<M::State>, u64, u64, &Policy) -> Result<Outcome<M::State>, CostError>,
    state: Option<State>,
    now_us: u64,
    cost: u64,
    policy: &Policy,
) -> Result<Outcome<State>, CostError> {
    let outcome = operation(state.and_then(M::unwrap), now_us, cost, policy)?;
    Ok(Outcome {
        decision: outcome.decision,
        new_state: outcome.new_state.map(M::wrap),
        ttl_us: outcome.ttl_us,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_algorithm_sits_at_its_index_and_round_trips_its_name() {
        for (position, algorithm) in Algorithm::ALL.into_iter().enumerate() {
            assert_eq!(algorithm.index(), position, "{algorithm}");
            assert_eq!(algorithm.as_str().parse::<Algorithm>(), Ok(algorithm));
        }
    }
}
