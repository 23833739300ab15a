//! The store chosen at run time: memory or Redis, built once from a validated configuration,
//! or a store of the user's own.

mod plugged;

pub use plugged::PluggedStore;

use std::time::Duration;

use crate::error::StoreError;
use crate::memory::{DEFAULT_MAX_KEYS, MemoryStats, MemoryStore};
#[cfg(feature = "redis")]
use crate::redis::{RedisConfig, RedisStats, RedisStore};
use crate::store::Answer;
use crate::store::{Charge, Check};
use crate::store::{ControlStore, Store};

/// Which store to build: what [`Storage::connect`] accepts.
///
/// [`StorageConfig::from_url`] and [`StorageConfig::validate`] check everything that connecting
/// would refuse for the form of the configuration (an unknown scheme, a cluster URL without
/// nodes, an invalid key prefix), so a configuration checker can report it before anything
/// connects.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum StorageConfig {
    /// The embedded memory store.
    Memory {
        /// The most keys it tracks at once.
        max_keys: usize,
    },
    /// A Redis node or cluster.
    #[cfg(feature = "redis")]
    Redis(RedisConfig),
}

impl StorageConfig {
    /// The URL of the memory store.
    pub const MEMORY_URL: &str = "memory://";

    /// The memory store with its default bound.
    pub fn memory() -> Self {
        StorageConfig::Memory {
            max_keys: DEFAULT_MAX_KEYS,
        }
    }

    /// `memory://`, or a Redis URL with the Redis store's defaults.
    ///
    /// # Errors
    ///
    /// [`StoreError::Config`] when the URL is neither, naming the accepted forms.
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        if url == Self::MEMORY_URL {
            return Ok(StorageConfig::memory());
        }
        #[cfg(feature = "redis")]
        {
            let config = StorageConfig::Redis(RedisConfig::new(url));
            config.validate()?;
            Ok(config)
        }
        #[cfg(not(feature = "redis"))]
        Err(StoreError::Config {
            detail: format!(
                "unknown storage URL {url:?}: this build has the memory store only ({}); Redis needs the `redis` feature",
                Self::MEMORY_URL
            ),
        })
    }

    /// Checks what [`Storage::connect`] would refuse without connecting.
    ///
    /// # Errors
    ///
    /// [`StoreError::Config`] naming what is wrong.
    pub fn validate(&self) -> Result<(), StoreError> {
        match self {
            StorageConfig::Memory { .. } => Ok(()),
            #[cfg(feature = "redis")]
            StorageConfig::Redis(config) => config.validate(),
        }
    }
}

/// A store chosen at run time. The built-in stores give the same answers; this is the type the
/// [`Limiter`](crate::Limiter) holds.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Storage {
    /// The embedded store.
    Memory(MemoryStore),
    /// A Redis node or cluster.
    #[cfg(feature = "redis")]
    Redis(RedisStore),
    /// A store of the user's own ([`Storage::plugged`]).
    Plugged(PluggedStore),
}

/// What a [`Storage`] reports about itself.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum StorageStats {
    /// The memory store's key counts.
    Memory(MemoryStats),
    /// The Redis store's circuit breakers.
    #[cfg(feature = "redis")]
    Redis(RedisStats),
    /// A store of the user's own, which reports nothing.
    Plugged,
}

impl Storage {
    /// Any store implementing the store protocol: the limiter decides through it as through the
    /// built-in ones, blocks, lists, offenders and `on_error` included. Its calls are boxed
    /// (one allocation each); a [`ControlStore`] that keeps no record (the trait's defaults)
    /// keeps the operator's controls in the process.
    ///
    /// The store answers for what a caller who leaves does to it: a [`Store::decide`] dropped
    /// at any `.await` must either not have taken its units or give them back, as the
    /// built-in stores do.
    pub fn plugged(store: impl Store + ControlStore) -> Self {
        Storage::Plugged(PluggedStore::new(store))
    }

    /// Builds the store `config` describes. A single Redis node is connected lazily; a cluster's
    /// topology is read now.
    ///
    /// # Errors
    ///
    /// [`StoreError::Config`] for an invalid configuration; [`StoreError::Redis`](StoreError)
    /// when a cluster's nodes cannot be reached.
    pub async fn connect(config: StorageConfig) -> Result<Self, StoreError> {
        match config {
            StorageConfig::Memory { max_keys } => Ok(Storage::Memory(
                MemoryStore::builder().max_keys(max_keys).build(),
            )),
            #[cfg(feature = "redis")]
            StorageConfig::Redis(config) => Ok(Storage::Redis(RedisStore::connect(config).await?)),
        }
    }

    /// Checks, within `within`, that the store accepts this process: always so in memory; for
    /// Redis, see [`RedisStore::verify_access`].
    ///
    /// # Errors
    ///
    /// As [`RedisStore::verify_access`].
    #[cfg_attr(not(feature = "redis"), allow(unused_variables))]
    pub async fn verify_access(&self, within: std::time::Duration) -> Result<(), StoreError> {
        match self {
            Storage::Memory(_) | Storage::Plugged(_) => Ok(()),
            #[cfg(feature = "redis")]
            Storage::Redis(store) => store.verify_access(within).await,
        }
    }

    /// Whether the store answers now, past any circuit breaker: always in memory; for Redis,
    /// see [`RedisStore::ping`].
    ///
    /// # Errors
    ///
    /// As [`RedisStore::ping`].
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Storage::Memory(_) | Storage::Plugged(_) => Ok(()),
            #[cfg(feature = "redis")]
            Storage::Redis(store) => store.ping().await,
        }
    }

    /// Takes a proxy's report on the shares of `policy`'s rate for `key` and grants it a share
    /// for `ttl` (see [`floodwall_core::quota`]): in process for memory, through the store for
    /// Redis (every instance on it grants from one set of shares).
    ///
    /// # Errors
    ///
    /// [`StoreError::Config`] for a policy that cannot be shared, or a plugged store (which
    /// has no shares); the store's failures as for a decision.
    #[cfg_attr(not(feature = "redis"), allow(unused_variables))]
    pub async fn report_quota(
        &self,
        policy: &floodwall_core::Policy,
        key: &[u8],
        reporter: floodwall_core::quota::ReporterId,
        usage: floodwall_core::quota::Usage,
        ttl: std::time::Duration,
    ) -> Result<floodwall_core::quota::Share, StoreError> {
        match self {
            Storage::Memory(store) => store.report_quota(policy, key, reporter, usage, ttl).await,
            #[cfg(feature = "redis")]
            Storage::Redis(store) => store.report_quota(policy, key, reporter, usage, ttl).await,
            Storage::Plugged(_) => Err(StoreError::Config {
                detail: "a plugged store keeps no shares of a rate among proxies (RLQS): use the memory or Redis store".to_owned(),
            }),
        }
    }

    /// Why the store refuses this process, if it does: never in memory; for Redis, see
    /// [`RedisStore::diagnose`].
    pub async fn diagnose(&self) -> Option<StoreError> {
        match self {
            Storage::Memory(_) | Storage::Plugged(_) => None,
            #[cfg(feature = "redis")]
            Storage::Redis(store) => store.diagnose().await,
        }
    }

    /// The kind a failure of a call is counted as: a connection's failure (an error or a
    /// timeout) while the store is known to refuse this process is that refusal (the
    /// reconnecting connection could not say so itself).
    pub(crate) fn counted_kind(&self, error: &StoreError) -> crate::StoreErrorKind {
        let kind = error.kind();
        match self {
            #[cfg(feature = "redis")]
            Storage::Redis(store)
                if matches!(
                    kind,
                    crate::StoreErrorKind::Redis | crate::StoreErrorKind::Timeout
                ) =>
            {
                store.refusal_kind().unwrap_or(kind)
            }
            _ => kind,
        }
    }

    /// The wall clock the store decides by: its injected clock, or the system's. The limiter
    /// reads the same one for what it keeps beside the store (blocks, offenders), so that one
    /// injected clock drives all of it.
    pub(crate) fn clock(&self) -> std::sync::Arc<dyn floodwall_core::Clock> {
        match self {
            Storage::Memory(store) => Store::clock(store),
            #[cfg(feature = "redis")]
            Storage::Redis(store) => Store::clock(store),
            Storage::Plugged(store) => Store::clock(store),
        }
    }

    /// The store's kind, as spans name it: `memory`, `redis` or `plugged`.
    pub fn kind(&self) -> &'static str {
        match self {
            Storage::Memory(_) => "memory",
            #[cfg(feature = "redis")]
            Storage::Redis(_) => "redis",
            Storage::Plugged(_) => "plugged",
        }
    }

    /// The store's own figures.
    pub fn stats(&self) -> StorageStats {
        match self {
            Storage::Memory(store) => StorageStats::Memory(store.stats()),
            #[cfg(feature = "redis")]
            Storage::Redis(store) => StorageStats::Redis(store.stats()),
            Storage::Plugged(_) => StorageStats::Plugged,
        }
    }
}

/// The operator controls kept in the store, for every instance to read.
impl ControlStore for Storage {
    async fn controls_version(&self) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Storage::Memory(store) => store.controls_version().await,
            #[cfg(feature = "redis")]
            Storage::Redis(store) => store.controls_version().await,
            Storage::Plugged(store) => store.controls_version().await,
        }
    }

    async fn read_controls(&self) -> Result<Vec<crate::store::ControlField>, StoreError> {
        match self {
            Storage::Memory(store) => store.read_controls().await,
            #[cfg(feature = "redis")]
            Storage::Redis(store) => store.read_controls().await,
            Storage::Plugged(store) => store.read_controls().await,
        }
    }

    async fn write_controls(
        &self,
        set: Option<crate::store::ControlField>,
        remove: Option<Vec<u8>>,
    ) -> Result<(), StoreError> {
        match self {
            Storage::Memory(store) => store.write_controls(set, remove).await,
            #[cfg(feature = "redis")]
            Storage::Redis(store) => store.write_controls(set, remove).await,
            Storage::Plugged(store) => store.write_controls(set, remove).await,
        }
    }

    async fn put_record(&self, name: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        match self {
            Storage::Memory(store) => store.put_record(name, value, ttl).await,
            #[cfg(feature = "redis")]
            Storage::Redis(store) => store.put_record(name, value, ttl).await,
            Storage::Plugged(store) => store.put_record(name, value, ttl).await,
        }
    }

    async fn take_record(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Storage::Memory(store) => store.take_record(name).await,
            #[cfg(feature = "redis")]
            Storage::Redis(store) => store.take_record(name).await,
            Storage::Plugged(store) => store.take_record(name).await,
        }
    }
}

impl From<MemoryStore> for Storage {
    fn from(store: MemoryStore) -> Self {
        Storage::Memory(store)
    }
}

#[cfg(feature = "redis")]
impl From<RedisStore> for Storage {
    fn from(store: RedisStore) -> Self {
        Storage::Redis(store)
    }
}

/// Each call goes to the store's own [`Store`] implementation.
impl Store for Storage {
    async fn decide(&self, check: &Check<'_>) -> Result<Answer, StoreError> {
        match self {
            Storage::Memory(store) => store.decide(check).await,
            #[cfg(feature = "redis")]
            Storage::Redis(store) => store.decide(check).await,
            Storage::Plugged(store) => store.decide(check).await,
        }
    }

    async fn refund(&self, check: &Check<'_>) -> Result<Answer, StoreError> {
        match self {
            Storage::Memory(store) => store.refund(check).await,
            #[cfg(feature = "redis")]
            Storage::Redis(store) => store.refund(check).await,
            Storage::Plugged(store) => store.refund(check).await,
        }
    }

    async fn debit(&self, charge: &Charge<'_>) -> Result<Answer, StoreError> {
        match self {
            Storage::Memory(store) => store.debit(charge).await,
            #[cfg(feature = "redis")]
            Storage::Redis(store) => store.debit(charge).await,
            Storage::Plugged(store) => store.debit(charge).await,
        }
    }

    async fn reset(&self, check: &Check<'_>) -> Result<(), StoreError> {
        match self {
            Storage::Memory(store) => store.reset(check).await,
            #[cfg(feature = "redis")]
            Storage::Redis(store) => store.reset(check).await,
            Storage::Plugged(store) => store.reset(check).await,
        }
    }

    async fn release(&self, check: &Check<'_>) -> Result<(), StoreError> {
        match self {
            Storage::Memory(store) => store.release(check).await,
            #[cfg(feature = "redis")]
            Storage::Redis(store) => store.release(check).await,
            Storage::Plugged(store) => store.release(check).await,
        }
    }

    fn release_in_place(&self, check: &Check<'_>) -> bool {
        match self {
            Storage::Memory(store) => store.release_in_place(check),
            #[cfg(feature = "redis")]
            Storage::Redis(store) => store.release_in_place(check),
            Storage::Plugged(store) => store.release_in_place(check),
        }
    }
}
