//! Callers who walk away: the front ends that ask the limiter, a count of the calls whose
//! caller left before its answer, answers bounded by the caller's own deadline, and the wait
//! for what callers who left still have running.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::Limiter;
use crate::error::{Error, StoreError};
use crate::store::Check;
use crate::verdict::Verdict;

/// A front end that asks the limiter on behalf of callers: what `floodwall_abandoned_total`
/// is labelled by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Front {
    /// A limited HTTP route (the tower layer, the service's routes).
    Http,
    /// The JSON check API (`POST /v1/check`).
    Check,
    /// The lease API (`POST /v1/leases`, `DELETE /v1/leases/{id}`).
    Leases,
    /// Envoy's RateLimitService.
    Rls,
    /// Envoy's RateLimitQuotaService: a usage report whose stream ended before its answer.
    Rlqs,
    /// The Python package.
    Python,
}

impl Front {
    /// Every front, in declaration order.
    pub const ALL: [Front; 6] = [
        Front::Http,
        Front::Check,
        Front::Leases,
        Front::Rls,
        Front::Rlqs,
        Front::Python,
    ];

    /// The front in lower case: `http`, `check`, `leases`, `rls`, `rlqs`, `python`.
    pub fn as_str(self) -> &'static str {
        match self {
            Front::Http => "http",
            Front::Check => "check",
            Front::Leases => "leases",
            Front::Rls => "rls",
            Front::Rlqs => "rlqs",
            Front::Python => "python",
        }
    }
}

/// Calls whose caller left before its answer, by [`Front`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AbandonedCounts(pub(super) [u64; Front::ALL.len()]);

impl AbandonedCounts {
    /// Calls abandoned at `front` so far.
    pub fn get(&self, front: Front) -> u64 {
        self.0[front as usize]
    }

    /// Every front with its count, zeros included, in [`Front::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (Front, u64)> + '_ {
        Front::ALL.into_iter().zip(self.0)
    }
}

/// The counters behind [`AbandonedCounts`].
#[derive(Debug, Default)]
pub(super) struct Abandoned([AtomicU64; Front::ALL.len()]);

impl Abandoned {
    pub(super) fn counts(&self) -> AbandonedCounts {
        AbandonedCounts(self.0.each_ref().map(|count| count.load(Ordering::Relaxed)))
    }
}

/// One call of a front end, from its caller's request to its answer. Dropped before
/// [`Caller::answered`], its caller is counted as gone (`floodwall_abandoned_total{front}`).
#[must_use = "a caller dropped without `answered` counts as abandoned"]
#[derive(Debug)]
pub struct Caller {
    limiter: Limiter,
    front: Front,
    answered: bool,
}

impl Caller {
    /// The caller got its answer (or the call ended in a way that is not its leaving).
    pub fn answered(mut self) {
        self.answered = true;
    }
}

impl Drop for Caller {
    fn drop(&mut self) {
        if !self.answered {
            self.limiter.shared.abandoned.0[self.front as usize].fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Limiter {
    /// A call of `front` begins: keep the returned [`Caller`] until its answer is given, so
    /// that a caller who leaves first (its future dropped at any `.await`) is counted.
    pub fn caller(&self, front: Front) -> Caller {
        Caller {
            limiter: self.clone(),
            front,
            answered: false,
        }
    }

    /// [`Limiter::decide`], answered by `deadline` whatever the store does: a store that has
    /// not answered by then has failed this call, which is answered per `on_error` (and counted
    /// as a timeout). The store call itself still runs to its end: its breaker hears how it
    /// went, and what it took for this caller is given back.
    ///
    /// # Errors
    ///
    /// As [`Limiter::decide`].
    pub async fn decide_by(&self, check: &Check<'_>, deadline: Instant) -> Result<Verdict, Error> {
        let started = Instant::now();
        match tokio::time::timeout_at(deadline, self.verdict(check)).await {
            Ok(verdict) => verdict,
            Err(_) => {
                let after = deadline.saturating_duration_since(started);
                let answer = self.fall_back(check, StoreError::Timeout { after })?;
                Ok(Verdict::of(check, answer))
            }
        }
    }

    /// Waits until what callers who left still have running has ended (releases of dropped
    /// leases, give-backs of calls whose caller was gone), or until `within` has passed;
    /// returns whether it all ended. A stopping service calls it last, so that the units its
    /// unfinished requests held go back before it exits.
    #[cfg_attr(not(feature = "redis"), allow(unused_variables))]
    pub async fn quiesce(&self, within: Duration) -> bool {
        match self.store() {
            crate::Storage::Memory(_) => true,
            #[cfg(feature = "redis")]
            crate::Storage::Redis(store) => store.quiesce(within).await,
            crate::Storage::Plugged(store) => store.quiesce(within).await,
        }
    }
}
