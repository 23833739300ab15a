//! Configuration validation, alone in its own test target so that mutation testing of the
//! config module (`scripts/mutants config`) rebuilds only these tests for each mutant: every
//! error names the file, line and column with a fix, and envoyproxy/ratelimit files load as
//! their limits say.

// Tests fail by panicking; unwrap and expect are how they say so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod envoy_files;
#[path = "../fixtures/envoy_files.rs"]
mod fixtures;
mod mistakes;
mod validation;

use floodwall_server::config::ConfigError;

/// Asserts that `errors` is one error whose message contains `says`.
fn the_one_error(errors: &[ConfigError], says: &str) {
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].message.contains(says), "{}", errors[0]);
}
