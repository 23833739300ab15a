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

/// A tracked key: its identity, its state, when that state is back at rest, and how much of
/// its quota it had in use at its last decision.
#[derive(Debug)]
pub(crate) struct Entry<S> {
    /// [`KeyId::low`]: the table's hash.
    low: u64,
    /// [`KeyId::high`]'s lower 48 bits, with the fill in the upper 16: the fill costs no
    /// padding, and the identity keeps 112 bits (two keys collide with probability 2^-112).
    high_and_fill: u64,
    /// When `state` is back at rest; the sweep drops the entry from then on.
    pub(crate) expires_at_us: u64,
    pub(crate) state: S,
}

/// The bits of [`KeyId::high`] an entry keeps.
const HIGH_BITS: u64 = (1 << 48) - 1;

impl<S> Entry<S> {
    fn is(&self, id: KeyId) -> bool {
        self.low == id.low && (self.high_and_fill & HIGH_BITS) == (id.high & HIGH_BITS)
    }

    /// The share of the quota in use after the last decision, in 1/65 535ths (see [`fill`]):
    /// what evicting the entry could give back, at most, since use only decays.
    pub(crate) fn fill(&self) -> u16 {
        (self.high_and_fill >> 48) as u16
    }

    pub(crate) fn set_fill(&mut self, fill: u16) {
        self.high_and_fill = (self.high_and_fill & HIGH_BITS) | (u64::from(fill) << 48);
    }
}

/// The share of its quota `decision` leaves in use, in 1/65 535ths: 65 535 for a denied or
/// exhausted key, a fifth of that after one request of five.
#[inline]
pub(crate) fn fill(decision: &floodwall_core::Decision) -> u16 {
    let used = decision.capacity.saturating_sub(decision.remaining);
    let share = u128::from(used) * u128::from(u16::MAX) / u128::from(decision.capacity.max(1));
    u16::try_from(share).unwrap_or(u16::MAX)
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
            /// Drops every entry `keep` refuses, given its fill and rest time; returns how many.
            fn drop_unless(&mut self, keep: impl Fn(u16, u64) -> bool + Copy) -> usize {
                let before = self.len;
                let mut expiries = Vec::with_capacity(self.len);
                $(let table = &mut self.tables.$module;
                table.retain(|e| {
                    let keep = keep(e.fill(), e.expires_at_us);
                    if keep {
                        expiries.push(e.expires_at_us);
                    }
                    keep
                });
                if table.capacity() > 4 * table.len() + 64 {
                    table.shrink_to(2 * table.len(), |e| e.low);
                })*
                self.len = 0 $(+ self.tables.$module.len())*;
                self.earliest_expiry_us = next_sweep_worth_it(&mut expiries);
                before - self.len
            }

            /// The rank (fill, then rest time) of the `count`-th entry in eviction order: least
            /// used first, and among equals the soonest at rest (`count` ≥ 1).
            fn eviction_rank(&mut self, count: usize) -> (u16, u64) {
                let mut ranks = Vec::with_capacity(self.len);
                $(ranks.extend(self.tables.$module.iter().map(|e| (e.fill(), e.expires_at_us)));)*
                match ranks.len().checked_sub(1) {
                    Some(last) => *ranks.select_nth_unstable(count.saturating_sub(1).min(last)).1,
                    None => (0, 0),
                }
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
    /// Entries evicted, least used first, to make room for new keys in a full shard.
    pub(crate) evicted: u64,
    /// The largest fill of an evicted entry: what an eviction has given back, at most.
    pub(crate) evicted_fill: u16,
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
            evicted: 0,
            evicted_fill: 0,
        }
    }

    pub(crate) fn get_mut<M: Tracked>(&mut self, id: KeyId) -> Option<&mut Entry<M::State>> {
        M::table(self).find_mut(id.low, |e| e.is(id))
    }

    /// Where `id`'s entry sits in its table, if it is tracked. Reaching it again by
    /// [`Shard::at`] costs no second lookup while nothing is inserted into that table.
    #[inline]
    pub(crate) fn position<M: Tracked>(&mut self, id: KeyId) -> Option<usize> {
        M::table(self).find_bucket_index(id.low, |e| e.is(id))
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
            .is_some_and(|e| e.is(id));
        if still_there {
            M::table(self).get_bucket_mut(position)
        } else {
            self.get_mut::<M>(id)
        }
    }

    /// Tracks a new key. The caller checked that the shard has room for it.
    pub(crate) fn insert<M: Tracked>(
        &mut self,
        id: KeyId,
        expires_at_us: u64,
        fill: u16,
        state: M::State,
    ) {
        M::table(self).insert_unique(
            id.low,
            Entry {
                low: id.low,
                high_and_fill: (id.high & HIGH_BITS) | (u64::from(fill) << 48),
                expires_at_us,
                state,
            },
            |e| e.low,
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
        match M::table(self).find_entry(id.low, |e| e.is(id)) {
            Ok(entry) => {
                entry.remove();
                self.len -= 1;
                true
            }
            Err(_) => false,
        }
    }

    /// Whether `incoming` keys call for a sweep: the shard has doubled since the last one, or
    /// they may not fit under `cap`.
    #[inline]
    pub(crate) fn sweep_due(&self, incoming: usize, cap: usize) -> bool {
        self.len >= self.sweep_at_len || self.len + incoming > cap
    }

    /// Drops entries at rest, if something can have come to rest since the last sweep.
    pub(crate) fn sweep(&mut self, now_us: u64) {
        if now_us >= self.earliest_expiry_us {
            let dropped = self.drop_unless(|_, expires_at_us| expires_at_us > now_us);
            self.reclaimed += dropped as u64;
            self.sweep_at_len = (2 * self.len).max(FIRST_SWEEP_AT_LEN);
        }
    }

    /// Makes room for `new_keys` under `cap` by evicting the least used entries (and among
    /// equals those soonest at rest): at least `new_keys`, and a sixteenth of the shard, so that
    /// a flood of new keys into a full shard costs amortised O(1) per key. Every entry evicted
    /// had used no larger a share of its quota than any entry kept.
    pub(crate) fn evict_least_used(&mut self, new_keys: usize, cap: usize) {
        if self.len + new_keys <= cap {
            return;
        }
        let count = (self.len + new_keys - cap).max(self.len / 16);
        let through = self.eviction_rank(count);
        let evicted = self.drop_unless(|fill, expires_at_us| (fill, expires_at_us) > through);
        self.evicted += evicted as u64;
        self.evicted_fill = self.evicted_fill.max(through.0);
        self.sweep_at_len = (2 * self.len).max(FIRST_SWEEP_AT_LEN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floodwall_core::{Decision, algorithm::FixedWindow, algorithm::fixed_window};
    use std::time::Duration;

    /// Two keys are one entry only when both halves of their identity agree: sharing the
    /// low half (the table's hash) or the high half is not enough.
    #[test]
    fn a_key_is_found_only_by_its_whole_identity() {
        let mut shard = Shard::new();
        let id = KeyId { low: 7, high: 9 };
        shard.insert::<FixedWindow>(id, u64::MAX, 0, window(1));
        assert!(shard.get_mut::<FixedWindow>(id).is_some());
        for other in [KeyId { low: 7, high: 10 }, KeyId { low: 8, high: 9 }] {
            assert!(shard.get_mut::<FixedWindow>(other).is_none(), "{other:?}");
        }
    }

    fn window(count: u64) -> fixed_window::State {
        fixed_window::State {
            window_start_us: 0,
            count,
        }
    }

    /// A sweep drops exactly the entries at rest by now (expiring at or before it), counts
    /// them as reclaimed, and keeps the others with their fill.
    #[test]
    fn a_sweep_drops_exactly_the_entries_at_rest() {
        let mut shard = Shard::new();
        for (low, expires_at_us) in [(1, 100), (2, 101), (3, 200)] {
            let id = KeyId { low, high: low };
            shard.insert::<FixedWindow>(id, expires_at_us, 40_000, window(1));
        }
        shard.sweep(100);
        assert_eq!((shard.len, shard.reclaimed), (2, 1));
        assert!(
            shard
                .get_mut::<FixedWindow>(KeyId { low: 1, high: 1 })
                .is_none()
        );
        let kept = shard.get_mut::<FixedWindow>(KeyId { low: 2, high: 2 });
        assert_eq!(kept.map(|e| e.fill()), Some(40_000));
        // A key forgotten because its state came back to rest is reclaimed too.
        shard.remove_at_rest::<FixedWindow>(KeyId { low: 3, high: 3 });
        assert_eq!((shard.len, shard.reclaimed), (1, 2));
    }

    /// Eviction makes room for exactly the keys asked for, taking the least used first: the
    /// fill recorded when a key was inserted decides, and what was evicted is reported.
    #[test]
    fn eviction_takes_the_least_used_and_only_as_many_as_needed() {
        let mut shard = Shard::new();
        let fills = [60_000, 5_000, 30_000, 10_000];
        for (low, fill) in (1..).zip(fills) {
            shard.insert::<FixedWindow>(KeyId { low, high: low }, 1_000, fill, window(1));
        }
        shard.evict_least_used(1, 4);
        assert_eq!(
            (shard.len, shard.evicted, shard.evicted_fill),
            (3, 1, 5_000)
        );
        shard.evict_least_used(2, 4);
        assert_eq!(
            (shard.len, shard.evicted, shard.evicted_fill),
            (2, 2, 10_000)
        );
        for (low, tracked) in [(1, true), (2, false), (3, true), (4, false)] {
            let id = KeyId { low, high: low };
            assert_eq!(shard.get_mut::<FixedWindow>(id).is_some(), tracked, "{low}");
        }
        // Room enough already: nothing goes.
        shard.evict_least_used(2, 4);
        assert_eq!(shard.evicted, 2);
    }

    /// The share of a quota in use, in 1/65 535ths: what evicting the entry could give back.
    #[test]
    fn fill_is_the_share_of_the_quota_in_use() {
        let decision = |capacity, remaining| Decision {
            allowed: true,
            capacity,
            remaining,
            reset_after: Duration::ZERO,
            retry_after: None,
        };
        assert_eq!(fill(&decision(10, 7)), 19_660);
        assert_eq!(fill(&decision(10, 10)), 0);
        assert_eq!(fill(&decision(10, 0)), u16::MAX);
        assert_eq!(fill(&decision(5, 4)), 13_107);
    }
}
