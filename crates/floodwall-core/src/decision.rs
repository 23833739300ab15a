//! The answer to "may this client spend `cost` units now?".

use std::time::Duration;

/// One policy's answer for one request.
///
/// Being limited is a value, not an error: `allowed == false` comes with an exact `retry_after`.
///
/// ```
/// use std::time::Duration;
/// use floodwall_core::{Algorithm, Policy, algorithm};
///
/// let policy = Policy::new("demo", Algorithm::FixedWindow, 2, Duration::from_secs(10))?;
/// let now_us = 1_700_000_000_000_000; // a window boundary: a multiple of 10 s
/// let first = algorithm::step(None, now_us, 1, &policy)?;
/// assert!(first.decision.allowed);
/// assert_eq!(first.decision.remaining, 1);
/// assert_eq!(first.decision.reset_after, Duration::from_secs(10));
///
/// let second = algorithm::step(first.new_state, now_us, 2, &policy)?;
/// assert!(!second.decision.allowed);
/// assert_eq!(second.decision.retry_after, Some(Duration::from_secs(10)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decision {
    /// Whether the request may go on. A denied request consumed nothing.
    pub allowed: bool,
    /// The policy's capacity: the most units one request can ever be admitted for (its burst
    /// for the buckets, else its limit). Written as `limit` in JSON bodies and `q` in headers.
    pub capacity: u64,
    /// Units that could still be admitted right now, after this request; never negative.
    pub remaining: u64,
    /// Time until the key is back to its full quota (zero when it already is).
    pub reset_after: Duration,
    /// When denied: the earliest time after which the same request would be allowed if no one
    /// else consumed meanwhile. Waiting exactly this long is enough; waiting 1 µs less is not.
    /// `None` when allowed.
    pub retry_after: Option<Duration>,
    /// Units the key owes past zero (a debit charged more than was left); `remaining` is 0
    /// while it owes any, and the retry waits until the debt is paid and the request fits.
    pub debt: u64,
}
