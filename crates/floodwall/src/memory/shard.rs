//! One shard of the memory store: a table per algorithm, sized to that algorithm's state.

use floodwall_core::Meter;
use floodwall_core::algorithm;
use hashbrown::HashTable;

/// A key's identity: a 128-bit keyed hash of (policy name, algorithm, client key). The client
/// key itself is never stored, so a key's memory does not depend on its length. Two `u64`s keep
/// the entry 8-byte aligned (a `u128` would pad GCRA entries from 40 to 48 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyId {
    /// Hashes the key within its shard's tables.
    pub(crate) low: u64,
    /// Picks the shard.
    pub(crate) high: u64,
}

/// A tracked key: its state and when that state is back at rest.
#[derive(Debug)]
pub(crate) struct Entry<S> {
    id: KeyId,
    /// When `state` is back at rest; the sweep drops the entry from then on.
    pub(crate) expires_at_us: u64,
    pub(crate) state: S,
}

/// An algorithm whose states a shard keeps in a table of their own.
pub(crate) trait Tracked: Meter {
    fn table(shard: &mut Shard) -> &mut HashTable<Entry<Self::State>>;
}

/// The shard's tables, one per algorithm of the registry, each sized to that algorithm's state.
macro_rules! shard_tables {
    ([] $($(#[$doc:meta])* $variant:ident $module:ident,)*) => {
        $(impl Tracked for algorithm::$variant {
            fn table(shard: &mut Shard) -> &mut HashTable<Entry<Self::State>> {
                &mut shard.tables.$module
            }
        })*

        /// One table per algorithm.
        #[derive(Debug, Default)]
        struct Tables {
            $($module: HashTable<Entry<algorithm::$module::State>>,)*
        }

        impl Shard {
            /// Drops every entry at rest at `now_us`; returns how many.
            fn drop_at_rest(&mut self, now_us: u64) -> usize {
                let before = self.len;
                let mut expiries = Vec::with_capacity(self.len);
                $(let table = &mut self.tables.$module;
                table.retain(|e| {
                    let keep = e.expires_at_us > now_us;
                    if keep {
                        expiries.push(e.expires_at_us);
                    }
                    keep
                });
                if table.capacity() > 4 * table.len() + 64 {
                    table.shrink_to(2 * table.len(), |e| e.id.low);
                })*
                self.len = 0 $(+ self.tables.$module.len())*;
                self.earliest_expiry_us = next_sweep_worth_it(&mut expiries);
                before - self.len
            }
        }
    };
}

floodwall_core::for_each_algorithm!([shard_tables]);

/// The time by which a sixteenth of the remaining entries will be at rest. Sweeping no earlier
/// means every sweep of a full shard frees a batch, so a flood of new keys into a full store costs
/// amortised O(1) per key instead of a full scan each.
fn next_sweep_worth_it(expiries: &mut [u64]) -> u64 {
    if expiries.is_empty() {
        return u64::MAX;
    }
    let k = expiries.len() / 16;
    *expiries.select_nth_unstable(k).1
}

/// Entries of every algorithm whose keys hash to this shard, and the shard's bookkeeping.
#[derive(Debug)]
pub(crate) struct Shard {
    tables: Tables,
    /// Entries in all tables.
    pub(crate) len: usize,
    /// Sweeping before this time would free too little to be worth a scan (see
    /// `next_sweep_worth_it`); lowered by every insert that expires earlier.
    earliest_expiry_us: u64,
    /// Sweep once `len` reaches this: doubling it after each sweep keeps sweeps amortised O(1).
    sweep_at_len: usize,
    /// Entries dropped because they were back at rest.
    pub(crate) reclaimed: u64,
    /// New keys not tracked because the shard was full of keys still restricting clients.
    pub(crate) refused: u64,
}

const FIRST_SWEEP_AT_LEN: usize = 1024;

impl Shard {
    pub(crate) fn new() -> Self {
        Shard {
            tables: Tables::default(),
            len: 0,
            earliest_expiry_us: u64::MAX,
            sweep_at_len: FIRST_SWEEP_AT_LEN,
            reclaimed: 0,
            refused: 0,
        }
    }

    pub(crate) fn get_mut<M: Tracked>(&mut self, id: KeyId) -> Option<&mut Entry<M::State>> {
        M::table(self).find_mut(id.low, |e| e.id == id)
    }

    /// Where `id`'s entry sits in its table, if it is tracked. Reaching it again by
    /// [`Shard::at`] costs no second lookup while nothing is inserted into that table.
    #[inline]
    pub(crate) fn position<M: Tracked>(&mut self, id: KeyId) -> Option<usize> {
        M::table(self).find_bucket_index(id.low, |e| e.id == id)
    }

    /// `id`'s entry, at `position` when it is still there (nothing was inserted since), found
    /// again otherwise.
    #[inline]
    pub(crate) fn at<M: Tracked>(
        &mut self,
        position: usize,
        id: KeyId,
    ) -> Option<&mut Entry<M::State>> {
        let still_there = M::table(self)
            .get_bucket(position)
            .is_some_and(|e| e.id == id);
        if still_there {
            M::table(self).get_bucket_mut(position)
        } else {
            self.get_mut::<M>(id)
        }
    }

    /// Tracks a new key. The caller checked that the shard has room for it.
    pub(crate) fn insert<M: Tracked>(&mut self, id: KeyId, expires_at_us: u64, state: M::State) {
        M::table(self).insert_unique(
            id.low,
            Entry {
                id,
                expires_at_us,
                state,
            },
            |e| e.id.low,
        );
        self.len += 1;
        self.earliest_expiry_us = self.earliest_expiry_us.min(expires_at_us);
    }

    /// Forgets a key whose state is back at rest.
    pub(crate) fn remove_at_rest<M: Tracked>(&mut self, id: KeyId) {
        if self.remove::<M>(id) {
            self.reclaimed += 1;
        }
    }

    /// Forgets a key; returns whether it was tracked.
    pub(crate) fn remove<M: Tracked>(&mut self, id: KeyId) -> bool {
        match M::table(self).find_entry(id.low, |e| e.id == id) {
            Ok(entry) => {
                entry.remove();
                self.len -= 1;
                true
            }
            Err(_) => false,
        }
    }

    /// Drops entries at rest if the shard has doubled since the last sweep or `incoming` new keys
    /// would not fit under `cap`, and something can have come to rest since.
    pub(crate) fn sweep_if_due(&mut self, now_us: u64, incoming: usize, cap: usize) {
        let due = self.len >= self.sweep_at_len || self.len + incoming > cap;
        if due && now_us >= self.earliest_expiry_us {
            let dropped = self.drop_at_rest(now_us);
            self.reclaimed += dropped as u64;
            self.sweep_at_len = (2 * self.len).max(FIRST_SWEEP_AT_LEN);
        }
    }
}
