//! Configuration validation, alone in its own test target so that mutation testing of the
//! config module (`scripts/mutants config`) rebuilds only these tests for each mutant: every
//! error names the file, line and column with a fix, and envoyproxy/ratelimit files load as
//! their limits say.

// Tests fail by panicking; unwrap and expect are how they say so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod envoy_files;
#[path = "../fixtures/envoy_files.rs"]
mod fixtures;
mod validation;
