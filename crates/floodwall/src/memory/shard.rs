//! One shard of the memory store: a table per algorithm, sized to that algorithm's state.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use floodwall_core::Meter;
use floodwall_core::algorithm;
use hashbrown::HashTable;

/// A client key as the store keeps it, in 16 bytes whatever its length: the key itself when it
/// is shorter than 16 bytes (byte 15 holds its length), else a 120-bit keyed digest of it (byte
/// 15 holds [`DIGEST`], a value no length takes). Two short keys are the same entry only when
/// they are byte for byte the same key, whatever their hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StoredKey([u64; 2]);

/// Up to 8 bytes as a little-endian word padded with zeros, read in at most two overlapping
/// loads: the bytes two loads both cover are the same bytes, so or-ing them changes nothing.
#[inline]
fn le_word(bytes: &[u8]) -> u64 {
    let n = bytes.len();
    if let (Some(first), Some(last)) = (bytes.first_chunk::<4>(), bytes.last_chunk::<4>()) {
        return u64::from(u32::from_le_bytes(*first))
            | u64::from(u32::from_le_bytes(*last)) << (8 * (n - 4));
    }
    let byte = |i: usize| u64::from(bytes.get(i).copied().unwrap_or(0));
    match n {
        0 => 0,
        _ => byte(0) | byte(n / 2) << (8 * (n / 2)) | byte(n - 1) << (8 * (n - 1)),
    }
}

/// Byte 15 of a [`StoredKey`] that holds a digest.
pub(crate) const DIGEST: u8 = 0xff;

/// The longest client key kept as itself.
pub(crate) const INLINE_MAX: usize = 15;

impl StoredKey {
    /// `key` itself; `None` when it is longer than [`INLINE_MAX`].
    #[inline]
    pub(crate) fn inline(key: &[u8]) -> Option<StoredKey> {
        if key.len() > INLINE_MAX {
            return None;
        }
        // Built in registers: bytes copied into an array and read back as words stall the
        // read until the copy retires, a sixth of a one-key decision.
        let (low, high) = key.split_at(key.len().min(8));
        let length = (key.len() as u64) << 56;
        Some(StoredKey([le_word(low), le_word(high) | length]))
    }

    /// A key known by the first 15 bytes of its digest.
    pub(crate) fn digest(digest: [u8; 16]) -> StoredKey {
        let mut bytes = digest;
        bytes[15] = DIGEST;
        StoredKey::from_bytes(bytes)
    }

    fn from_bytes(bytes: [u8; 16]) -> StoredKey {
        let (low, high) = bytes.split_at(8);
        let word = |half: &[u8]| u64::from_le_bytes(half.try_into().unwrap_or([0; 8]));
        StoredKey([word(low), word(high)])
    }
}

/// Where a key of one policy lives: the policy's table (by name, within the algorithm's tables)
/// and the key within it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyId<'p> {
    pub(crate) policy: &'p Arc<str>,
    /// [`floodwall_core::Policy::name_hash`]: policy names are the operator's, not a client's.
    pub(crate) policy_hash: u64,
    pub(crate) key: StoredKey,
    /// The store's seeded hash of `key`: picks the shard and the bucket.
    pub(crate) hash: u64,
}

/// The hashes a shard's tables are built on: seeded per store, so that nobody outside the
/// store can aim keys at one bucket. foldhash's `quality` variant: its last multiply spreads
/// every input bit over the high bits that pick the shard. Without it (the `fast` variant),
/// about one store in 1 200 crowded sequential keys into one shard and evicted them early.
#[derive(Debug, Clone, Default)]
pub(crate) struct Hashing {
    seeded: foldhash::quality::RandomState,
    /// Every key hashes alike: what an attacker who could find collisions would achieve.
    #[cfg(test)]
    pub(crate) colliding: bool,
}

impl Hashing {
    #[inline]
    pub(crate) fn key(&self, key: StoredKey) -> u64 {
        #[cfg(test)]
        if self.colliding {
            return 0;
        }
        let mut hasher = self.seeded.build_hasher();
        hasher.write_u64(key.0[0]);
        hasher.write_u64(key.0[1]);
        hasher.finish()
    }
}

/// A tracked key: who it is, its state, when that state is back at rest, and how much of its
/// quota it had in use at its last decision. 40 bytes for a two-word state.
#[derive(Debug)]
pub(crate) struct Entry<S> {
    key: StoredKey,
    /// When `state` is back at rest, in ticks of [`TICK_US`] rounded up (the low 48 bits), and
    /// the fill (the high 16): rounding up keeps an entry at most one tick past its rest, never
    /// drops it before.
    rest_and_fill: u64,
    pub(crate) state: S,
}

/// The unit of an entry's rest time: 2^48 ticks of 32 µs reach past the clock's 2^53 µs.
const TICK_US: u64 = 32;
const TICKS: u64 = (1 << 48) - 1;

impl<S> Entry<S> {
    fn new(key: StoredKey, expires_at_us: u64, fill: u16, state: S) -> Self {
        let mut entry = Entry {
            key,
            rest_and_fill: u64::from(fill) << 48,
            state,
        };
        entry.set_expires_at_us(expires_at_us);
        entry
    }

    /// When the state is back at rest: at or up to one tick after the time last set.
    pub(crate) fn expires_at_us(&self) -> u64 {
        (self.rest_and_fill & TICKS) * TICK_US
    }

    pub(crate) fn set_expires_at_us(&mut self, at_us: u64) {
        let ticks = at_us.div_ceil(TICK_US).min(TICKS);
        self.rest_and_fill = (self.rest_and_fill & !TICKS) | ticks;
    }

    /// The share of the quota in use after the last decision, in 1/65 535ths (see [`fill`]):
    /// what evicting the entry could give back, at most, since use only decays.
    pub(crate) fn fill(&self) -> u16 {
        (self.rest_and_fill >> 48) as u16
    }

    pub(crate) fn set_fill(&mut self, fill: u16) {
        self.rest_and_fill = (self.rest_and_fill & TICKS) | (u64::from(fill) << 48);
    }

    /// Records what `decision` at `now_us` left: back at rest `ttl_us` later, with its fill.
    /// Returns whether the state is at rest already, so that the entry should go.
    pub(crate) fn record(
        &mut self,
        now_us: u64,
        ttl_us: u64,
        decision: &floodwall_core::Decision,
    ) -> bool {
        self.set_expires_at_us(now_us.saturating_add(ttl_us));
        self.set_fill(fill(decision));
        ttl_us == 0
    }
}

/// The share of its quota `decision` leaves in use, in 1/65 535ths: 65 535 for a denied or
/// exhausted key, a fifth of that after one request of five.
#[inline]
pub(crate) fn fill(decision: &floodwall_core::Decision) -> u16 {
    let used = decision.capacity.saturating_sub(decision.remaining);
    let capacity = decision.capacity.max(1);
    // In 64 bits when the product fits (every count below 2^47): a 128-bit division is a call.
    let share = match used.checked_mul(u64::from(u16::MAX)) {
        Some(product) => u128::from(product / capacity),
        None => u128::from(used) * u128::from(u16::MAX) / u128::from(capacity),
    };
    u16::try_from(share).unwrap_or(u16::MAX)
}

/// The keys one policy tracks in a shard.
#[derive(Debug)]
pub(crate) struct PolicyTable<S> {
    /// Held, so that no other name can take its address while the table lives.
    name: Arc<str>,
    name_hash: u64,
    entries: HashTable<Entry<S>>,
}

impl<S> PolicyTable<S> {
    /// Whether the table is the policy `name`'s: the same allocation (the usual case, a policy
    /// object kept for the service's life), or the same text.
    #[inline]
    fn is(&self, name: &Arc<str>) -> bool {
        Arc::ptr_eq(&self.name, name) || *self.name == **name
    }
}

/// An algorithm whose states a shard keeps in tables of their own, one per policy.
pub(crate) trait Tracked: Meter {
    fn tables(shard: &mut Shard) -> &mut HashTable<PolicyTable<Self::State>>;
}

/// The shard's tables, one set per algorithm of the registry, each sized to that algorithm's
/// state.
macro_rules! shard_tables {
    ([] $($(#[$doc:meta])* $variant:ident $module:ident,)*) => {
        $(impl Tracked for algorithm::$variant {
            fn tables(shard: &mut Shard) -> &mut HashTable<PolicyTable<Self::State>> {
                &mut shard.tables.$module
            }
        })*

        /// One set of policy tables per algorithm.
        #[derive(Debug, Default)]
        struct Tables {
            $($module: HashTable<PolicyTable<algorithm::$module::State>>,)*
        }

        impl Shard {
            /// Drops every entry `keep` refuses, given its fill and rest time; returns how many.
            /// A policy left without keys gives its table up.
            fn drop_unless(&mut self, mut keep: impl FnMut(u16, u64) -> bool) -> usize {
                let before = self.len;
                let mut expiries = Vec::with_capacity(self.len);
                let hashing = &self.hashing;
                $(self.tables.$module.retain(|table| {
                    table.entries.retain(|e| {
                        let keep = keep(e.fill(), e.expires_at_us());
                        if keep {
                            expiries.push(e.expires_at_us());
                        }
                        keep
                    });
                    if table.entries.capacity() > 4 * table.entries.len() + 64 {
                        table.entries.shrink_to(2 * table.entries.len(), |e| hashing.key(e.key));
                    }
                    !table.entries.is_empty()
                });)*
                self.len = expiries.len();
                self.earliest_expiry_us = next_sweep_worth_it(&mut expiries);
                before - self.len
            }

            /// The rank (fill, then rest time) of the `count`-th entry in eviction order (least
            /// used first, and among equals the soonest at rest; `count` ≥ 1), and how many
            /// entries rank strictly before it.
            fn eviction_rank(&mut self, count: usize) -> ((u16, u64), usize) {
                let mut ranks = Vec::with_capacity(self.len);
                $(for table in &self.tables.$module {
                    ranks.extend(table.entries.iter().map(|e| (e.fill(), e.expires_at_us())));
                })*
                let Some(last) = ranks.len().checked_sub(1) else {
                    return ((0, 0), 0);
                };
                let through = *ranks.select_nth_unstable(count.saturating_sub(1).min(last)).1;
                (through, ranks.iter().filter(|rank| **rank < through).count())
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
    hashing: Hashing,
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
    /// An empty shard whose tables hash with `hashing` (the store's, so that a key's hash picks
    /// its shard and its bucket alike).
    pub(crate) fn new(hashing: Hashing) -> Self {
        Shard {
            tables: Tables::default(),
            hashing,
            len: 0,
            earliest_expiry_us: u64::MAX,
            sweep_at_len: FIRST_SWEEP_AT_LEN,
            reclaimed: 0,
            evicted: 0,
            evicted_fill: 0,
        }
    }

    /// The keys of `id`'s policy, if it tracks any here.
    #[inline]
    fn table<M: Tracked>(&mut self, id: KeyId<'_>) -> Option<&mut HashTable<Entry<M::State>>> {
        M::tables(self)
            .find_mut(id.policy_hash, |t| t.is(id.policy))
            .map(|t| &mut t.entries)
    }

    // Always inlined: see `MemoryStore::key_id`.
    #[inline(always)]
    pub(crate) fn get_mut<M: Tracked>(&mut self, id: KeyId<'_>) -> Option<&mut Entry<M::State>> {
        self.table::<M>(id)?.find_mut(id.hash, |e| e.key == id.key)
    }

    /// Where `id`'s entry sits in its policy's table, if it is tracked. Reaching it again by
    /// [`Shard::at`] costs no second probe while nothing is inserted into that table.
    #[inline]
    pub(crate) fn position<M: Tracked>(&mut self, id: KeyId<'_>) -> Option<usize> {
        self.table::<M>(id)?
            .find_bucket_index(id.hash, |e| e.key == id.key)
    }

    /// `id`'s entry, at `position` when it is still there (nothing was inserted since), found
    /// again otherwise.
    #[inline]
    pub(crate) fn at<M: Tracked>(
        &mut self,
        position: usize,
        id: KeyId<'_>,
    ) -> Option<&mut Entry<M::State>> {
        let table = self.table::<M>(id)?;
        if table.get_bucket(position).is_some_and(|e| e.key == id.key) {
            table.get_bucket_mut(position)
        } else {
            table.find_mut(id.hash, |e| e.key == id.key)
        }
    }

    /// Tracks a new key. The caller checked that the shard has room for it.
    pub(crate) fn insert<M: Tracked>(
        &mut self,
        id: KeyId<'_>,
        expires_at_us: u64,
        fill: u16,
        state: M::State,
    ) {
        let hashing = self.hashing.clone();
        let tables = M::tables(self);
        let table = match tables.find_entry(id.policy_hash, |t| t.is(id.policy)) {
            Ok(table) => table.into_mut(),
            Err(absent) => absent
                .into_table()
                .insert_unique(
                    id.policy_hash,
                    PolicyTable {
                        name: Arc::clone(id.policy),
                        name_hash: id.policy_hash,
                        entries: HashTable::new(),
                    },
                    |t| t.name_hash,
                )
                .into_mut(),
        };
        let entry = Entry::new(id.key, expires_at_us, fill, state);
        let expires_at_us = entry.expires_at_us();
        table
            .entries
            .insert_unique(id.hash, entry, |e| hashing.key(e.key));
        self.len += 1;
        self.earliest_expiry_us = self.earliest_expiry_us.min(expires_at_us);
    }

    /// Tracks a key not tracked before, with the state `decision` at `now_us` left it in, if
    /// that state is away from rest for `ttl_us`; a state at rest is not kept. The caller made
    /// room for it.
    pub(crate) fn track_new<M: Tracked>(
        &mut self,
        id: KeyId<'_>,
        now_us: u64,
        ttl_us: u64,
        decision: &floodwall_core::Decision,
        state: M::State,
    ) {
        if ttl_us > 0 {
            self.insert::<M>(id, now_us.saturating_add(ttl_us), fill(decision), state);
        }
    }

    /// Forgets a key whose state is back at rest.
    pub(crate) fn remove_at_rest<M: Tracked>(&mut self, id: KeyId<'_>) {
        if self.remove::<M>(id) {
            self.reclaimed += 1;
        }
    }

    /// Forgets a key; returns whether it was tracked. The policy's table stays until a sweep
    /// finds it empty.
    pub(crate) fn remove<M: Tracked>(&mut self, id: KeyId<'_>) -> bool {
        let Some(table) = self.table::<M>(id) else {
            return false;
        };
        match table.find_entry(id.hash, |e| e.key == id.key) {
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
        let (through, before) = self.eviction_rank(count);
        // Entries that tie with the last one to go are taken only as far as `count`.
        let mut ties = count.saturating_sub(before);
        let evicted =
            self.drop_unless(
                |fill, expires_at_us| match (fill, expires_at_us).cmp(&through) {
                    std::cmp::Ordering::Less => false,
                    std::cmp::Ordering::Equal if ties > 0 => {
                        ties -= 1;
                        false
                    }
                    _ => true,
                },
            );
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

    /// The id of `key` under policy `policy`.
    fn id<'p>(hashing: &Hashing, policy: &'p Arc<str>, key: &[u8]) -> KeyId<'p> {
        let key = StoredKey::inline(key).unwrap();
        KeyId {
            policy,
            // Names of one length share a hash here, so that tables are told apart by name.
            policy_hash: policy.len() as u64,
            key,
            hash: hashing.key(key),
        }
    }

    /// Two keys are one entry only when they are the same key of the same policy: sharing a
    /// hash is not enough, nor is sharing the key under another policy.
    #[test]
    fn a_key_is_found_only_by_its_whole_identity() {
        let h = Hashing::default();
        let (p, q): (Arc<str>, Arc<str>) = (Arc::from("p"), Arc::from("q"));
        let mut shard = Shard::new(h.clone());
        let key = id(&h, &p, b"k");
        shard.insert::<FixedWindow>(key, u64::MAX, 0, window(1));
        assert!(shard.get_mut::<FixedWindow>(key).is_some());
        // Each with the key's hash, as if an attacker had found keys that collide with it.
        for other in [id(&h, &p, b"j"), id(&h, &q, b"k"), id(&h, &p, b"k\0")] {
            let other = KeyId {
                hash: key.hash,
                ..other
            };
            assert!(shard.get_mut::<FixedWindow>(other).is_none(), "{other:?}");
        }
    }

    /// A short key's words are its bytes in order, zero-padded, with the length in byte 15: the
    /// same for every length and every byte, whichever loads build them.
    #[test]
    fn a_short_key_is_its_own_bytes_and_its_length() {
        let source: Vec<u8> = (1..=15).map(|b| b * 17).collect();
        for len in 0..=INLINE_MAX {
            let key = &source[..len];
            let mut bytes = [0_u8; 16];
            bytes[..len].copy_from_slice(key);
            bytes[15] = len as u8;
            assert_eq!(
                StoredKey::inline(key),
                Some(StoredKey::from_bytes(bytes)),
                "{len}"
            );
        }
        assert_eq!(StoredKey::inline(&[0; 16]), None);
    }

    /// Short keys are themselves, with their length: no two short keys, and no short key and a
    /// digest, are stored alike.
    #[test]
    fn stored_keys_keep_short_keys_whole_and_mark_digests() {
        let keys: [&[u8]; 4] = [b"", b"\0", b"\0\0", b"fifteen bytes.."];
        let stored: Vec<StoredKey> = keys.iter().map(|k| StoredKey::inline(k).unwrap()).collect();
        for (i, a) in stored.iter().enumerate() {
            for b in &stored[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(StoredKey::inline(b"sixteen bytes..."), None);
        // A digest whose first 15 bytes equal a short key's bytes is still another key.
        let mut bytes = [0_u8; 16];
        bytes[..15].copy_from_slice(b"fifteen bytes..");
        assert_ne!(StoredKey::digest(bytes), stored[3]);
    }

    /// A rest time is kept rounded up to its tick, never down: an entry is never dropped before
    /// its state is at rest.
    #[test]
    fn rest_times_round_up_to_a_tick_and_keep_the_fill() {
        let mut entry = Entry::new(StoredKey([0, 0]), 100, 40_000, window(1));
        assert_eq!(entry.expires_at_us(), 128);
        entry.set_expires_at_us(128);
        assert_eq!((entry.expires_at_us(), entry.fill()), (128, 40_000));
        entry.set_fill(7);
        entry.set_expires_at_us(u64::MAX);
        assert_eq!(entry.expires_at_us(), TICKS * TICK_US);
        assert_eq!(entry.fill(), 7);
    }

    fn window(count: u64) -> fixed_window::State {
        fixed_window::State {
            window_start_us: 0,
            count,
        }
    }

    /// A sweep drops exactly the entries at rest by now (expiring at or before it), counts
    /// them as reclaimed, and keeps the others with their fill; a policy left without keys
    /// gives its table up.
    #[test]
    fn a_sweep_drops_exactly_the_entries_at_rest() {
        let h = Hashing::default();
        let (p, q): (Arc<str>, Arc<str>) = (Arc::from("p"), Arc::from("q"));
        let mut shard = Shard::new(h.clone());
        for (key, expires_at_us) in [(b"1", 96), (b"2", 128), (b"3", 200)] {
            shard.insert::<FixedWindow>(id(&h, &p, key), expires_at_us, 40_000, window(1));
        }
        shard.insert::<FixedWindow>(id(&h, &q, b"1"), 64, 0, window(1));
        shard.sweep(100);
        assert_eq!((shard.len, shard.reclaimed), (2, 2));
        assert_eq!(shard.tables.fixed_window.len(), 1);
        assert!(shard.get_mut::<FixedWindow>(id(&h, &p, b"1")).is_none());
        let kept = shard.get_mut::<FixedWindow>(id(&h, &p, b"2"));
        assert_eq!(kept.map(|e| e.fill()), Some(40_000));
        // A key forgotten because its state came back to rest is reclaimed too.
        shard.remove_at_rest::<FixedWindow>(id(&h, &p, b"3"));
        assert_eq!((shard.len, shard.reclaimed), (1, 3));
    }

    /// Eviction makes room for exactly the keys asked for, taking the least used first: the
    /// fill recorded when a key was inserted decides, and what was evicted is reported.
    #[test]
    fn eviction_takes_the_least_used_and_only_as_many_as_needed() {
        let h = Hashing::default();
        let p: Arc<str> = Arc::from("p");
        let mut shard = Shard::new(h.clone());
        let fills = [60_000, 5_000, 30_000, 10_000];
        for (key, fill) in [b"1", b"2", b"3", b"4"].into_iter().zip(fills) {
            shard.insert::<FixedWindow>(id(&h, &p, key), 1_024, fill, window(1));
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
        for (key, tracked) in [(b"1", true), (b"2", false), (b"3", true), (b"4", false)] {
            let found = shard.get_mut::<FixedWindow>(id(&h, &p, key)).is_some();
            assert_eq!(found, tracked, "{key:?}");
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
            debt: 0,
        };
        assert_eq!(fill(&decision(10, 7)), 19_660);
        assert_eq!(fill(&decision(10, 10)), 0);
        assert_eq!(fill(&decision(10, 0)), u16::MAX);
        assert_eq!(fill(&decision(5, 4)), 13_107);
        // Counts whose product with 65 535 passes 2^64 take the wide path, to the same share.
        assert_eq!(fill(&decision(u64::MAX, u64::MAX / 2)), 32_767);
        assert_eq!(fill(&decision(1 << 50, 0)), u16::MAX);
    }
}
