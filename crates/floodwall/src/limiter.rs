//! The facade users call: a store plus what to do when it fails.

use std::slice;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use floodwall_core::{Decision, OnError, Policy};
use smallvec::SmallVec;

mod builder;
mod callers;
mod controlled;

pub use builder::LimiterBuilder;
pub use callers::{AbandonedCounts, Caller, Front};

use crate::controls::Controls;
use crate::error::{Error, StoreError, StoreErrorKind};
use crate::lease::{Lease, new_holder};
use crate::memory::MemoryStore;
use crate::offenders::{Offender, OffenderTable};
use crate::storage::Storage;
use crate::store::Store;
use crate::store::{Answer, Source};
use crate::store::{Charge, Check};
use crate::trace::{self, StoreSpan};
use crate::verdict::Verdict;

/// Decides requests against a [`Storage`], applying each policy's `on_error` when the store
/// fails.
///
/// Clones share the store, the fallback and the counters.
///
/// Store failures are answered per the strictest `on_error` among the policies checked (each
/// policy's own, else the limiter's): `deny` returns [`Error::StoreUnavailable`], `local`
/// decides with an in-process [`MemoryStore`] holding the same policies, `allow` admits without
/// counting. Every such answer is counted in [`LimiterStats`] and marked in [`Verdict::source`].
#[derive(Debug, Clone)]
pub struct Limiter {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    store: Storage,
    on_error: OnError,
    /// The fallback for `on_error = "local"`, built on first use.
    local: OnceLock<MemoryStore>,
    local_share: u64,
    fail_open: AtomicU64,
    fail_closed: AtomicU64,
    local_decisions: AtomicU64,
    /// Store failures answered by `on_error`, by [`StoreErrorKind`] (indexed as `ALL`).
    store_errors: [AtomicU64; StoreErrorKind::ALL.len()],
    offenders: Option<OffenderTable>,
    controls: Controls,
    /// Calls whose caller left before the answer, by front end.
    abandoned: callers::Abandoned,
}
/// How often a [`Limiter`] answered without its store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct LimiterStats {
    /// Requests allowed uncounted because the store failed (`on_error = "allow"`).
    pub fail_open: u64,
    /// Requests refused because the store failed (`on_error = "deny"`).
    pub fail_closed: u64,
    /// Requests decided by the in-process fallback (`on_error = "local"`).
    pub local: u64,
    /// The store failures behind those answers, by kind: each failure is answered exactly once,
    /// so their sum is `fail_open + fail_closed + local`.
    pub store_errors: StoreErrorCounts,
    /// Calls whose caller left before its answer, by the front end that took them (see
    /// [`Limiter::caller`]).
    pub abandoned: AbandonedCounts,
}

/// How many store failures a [`Limiter`] answered with its `on_error`, by [`StoreErrorKind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreErrorCounts([u64; StoreErrorKind::ALL.len()]);

impl StoreErrorCounts {
    /// Failures of `kind` so far.
    pub fn get(&self, kind: StoreErrorKind) -> u64 {
        self.0[kind.index()]
    }

    /// Every kind with its count, zeros included, in [`StoreErrorKind::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (StoreErrorKind, u64)> + '_ {
        StoreErrorKind::ALL.into_iter().zip(self.0)
    }
}

fn severity(on_error: OnError) -> u8 {
    match on_error {
        OnError::Allow => 0,
        OnError::Local => 1,
        OnError::Deny => 2,
    }
}

impl Limiter {
    /// The store.
    pub fn store(&self) -> &Storage {
        &self.shared.store
    }

    /// Counters of answers given without the store.
    pub fn stats(&self) -> LimiterStats {
        LimiterStats {
            fail_open: self.shared.fail_open.load(Ordering::Relaxed),
            fail_closed: self.shared.fail_closed.load(Ordering::Relaxed),
            local: self.shared.local_decisions.load(Ordering::Relaxed),
            store_errors: StoreErrorCounts(
                self.shared
                    .store_errors
                    .each_ref()
                    .map(|count| count.load(Ordering::Relaxed)),
            ),
            abandoned: self.shared.abandoned.counts(),
        }
    }

    /// Decides a request of `cost` units for `key` under `policy`, consuming if admitted.
    ///
    /// # Errors
    ///
    /// [`Error::Check`] when the policy can never admit `cost`; [`Error::StoreUnavailable`]
    /// when the store failed and the policy fails closed.
    pub async fn check(
        &self,
        policy: &Policy,
        key: impl AsRef<[u8]>,
        cost: u64,
    ) -> Result<Verdict, Error> {
        self.decide(&Check::new(slice::from_ref(policy), key.as_ref(), cost)?)
            .await
    }

    /// The `n` keys `policy` denied most over the last five minutes, most first; empty unless
    /// the limiter was built with [`LimiterBuilder::track_offenders`]. Each count is at least
    /// the true number of denials and at most its `error` above it; a key denied more than a
    /// `1 / capacity` share of a minute's denials is never missing.
    pub fn top_offenders(&self, policy: &str, n: usize) -> Vec<Offender> {
        match &self.shared.offenders {
            Some(table) => table.top(policy, n),
            None => Vec::new(),
        }
    }

    /// The window [`Limiter::top_offenders`] reports over, in seconds.
    pub const OFFENDER_WINDOW_SECONDS: u64 = OffenderTable::WINDOW_SECONDS;

    async fn verdict(&self, check: &Check<'_>) -> Result<Verdict, Error> {
        let answer = self.screened(check).await?;
        if let Some(table) = &self.shared.offenders {
            for ((policy, key), decision) in check.pairs().iter().zip(&answer.decisions) {
                // A peek denies nothing.
                if !decision.allowed && check.cost() > 0 {
                    table.record(policy, key);
                }
            }
        }
        Ok(Verdict::of(check, answer))
    }

    /// Reports whether one more unit would be admitted for `key`, consuming nothing.
    ///
    /// # Errors
    ///
    /// As [`Limiter::check`].
    pub async fn peek(&self, policy: &Policy, key: impl AsRef<[u8]>) -> Result<Verdict, Error> {
        self.check(policy, key, 0).await
    }

    /// Gives back `cost` units to `key` under `policy`, as if an admission of them had not
    /// happened, never past a full quota: for a request that was admitted but must not count
    /// (its response failed, a gateway reported negative hits). Returns the state afterwards.
    ///
    /// The units go back to the key's current quota, which is what the admission took only
    /// while that admission still counts: before its decision's `reset_after` has passed. A
    /// later refund is a reward: a `fixed_window` refunded after its window ended gives the unit
    /// to the next window, which can then admit `limit + cost`. Refund promptly.
    ///
    /// # Errors
    ///
    /// [`Error::Check`] when the policy could never have admitted `cost`;
    /// [`Error::StoreUnavailable`] when the store failed (whatever `on_error` says: a refund
    /// that did not happen is never reported as done).
    pub async fn refund(
        &self,
        policy: &Policy,
        key: impl AsRef<[u8]>,
        cost: u64,
    ) -> Result<Verdict, Error> {
        self.give_back(&Check::new(slice::from_ref(policy), key.as_ref(), cost)?)
            .await
    }

    /// Gives back each pair's cost of `check`, as [`Limiter::refund`] does for one: the check
    /// verb of refunds. A refund is never answered by `on_error`: one that did not happen is an
    /// error.
    ///
    /// # Errors
    ///
    /// [`Error::StoreUnavailable`] when the store failed.
    pub async fn give_back(&self, check: &Check<'_>) -> Result<Verdict, Error> {
        let answer = self
            .shared
            .store
            .refund(check)
            .await
            .map_err(|source| Error::StoreUnavailable { source })?;
        Ok(Verdict::of(check, answer))
    }

    /// Charges `cost` units to `key` under `policy` whatever is left: a cost known only after
    /// the answer (the tokens a response used, the bytes it sent). Past zero the key owes the
    /// rest, up to the policy's [`max_debt`](Policy::with_max_debt), and is denied until refill
    /// or the next window has paid it; the verdict says what it owes
    /// ([`Decision::debt`](crate::Decision::debt)). A charge is never denied, and never answered
    /// by `on_error`: one that did not happen is an error.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use floodwall::{Algorithm, Limiter, MemoryStore, Policy};
    ///
    /// // 1 000 tokens a minute per organisation, and a minute's worth of debt.
    /// let tokens = Policy::new("tokens", Algorithm::TokenBucket, 1_000, Duration::from_secs(60))?
    ///     .with_max_debt(1_000)?;
    /// let limiter = Limiter::new(MemoryStore::new());
    /// assert!(limiter.check(&tokens, "org-1", 1).await?.allowed());
    /// // The answer used 1 500 tokens: 1 499 more than the request was admitted for.
    /// let charged = limiter.debit(&tokens, "org-1", 1_499).await?;
    /// assert_eq!(charged.decisions()[0].debt, 500);
    /// assert!(!limiter.check(&tokens, "org-1", 1).await?.allowed());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Check`] when a policy is named twice; [`Error::StoreUnavailable`] when the
    /// store failed.
    pub async fn debit(
        &self,
        policy: &Policy,
        key: impl AsRef<[u8]>,
        cost: u64,
    ) -> Result<Verdict, Error> {
        self.charge(&Charge::new(slice::from_ref(policy), key.as_ref(), cost)?)
            .await
    }

    /// Charges each pair of `charge`, as [`Limiter::debit`] does for one.
    ///
    /// # Errors
    ///
    /// [`Error::StoreUnavailable`] when the store failed.
    pub async fn charge(&self, charge: &Charge<'_>) -> Result<Verdict, Error> {
        let answer = self
            .shared
            .store
            .debit(charge)
            .await
            .map_err(|source| Error::StoreUnavailable { source })?;
        Ok(Verdict::of(charge.as_check(), answer))
    }

    /// Forgets `key`'s state under `policy`: its next request starts with a full quota.
    ///
    /// # Errors
    ///
    /// [`Error::StoreUnavailable`] when the store failed (whatever `on_error` says: a reset
    /// that did not happen is never reported as done).
    pub async fn reset(&self, policy: &Policy, key: impl AsRef<[u8]>) -> Result<(), Error> {
        let check = Check::new(slice::from_ref(policy), key.as_ref(), 0)?;
        if let Some(local) = self.shared.local.get() {
            local.reset_sync(&check);
        }
        self.shared
            .store
            .reset(&check)
            .await
            .map_err(|source| Error::StoreUnavailable { source })
    }

    /// Waits until a request of `cost` is admitted under `policy`, or until `max_wait` has
    /// passed; returns the last verdict either way. For workers that throttle their own outgoing
    /// calls to a shared quota.
    ///
    /// Each denial's `retry_after` sets the next attempt, so the limiter sleeps rather than
    /// polls; a verdict whose wait would overrun `max_wait` is returned at once, denied.
    ///
    /// # Errors
    ///
    /// As [`Limiter::check`].
    pub async fn acquire(
        &self,
        policy: &Policy,
        key: impl AsRef<[u8]>,
        cost: u64,
        max_wait: Duration,
    ) -> Result<Verdict, Error> {
        let check = Check::new(slice::from_ref(policy), key.as_ref(), cost)?;
        self.wait(&check, max_wait).await
    }

    /// Waits until `check` is admitted, or until `max_wait` has passed, as
    /// [`Limiter::acquire`] does for one policy: the check verb of waits.
    ///
    /// # Errors
    ///
    /// As [`Limiter::decide`].
    pub async fn wait(&self, check: &Check<'_>, max_wait: Duration) -> Result<Verdict, Error> {
        let deadline = tokio::time::Instant::now() + max_wait;
        loop {
            let verdict = Verdict::of(check, self.screened(check).await?);
            // Waiting never admits a deny-listed key.
            if verdict.allowed() || verdict.source() == Source::DenyList {
                return Ok(verdict);
            }
            let wait = verdict
                .retry_after()
                .unwrap_or_default()
                .max(Duration::from_micros(1));
            if tokio::time::Instant::now() + wait > deadline {
                return Ok(verdict);
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Admits a request of one unit for `key` under `policy` and holds it until the returned
    /// [`Lease`] is dropped or released: the way to use a `concurrency` policy ("at most 5
    /// exports in flight per user"). A denied request's lease holds nothing.
    ///
    /// # Errors
    ///
    /// As [`Limiter::check`].
    pub async fn lease(&self, policy: &Policy, key: impl AsRef<[u8]>) -> Result<Lease, Error> {
        self.hold(Check::new(slice::from_ref(policy), key.as_ref(), 1)?)
            .await
    }

    /// Decides `check`: screened against the blocks and lists, decided by the store (or per
    /// `on_error` when it fails), the denials counted as offenders. The verb every check of the
    /// limiter is a shape of: [`Check::new`] for several policies on one key, [`Check::each`]
    /// for a key per policy (per user *and* global), [`Check::weighted`] for a cost per pair.
    /// It is admitted only if every enforced policy admits its pair, and then each admitting
    /// pair consumes.
    ///
    /// The memory store and a single Redis node decide a check atomically. On a Redis cluster,
    /// pairs whose keys share a slot are decided atomically and slots one after another; when a
    /// later slot denies, what the earlier ones consumed is refunded, so a request counts
    /// everywhere or nowhere. A crash between a consumption and its refund can only leave a pair
    /// over-counted, never admit more than a policy allows.
    ///
    /// # Errors
    ///
    /// [`Error::StoreUnavailable`] when the store failed and a policy fails closed.
    pub async fn decide(&self, check: &Check<'_>) -> Result<Verdict, Error> {
        self.verdict(check).await
    }

    /// [`Limiter::decide`], holding what `check`'s `concurrency` pairs admit until the returned
    /// [`Lease`] is dropped or released (the holder is drawn here: any the check carries is
    /// replaced).
    ///
    /// # Errors
    ///
    /// As [`Limiter::decide`].
    pub async fn hold(&self, check: Check<'_>) -> Result<Lease, Error> {
        self.hold_as(&check.held_by(new_holder())).await
    }

    /// [`Limiter::hold`] for the holder `check` already carries (drawn by the caller).
    pub(crate) async fn hold_as(&self, check: &Check<'_>) -> Result<Lease, Error> {
        let verdict = self.verdict(check).await?;
        Ok(Lease::new(self, check, verdict))
    }

    /// Gives back what `check`'s holder ([`Check::held_by`]) holds under its `concurrency`
    /// pairs, a lease admitted by [`Limiter::hold`] with the same pairs and costs on any
    /// instance sharing the store (its [`LeaseGuard::holder`](crate::LeaseGuard::holder)): for
    /// a lease whose guard was handed to another process, an HTTP client say. Releasing what is
    /// not held does nothing.
    ///
    /// # Errors
    ///
    /// [`Error::StoreUnavailable`] when the store could not be reached (the units then go back
    /// when they time out).
    pub async fn release(&self, check: &Check<'_>) -> Result<(), Error> {
        // Held by the fallback if the store was down when it was admitted.
        self.release_locally(check);
        self.shared
            .store
            .release(check)
            .await
            .map_err(|source| Error::StoreUnavailable { source })
    }

    /// Gives back what `check`'s holder holds in the in-process fallback.
    pub(crate) fn release_locally(&self, check: &Check<'_>) {
        if let Some(local) = self.shared.local.get() {
            local.release_sync(check);
        }
    }

    /// Asks the store, and answers its failure per `on_error`.
    async fn ask_store(&self, check: &Check<'_>) -> Result<Answer, Error> {
        let span = StoreSpan::start();
        let answered = trace::within(span.span(), self.shared.store.decide(check)).await;
        span.finish(answered.as_ref().map(|_| ()));
        match answered {
            Ok(answer) => Ok(answer),
            Err(error) => self.fall_back(check, error),
        }
    }

    fn fall_back(&self, check: &Check<'_>, error: StoreError) -> Result<Answer, Error> {
        let kind = self.shared.store.counted_kind(&error);
        self.shared.store_errors[kind.index()].fetch_add(1, Ordering::Relaxed);
        let on_error = check
            .policies()
            .map(|p| p.on_error().unwrap_or(self.shared.on_error))
            .max_by_key(|&o| severity(o))
            .unwrap_or(self.shared.on_error);
        match on_error {
            OnError::Deny => {
                self.shared.fail_closed.fetch_add(1, Ordering::Relaxed);
                Err(Error::StoreUnavailable { source: error })
            }
            OnError::Local => match self.decide_locally(check) {
                Some(mut answer) => {
                    self.shared.local_decisions.fetch_add(1, Ordering::Relaxed);
                    answer.source = Source::Local;
                    Ok(answer)
                }
                // The fallback is bounded too (and a cost above an instance's share can never
                // pass it); beyond it, fail open, counted, rather than refuse all.
                None => Ok(self.fail_open(check)),
            },
            OnError::Allow => Ok(self.fail_open(check)),
        }
    }

    /// Decides `check` in process, each policy's limit divided by `local_share`.
    fn decide_locally(&self, check: &Check<'_>) -> Option<Answer> {
        let local = self.shared.local.get_or_init(|| {
            MemoryStore::builder()
                .max_keys(LimiterBuilder::DEFAULT_LOCAL_MAX_KEYS)
                .clock(self.shared.store.clock())
                .build()
        });
        let shares: SmallVec<[Policy; 2]> = check
            .policies()
            .map(|p| p.share(self.shared.local_share))
            .collect();
        let pairs = shares
            .iter()
            .zip(check.pairs())
            .enumerate()
            .map(|(i, (p, (_, k)))| (p, *k, check.cost_of(i)));
        let shared_check = Check::weighted(pairs).ok()?.held_by(check.holder());
        Some(local.decide_sync(&shared_check))
    }

    /// An uncounted admission: each decision reports the policy's capacity less this cost.
    fn fail_open(&self, check: &Check<'_>) -> Answer {
        self.shared.fail_open.fetch_add(1, Ordering::Relaxed);
        let decisions = check
            .policies()
            .enumerate()
            .map(|(i, p)| Decision {
                allowed: true,
                capacity: p.capacity(),
                remaining: p.capacity().saturating_sub(check.cost_of(i)),
                reset_after: Duration::ZERO,
                retry_after: None,
                debt: 0,
            })
            .collect();
        Answer {
            allowed: true,
            decisions,
            source: Source::FailOpen,
        }
    }
}
