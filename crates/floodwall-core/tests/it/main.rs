//! Integration tests of the pure core: every algorithm against its brute-force reference model.

// Tests fail by panicking; unwrap and expect are how they say so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod clock_steps;
mod debts;
mod differential;
mod foreign_state;
mod leases;
mod quota;
mod refunds;
mod strategies;
