//! The facade users call: a store plus what to do when it fails.

use std::slice;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use floodwall_core::{Decision, OnError, Policy};
use smallvec::SmallVec;

use crate::error::{Error, StoreError, StoreErrorKind};
use crate::memory::MemoryStore;
use crate::store::Store;
use crate::verdict::{Source, Verdict};

/// The default bound on keys tracked by the local fallback used with `on_error = "local"`.
pub const DEFAULT_LOCAL_MAX_KEYS: usize = 100_000;

/// Decides requests against a [`Store`], applying each policy's `on_error` when the store fails.
///
/// Clones share the store, the fallback and the counters.
///
/// Store failures are answered per the strictest `on_error` among the policies checked (each
/// policy's own, else the limiter's): `deny` returns [`Error::StoreUnavailable`], `local`
/// decides with an in-process [`MemoryStore`] holding the same policies, `allow` admits without
/// counting. Every such answer is counted in [`LimiterStats`] and marked in [`Verdict::source`].
#[derive(Debug)]
pub struct Limiter<S = MemoryStore> {
    shared: Arc<Shared<S>>,
}

impl<S> Clone for Limiter<S> {
    fn clone(&self) -> Self {
        Limiter {
            shared: Arc::clone(&self.shared),
        }
    }
}

#[derive(Debug)]
struct Shared<S> {
    store: S,
    on_error: OnError,
    /// The fallback for `on_error = "local"`, built on first use.
    local: OnceLock<MemoryStore>,
    local_share: u64,
    fail_open: AtomicU64,
    fail_closed: AtomicU64,
    local_decisions: AtomicU64,
    /// Store failures answered by `on_error`, by [`StoreErrorKind`] (indexed as `ALL`).
    store_errors: [AtomicU64; StoreErrorKind::ALL.len()],
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

/// Builds a [`Limiter`].
#[derive(Debug)]
pub struct LimiterBuilder<S> {
    store: S,
    on_error: OnError,
    local: Option<MemoryStore>,
    local_share: u64,
}

impl<S: Store> LimiterBuilder<S> {
    /// With `on_error = "local"`, how many instances share the limit: each instance's fallback
    /// admits `limit / instances` (rounded up), so that the fleet as a whole stays near the shared
    /// limit during an outage (default 1: each instance admits the whole limit).
    #[must_use]
    pub fn local_share(mut self, instances: u64) -> Self {
        self.local_share = instances.max(1);
        self
    }

    /// The answer to store failures for policies that do not set their own (default `allow`).
    #[must_use]
    pub fn on_error(mut self, on_error: OnError) -> Self {
        self.on_error = on_error;
        self
    }

    /// The in-process store used with `on_error = "local"` (default: a [`MemoryStore`] of
    /// [`DEFAULT_LOCAL_MAX_KEYS`] keys on the system clock).
    #[must_use]
    pub fn local_store(mut self, local: MemoryStore) -> Self {
        self.local = Some(local);
        self
    }

    /// Builds the limiter.
    pub fn build(self) -> Limiter<S> {
        let local = OnceLock::new();
        if let Some(store) = self.local {
            let _ = local.set(store);
        }
        Limiter {
            shared: Arc::new(Shared {
                store: self.store,
                on_error: self.on_error,
                local,
                local_share: self.local_share,
                fail_open: AtomicU64::new(0),
                fail_closed: AtomicU64::new(0),
                local_decisions: AtomicU64::new(0),
                store_errors: Default::default(),
            }),
        }
    }
}

fn severity(on_error: OnError) -> u8 {
    match on_error {
        OnError::Allow => 0,
        OnError::Local => 1,
        OnError::Deny => 2,
    }
}

impl<S: Store> Limiter<S> {
    /// A limiter on `store` that fails open.
    pub fn new(store: S) -> Self {
        Self::builder(store).build()
    }

    /// A builder for the failure policy and the local fallback.
    pub fn builder(store: S) -> LimiterBuilder<S> {
        LimiterBuilder {
            store,
            on_error: OnError::Allow,
            local: None,
            local_share: 1,
        }
    }

    /// The store.
    pub fn store(&self) -> &S {
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
        }
    }

    /// Decides a request of `cost` units for `key` under `policy`, consuming if admitted.
    ///
    /// # Errors
    ///
    /// [`Error::Cost`] when the policy can never admit `cost`; [`Error::StoreUnavailable`] when
    /// the store failed and the policy fails closed.
    pub async fn check(
        &self,
        policy: &Policy,
        key: impl AsRef<[u8]>,
        cost: u64,
    ) -> Result<Verdict, Error> {
        self.check_all(slice::from_ref(policy), key, cost).await
    }

    /// Decides a request under several policies at once, all-or-nothing: it is admitted only if
    /// every enforced policy admits it, and then each admitting policy consumes.
    ///
    /// # Errors
    ///
    /// As [`Limiter::check`].
    pub async fn check_all(
        &self,
        policies: &[Policy],
        key: impl AsRef<[u8]>,
        cost: u64,
    ) -> Result<Verdict, Error> {
        let key = key.as_ref();
        match self.shared.store.acquire(policies, key, cost).await {
            Ok(verdict) => Ok(verdict),
            Err(error) => self.fall_back(policies, key, cost, error),
        }
    }

    /// Reports whether one more unit would be admitted for `key`, consuming nothing.
    ///
    /// # Errors
    ///
    /// As [`Limiter::check`].
    pub async fn peek(&self, policy: &Policy, key: impl AsRef<[u8]>) -> Result<Verdict, Error> {
        let (policies, key) = (slice::from_ref(policy), key.as_ref());
        match self.shared.store.peek(policies, key).await {
            Ok(verdict) => Ok(verdict),
            Err(error) => self.fall_back(policies, key, 0, error),
        }
    }

    /// Forgets `key`'s state under `policy`: its next request starts with a full quota.
    ///
    /// # Errors
    ///
    /// [`Error::StoreUnavailable`] when the store failed (whatever `on_error` says: a reset
    /// that did not happen is never reported as done).
    pub async fn reset(&self, policy: &Policy, key: impl AsRef<[u8]>) -> Result<(), Error> {
        let (policies, key) = (slice::from_ref(policy), key.as_ref());
        if let Some(local) = self.shared.local.get() {
            local.reset_sync(policies, key);
        }
        self.shared
            .store
            .reset(policies, key)
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
        self.acquire_all(slice::from_ref(policy), key, cost, max_wait)
            .await
    }

    /// [`Limiter::acquire`] under several policies at once, all-or-nothing.
    ///
    /// # Errors
    ///
    /// As [`Limiter::check`].
    pub async fn acquire_all(
        &self,
        policies: &[Policy],
        key: impl AsRef<[u8]>,
        cost: u64,
        max_wait: Duration,
    ) -> Result<Verdict, Error> {
        let key = key.as_ref();
        let deadline = tokio::time::Instant::now() + max_wait;
        loop {
            let verdict = self.check_all(policies, key, cost).await?;
            if verdict.allowed {
                return Ok(verdict);
            }
            let wait = verdict
                .retry_after
                .unwrap_or_default()
                .max(Duration::from_micros(1));
            if tokio::time::Instant::now() + wait > deadline {
                return Ok(verdict);
            }
            tokio::time::sleep(wait).await;
        }
    }

    fn fall_back(
        &self,
        policies: &[Policy],
        key: &[u8],
        cost: u64,
        error: StoreError,
    ) -> Result<Verdict, Error> {
        if let StoreError::Cost(cost_error) = error {
            return Err(Error::Cost(cost_error));
        }
        self.shared.store_errors[error.kind().index()].fetch_add(1, Ordering::Relaxed);
        let on_error = policies
            .iter()
            .map(|p| p.on_error().unwrap_or(self.shared.on_error))
            .max_by_key(|&o| severity(o))
            .unwrap_or(self.shared.on_error);
        match on_error {
            OnError::Deny => {
                self.shared.fail_closed.fetch_add(1, Ordering::Relaxed);
                Err(Error::StoreUnavailable { source: error })
            }
            OnError::Local => {
                let local = self.shared.local.get_or_init(|| {
                    MemoryStore::builder()
                        .max_keys(DEFAULT_LOCAL_MAX_KEYS)
                        .build()
                });
                let shared: SmallVec<[Policy; 2]> = policies
                    .iter()
                    .map(|p| p.share(self.shared.local_share))
                    .collect();
                let local = if cost == 0 {
                    local.peek_sync(&shared, key)
                } else {
                    local.acquire_sync(&shared, key, cost)
                };
                match local {
                    Ok(mut verdict) => {
                        self.shared.local_decisions.fetch_add(1, Ordering::Relaxed);
                        verdict.source = Source::Local;
                        Ok(verdict)
                    }
                    // The fallback is bounded too; beyond it, fail open rather than refuse all.
                    Err(_) => Ok(self.fail_open(policies, cost)),
                }
            }
            OnError::Allow => Ok(self.fail_open(policies, cost)),
        }
    }

    /// An uncounted admission: each decision reports the policy's capacity less this cost.
    fn fail_open(&self, policies: &[Policy], cost: u64) -> Verdict {
        self.shared.fail_open.fetch_add(1, Ordering::Relaxed);
        let decisions: SmallVec<[Decision; 2]> = policies
            .iter()
            .map(|p| Decision {
                allowed: true,
                limit: p.capacity(),
                remaining: p.capacity().saturating_sub(cost),
                reset_after: Duration::ZERO,
                retry_after: None,
            })
            .collect();
        Verdict {
            allowed: true,
            decisions,
            retry_after: None,
            source: Source::FailOpen,
        }
    }
}
