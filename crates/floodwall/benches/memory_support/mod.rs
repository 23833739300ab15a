//! What the memory benches share: the key sequences they visit and the limits they never reach,
//! so that a figure of one bench compares with the other's.

// Each bench includes this module and uses part of it.
#![allow(dead_code)]

use std::num::NonZeroU32;
use std::time::Duration;

use floodwall::{Algorithm, Policy};

/// The length of a key sequence: a power of two, so a loop indexes it with a mask.
pub(crate) const SEQUENCE: usize = 1 << 16;

/// Thread `thread`'s fixed pseudo-random sequence of keys below `keys` (xorshift64*), so the RNG
/// costs nothing in the loop.
pub(crate) fn key_sequence(thread: usize, keys: u64) -> Vec<u64> {
    let mut x = (0x9e37_79b9_7f4a_7c15 ^ (thread as u64 + 1)) | 1;
    (0..SEQUENCE)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d) % keys
        })
        .collect()
}

/// A policy no benchmark reaches: every decision is an admission.
pub(crate) fn never_reached(algorithm: Algorithm) -> Policy {
    let (limit, period) = match algorithm {
        // One entry per admission (or holder): keep the log short by letting entries leave
        // quickly.
        Algorithm::SlidingLog | Algorithm::Concurrency => (1_000_000, Duration::from_millis(1)),
        _ => (1_000_000_000, Duration::from_secs(1)),
    };
    Policy::new("bench", algorithm, limit, period).unwrap()
}

/// governor's quota that no benchmark reaches.
pub(crate) fn governor_never_reached() -> governor::Quota {
    governor::Quota::per_second(NonZeroU32::MAX).allow_burst(NonZeroU32::MAX)
}
