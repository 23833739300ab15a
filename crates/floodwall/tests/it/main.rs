//! Integration tests of the floodwall library: the memory store against the reference models,
//! under concurrency and under key floods, and the limiter's failure and waiting behaviour.

// Tests fail by panicking; unwrap and expect are how they say so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod boundedness;
mod concurrency;
mod conformance;
mod controls;
mod debts;
mod differential;
mod gate;
mod in_flight;
mod inspect;
mod limiter;
mod plugged;
mod quota;
mod redis_cluster_faults;
mod redis_differential;
mod redis_exactness;
mod redis_faults;
mod redis_prefetch;
mod redis_quota;
mod redis_replication;
mod redis_sentinel;
#[cfg(feature = "tls")]
mod redis_tls;
mod support;
mod walk_away;
mod weighted;
