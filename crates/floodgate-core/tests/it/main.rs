//! Integration tests of the pure core: every algorithm against its brute-force reference model.

mod clock_steps;
mod differential;
mod strategies;
