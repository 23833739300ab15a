//! [`MemoryStoreBuilder`]: the bound, the shards and the clock of a [`MemoryStore`].

use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

use floodwall_core::Clock;

use super::shard::{Hashing, Shard};
use super::{Inner, MemoryStore, Padded};

/// Builds a [`MemoryStore`].
#[derive(Debug)]
pub struct MemoryStoreBuilder {
    pub(super) max_keys: usize,
    pub(super) shards: Option<usize>,
    pub(super) clock: Arc<dyn Clock>,
    #[cfg(test)]
    pub(super) colliding: bool,
}

impl MemoryStoreBuilder {
    /// Every key gets the same hash, as if an attacker could aim keys at one bucket.
    #[cfg(test)]
    pub(super) fn colliding(mut self) -> Self {
        self.colliding = true;
        self
    }

    /// The most keys tracked at once (default [`DEFAULT_MAX_KEYS`](super::DEFAULT_MAX_KEYS); at least 1).
    #[must_use]
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys.max(1);
        self
    }

    /// The number of shards, rounded up to a power of two and capped at `max_keys` (default:
    /// 32 per CPU, at least 64, fewer for small bounds).
    #[must_use]
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards.max(1));
        self
    }

    /// The clock (default [`SystemClock`](floodwall_core::SystemClock)). Tests pass a
    /// `ManualClock`.
    #[must_use]
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Builds the store.
    pub fn build(self) -> MemoryStore {
        let wanted = self.shards.unwrap_or_else(|| default_shards(self.max_keys));
        let shards = prev_power_of_two(wanted.clamp(1, self.max_keys));
        let random = std::collections::hash_map::RandomState::new();
        #[cfg_attr(not(test), allow(unused_mut))]
        let mut hashing = Hashing::default();
        #[cfg(test)]
        {
            hashing.colliding = self.colliding;
        }
        MemoryStore {
            inner: Arc::new(Inner {
                shards: (0..shards)
                    .map(|_| Padded(Mutex::new(Shard::new(hashing.clone()))))
                    .collect(),
                shard_mask: shards - 1,
                per_shard_max: self.max_keys / shards,
                max_keys: self.max_keys,
                clock: self.clock,
                hashing,
                // Secret per store, from the OS-seeded keys of std's RandomState.
                digest_key: (random.hash_one(0x5eed_u64), random.hash_one(0xf00d_u64)),
                quotas: super::quota::Quotas::new(self.max_keys / 4),
                records: super::records::Records::new(self.max_keys / 4),
            }),
        }
    }
}

/// How many shards a store of `max_keys` gets unless told: enough that threads rarely wait on
/// one another, few enough that each holds a useful share of the keys. What the store promises
/// holds for any number of shards.
fn default_shards(max_keys: usize) -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    (cpus * 32).clamp(64, 1024).min(max_keys / 256)
}

fn prev_power_of_two(n: usize) -> usize {
    if n.is_power_of_two() {
        n
    } else {
        n.next_power_of_two() / 2
    }
}
