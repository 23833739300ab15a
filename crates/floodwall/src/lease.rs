//! Requests in flight: a [`Lease`] holds units of `concurrency` policies until it is released.

use std::fmt;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::time::Duration;

use floodwall_core::{Clock as _, Holder};

use crate::error::Error;
use crate::limiter::Limiter;
use crate::store::Source;
use crate::store::Store;
use crate::store::{Check, OwnedCheck};
use crate::verdict::Verdict;

/// The units one admitted request holds under the `concurrency` policies it was checked against,
/// given back when the `Lease` is dropped or [`released`](Lease::release), or by the store when
/// the policy's `period` (the lease timeout) passes first.
///
/// A lease of a denied request, or of one admitted without counting (the store failed and
/// `on_error = "allow"`), holds nothing. Rate policies checked with it spent their units when it
/// was admitted; a release does not give those back.
///
/// Dropping a lease releases it: at once in memory, and on a Redis store by a task spawned on
/// the current tokio runtime (without one, its units time out instead). Call
/// [`Lease::release`] to wait for the release and see whether it reached the store.
#[must_use = "a lease is released when dropped: bind it for as long as the request runs"]
pub struct Lease {
    verdict: Verdict,
    held: Option<LeaseGuard>,
}

/// The units a [`Lease`] holds, apart from its verdict (which borrows the policies): it owns
/// what a release needs, so it can travel with a response body. Released on drop, as a lease.
#[must_use = "a guard is released when dropped: keep it for as long as the request runs"]
pub struct LeaseGuard(Option<Held>);

/// What a release needs, owned: the limiter, and the check (its pairs, costs and holder).
struct Held {
    limiter: Limiter,
    /// Every pair, rate ones too: a store names held units by their pair's place in the check.
    /// A release leaves the rate pairs alone.
    check: OwnedCheck,
    /// Held by the in-process fallback (`on_error = "local"`), not the store.
    local: bool,
}

impl Lease {
    /// A lease of `check` that the limiter answered with `verdict`: it holds units only if
    /// the request was admitted and counted.
    pub(crate) fn new(limiter: &Limiter, check: &Check<'_>, verdict: Verdict) -> Self {
        let counted = matches!(verdict.source(), Source::Store | Source::Local);
        let held = (verdict.allowed() && counted && check.holds()).then(|| Held {
            limiter: limiter.clone(),
            check: OwnedCheck::of(check),
            local: verdict.source() == Source::Local,
        });
        Lease {
            verdict,
            held: held.map(|held| LeaseGuard(Some(held))),
        }
    }

    /// The verdict, and the guard of what is held (`None` when nothing is): for a caller that
    /// keeps the units beyond the verdict's borrow, in a response body say.
    pub fn split(self) -> (Verdict, Option<LeaseGuard>) {
        (self.verdict, self.held)
    }

    /// Whether the request may proceed.
    pub fn allowed(&self) -> bool {
        self.verdict.allowed()
    }

    /// The decisions, as [`Limiter::check`] would report them.
    pub fn verdict(&self) -> &Verdict {
        &self.verdict
    }

    /// Who holds the units, `None` when nothing is held: see [`LeaseGuard::holder`].
    pub fn holder(&self) -> Option<Holder> {
        self.held.as_ref()?.holder()
    }

    /// Whether the lease holds units that a release would give back.
    pub fn holds(&self) -> bool {
        self.held.is_some()
    }

    /// How long the units are held if never released: the shortest `period` among the held
    /// policies. `None` when nothing is held.
    pub fn timeout(&self) -> Option<Duration> {
        self.held.as_ref()?.timeout()
    }

    /// Gives the units back now and waits until the store has them.
    ///
    /// # Errors
    ///
    /// [`Error::StoreUnavailable`] when the store could not be reached: the units then go back
    /// when they time out.
    pub async fn release(mut self) -> Result<(), Error> {
        match self.held.take() {
            Some(guard) => guard.release().await,
            None => Ok(()),
        }
    }
}

impl LeaseGuard {
    /// Who holds the units: with the policies, key and cost of the lease, what
    /// [`Limiter::release`] needs to give them back from anywhere.
    pub fn holder(&self) -> Option<Holder> {
        self.0.as_ref().map(|held| held.check.holder())
    }

    /// Lets the units go without releasing them: they stay held until someone calls
    /// [`Limiter::release`] with this guard's holder, or until they time out.
    pub fn keep(mut self) {
        self.0 = None;
    }

    /// How long the units are held if never released: the shortest `period` among the held
    /// policies.
    pub fn timeout(&self) -> Option<Duration> {
        self.0.as_ref()?.check.check().hold_timeout()
    }

    /// Gives the units back now and waits until the store has them.
    ///
    /// # Errors
    ///
    /// As [`Lease::release`].
    pub async fn release(mut self) -> Result<(), Error> {
        match self.0.take() {
            Some(held) => held.release().await,
            None => Ok(()),
        }
    }
}

impl Held {
    /// Releases `check` where that needs no I/O (the fallback, a memory store); returns
    /// whether it did.
    fn released_in_place(&self, check: &Check<'_>) -> bool {
        if self.local {
            self.limiter.release_locally(check);
            return true;
        }
        self.limiter.store().release_in_place(check)
    }

    async fn release(self) -> Result<(), Error> {
        let check = self.check.check();
        if self.released_in_place(&check) {
            return Ok(());
        }
        self.limiter
            .store()
            .release(&check)
            .await
            .map_err(|source| Error::StoreUnavailable { source })
    }

    /// Releases without waiting: in place when the store answers without I/O, otherwise on a
    /// task of the store's (which a stopping service waits for: [`Limiter::quiesce`]).
    fn release_on_drop(self) {
        if self.released_in_place(&self.check.check()) {
            return;
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        // Nothing waits for this answer: a release that fails leaves the units to time out.
        match self.limiter.store().clone() {
            #[cfg(feature = "redis")]
            crate::Storage::Redis(store) => store.spawn_tracked(async move {
                let _ = self.release().await;
            }),
            crate::Storage::Plugged(store) => store.spawn_tracked(async move {
                let _ = self.release().await;
            }),
            crate::Storage::Memory(_) => {}
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if let Some(held) = self.0.take() {
            held.release_on_drop();
        }
    }
}

impl fmt::Debug for LeaseGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseGuard")
            .field("holder", &self.holder())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("allowed", &self.allowed())
            .field("holds", &self.holds())
            .field("guard", &self.held)
            .finish_non_exhaustive()
    }
}

/// A holder of 128 random bits from the operating system: no other lease will have it, nobody
/// can guess it, and it says nothing of how many leases came before. Never
/// [`Holder::ANONYMOUS`].
pub(crate) fn new_holder() -> Holder {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // The system's source failed (it does not, on the systems we run on): keyed hashes of
        // the time, from a key the process drew at start, are still unguessable from outside.
        let secret = RandomState::new();
        let now_us = floodwall_core::SystemClock::new().now_us();
        let mut high = secret.build_hasher();
        high.write_u64(now_us);
        let mut low = secret.build_hasher();
        low.write_u64(high.finish());
        bytes[..8].copy_from_slice(&high.finish().to_le_bytes());
        bytes[8..].copy_from_slice(&low.finish().to_le_bytes());
    }
    Holder(u128::from_le_bytes(bytes).max(1))
}
