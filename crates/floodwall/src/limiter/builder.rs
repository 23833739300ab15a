//! How a [`Limiter`] is made: its store, its failure policy and its local fallback.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};

use floodwall_core::OnError;

use super::{Limiter, Shared};
use crate::controls::Controls;
use crate::memory::MemoryStore;
use crate::offenders::OffenderTable;
use crate::storage::Storage;

/// Builds a [`Limiter`].
#[derive(Debug)]
pub struct LimiterBuilder {
    store: Storage,
    on_error: OnError,
    local: Option<MemoryStore>,
    local_share: u64,
    offenders: Option<usize>,
}

impl LimiterBuilder {
    /// The default bound on keys tracked by the local fallback used with `on_error = "local"`.
    pub const DEFAULT_LOCAL_MAX_KEYS: usize = 100_000;

    /// Keeps, per policy, the keys it denied most in the last five minutes, in `capacity`
    /// counters a minute ([`Limiter::top_offenders`]). Off by default; it costs a lock per
    /// denied pair, never anything on an admission.
    #[must_use]
    pub fn track_offenders(mut self, capacity: usize) -> Self {
        self.offenders = Some(capacity.max(1));
        self
    }

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
    /// [`DEFAULT_LOCAL_MAX_KEYS`](Self::DEFAULT_LOCAL_MAX_KEYS) keys on the store's clock).
    #[must_use]
    pub fn local_store(mut self, local: MemoryStore) -> Self {
        self.local = Some(local);
        self
    }

    /// Builds the limiter.
    pub fn build(self) -> Limiter {
        let local = OnceLock::new();
        if let Some(store) = self.local {
            let _ = local.set(store);
        }
        let clock = self.store.clock();
        Limiter {
            shared: Arc::new(Shared {
                on_error: self.on_error,
                local,
                local_share: self.local_share,
                fail_open: AtomicU64::new(0),
                fail_closed: AtomicU64::new(0),
                local_decisions: AtomicU64::new(0),
                store_errors: Default::default(),
                offenders: self
                    .offenders
                    .map(|capacity| OffenderTable::new(capacity, Arc::clone(&clock))),
                controls: Controls::new(clock),
                store: self.store,
                abandoned: Default::default(),
            }),
        }
    }
}

impl Limiter {
    /// A limiter on `store` (a [`MemoryStore`], a Redis store, or a [`Storage`]) that fails open.
    pub fn new(store: impl Into<Storage>) -> Self {
        Self::builder(store).build()
    }

    /// A builder for the failure policy and the local fallback.
    pub fn builder(store: impl Into<Storage>) -> LimiterBuilder {
        LimiterBuilder {
            store: store.into(),
            on_error: OnError::Allow,
            local: None,
            local_share: 1,
            offenders: None,
        }
    }
}
