//! Exact rate limiting shared by every instance of an application.
//!
//! A [`Limiter`] decides "may this client spend `cost` units now?" under one or more
//! [`Policy`]s, against a [`Storage`] that holds the shared state: [`MemoryStore`] in process
//! (the embedded default), or Redis for many instances. Being limited is a value (a denied
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
//! assert!(verdict.allowed());
//! for (policy, decision) in verdict.iter() {
//!     assert_eq!((policy.name(), decision.remaining), ("per-ip", 9));
//! }
//! # Ok(())
//! # }
//! ```

pub mod client_key;
mod clock;
pub mod controls;
mod error;
pub mod gate;
mod lease;
mod limiter;
pub mod memory;
pub mod offenders;
#[cfg(feature = "redis")]
pub mod redis;
mod reservation;
mod storage;
pub mod store;
pub mod trace;
mod verdict;

pub use clock::TokioClock;
pub use controls::{ControlError, List};
pub use error::{CheckError, Error, StoreError, StoreErrorKind};
pub use floodwall_core::{
    Algorithm, Calendar, Clock, CostError, Decision, Holder, ManualClock, Mode, OnError, Policy,
    PolicyError, SystemClock, parse_period,
};
pub use lease::{Lease, LeaseGuard};
pub use limiter::{Limiter, LimiterBuilder};
pub use memory::MemoryStore;
#[cfg(feature = "redis")]
pub use redis::{RedisConfig, RedisStore};
pub use reservation::{KEPT_ID_LEN, KeptSettle, Reservation};
pub use storage::{Storage, StorageConfig};
pub use store::{Charge, Check, Source};
pub use verdict::Verdict;

/// What a limiter and its stores count, as [`Limiter::stats`] and the stores' own `stats`
/// report them.
pub mod stats {
    pub use crate::limiter::{AbandonedCounts, LimiterStats, StoreErrorCounts};
    pub use crate::memory::MemoryStats;
    #[cfg(feature = "redis")]
    pub use crate::redis::{RedisStats, SentinelMaster};
    pub use crate::storage::StorageStats;
}

/// The pure core: algorithms, key encoding, reference types.
pub use floodwall_core as core;
