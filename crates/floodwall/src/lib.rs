//! Exact rate limiting shared by every instance of an application.
//!
//! A [`Limiter`] decides "may this client spend `cost` units now?" under one or more
//! [`Policy`]s, against a [`Store`] that holds the shared state: [`MemoryStore`] in process (the
//! embedded default), Redis for many instances (next). Being limited is a value (a denied
//! [`Verdict`] with an exact `retry_after`); an [`Error`] means the limiter could not decide.
//!
//! ```
//! use std::time::Duration;
//! use floodwall::{Algorithm, Limiter, MemoryStore, Policy};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let per_ip = Policy::new("per-ip", Algorithm::SlidingWindow, 10, Duration::from_secs(60))?;
//! let limiter = Limiter::new(MemoryStore::new());
//!
//! let verdict = limiter.check(&per_ip, "203.0.113.7", 1).await?;
//! assert!(verdict.allowed);
//! assert_eq!(verdict.decisions[0].remaining, 9);
//! # Ok(())
//! # }
//! ```

mod clock;
mod error;
mod limiter;
pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;
mod store;
mod verdict;

pub use clock::TokioClock;
pub use error::{Error, StoreError, StoreErrorKind};
pub use floodwall_core::{
    Algorithm, Clock, CostError, Decision, ManualClock, Mode, OnError, Policy, PolicyError,
    SystemClock, parse_period,
};
pub use limiter::{
    DEFAULT_LOCAL_MAX_KEYS, Limiter, LimiterBuilder, LimiterStats, StoreErrorCounts,
};
pub use memory::{MemoryStats, MemoryStore, MemoryStoreBuilder};
#[cfg(feature = "redis")]
pub use redis::{RedisConfig, RedisStats, RedisStore};
pub use store::Store;
pub use verdict::{Source, Verdict};

/// The pure core: algorithms, key encoding, reference types.
pub use floodwall_core as core;

/// The README's examples, compiled and run as doc tests.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
