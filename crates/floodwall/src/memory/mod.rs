//! The embedded store: sharded, exact per key, bounded by `max_keys`.

mod builder;
mod quota;
mod records;
mod shard;
#[cfg(test)]
mod tests;

use std::hash::Hasher;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use floodwall_core::algorithm::{Evaluation, debit_in_place, refund_in_place, release_in_place};
use floodwall_core::{Algorithm, Clock, Decision, Holder, Mode, Policy, SystemClock, with_meter};
use siphasher::sip128::{Hasher128, SipHasher13};
use smallvec::SmallVec;

pub use self::builder::MemoryStoreBuilder;
use self::shard::{Hashing, KeyId, Shard, StoredKey, Tracked};
use crate::error::StoreError;
use crate::store::Answer;
use crate::store::Store;
use crate::store::{Charge, Check};

/// The default bound on tracked keys.
pub const DEFAULT_MAX_KEYS: usize = 1_000_000;

/// An in-process store: exact under concurrency, bounded whatever keys clients send.
///
/// - **Exact**: each key lives in one of several mutex-guarded shards; a decision over several
///   policies locks their shards in index order, evaluates every policy, and writes only if all
///   enforced policies admit. No interleaving of threads or tasks over-admits.
/// - **Bounded**: at most `max_keys` keys are tracked (split evenly across shards, so a shard may
///   fill slightly before the store does). Per-key memory does not depend on the client key: a
///   key shorter than 16 bytes is kept as itself, a longer one as a 120-bit digest under a
///   secret of the store (SipHash-1-3), so clients cannot make entries large. Keys are placed
///   by a hash seeded per store, so clients cannot aim at a shard or a bucket; and since short
///   keys are compared whole, two of them never share state whatever their hashes. Two long
///   keys share state only if their keyed digests collide (about 2^-120 per pair, and not
///   something a client can aim at without the secret).
/// - **Reclaimed**: a key back at its full quota is dropped when a request finds it so, and
///   shards sweep keys at rest as they grow or fill, without any caller asking.
/// - **Full means evicting the least used keys, never refusing**: a new key always gets its
///   exact limit. When a shard is full even after sweeping keys at rest, the entries with the
///   smallest share of their quota in use at their last decision are evicted, the soonest at
///   rest first among equals (at least the room needed, and a sixteenth of the shard, so a
///   flood costs amortised O(1) per key); counted in [`MemoryStats::evicted`]. The bound on what
///   an eviction gives back: a key evicted with a share `f` of its quota in use regains at most
///   `f` of its capacity (use only decays after a decision), and every key kept in its shard
///   had at least `f` in use ([`MemoryStats::evicted_most_used`] is the largest `f` so far). A
///   flood of one-request keys is therefore evicted before any client that is actually being
///   limited: a denied or exhausted key (all of its quota in use) goes only once its shard holds
///   nothing else.
///
/// Clones share the same state.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shards: Box<[Padded]>,
    /// `shards.len() - 1`; the shard count is a power of two.
    shard_mask: usize,
    per_shard_max: usize,
    max_keys: usize,
    clock: Arc<dyn Clock>,
    hashing: Hashing,
    /// The secret of the digests that stand for long keys.
    digest_key: (u64, u64),
    /// Shares of rates among proxies (RLQS), apart from the decisions' state.
    quotas: quota::Quotas,
    /// One-time records (kept reservations), apart from the decisions' state.
    records: records::Records,
}

/// One shard on its own cache lines, so threads on different shards do not contend for one.
#[derive(Debug)]
#[repr(align(128))]
struct Padded(Mutex<Shard>);

/// Counters of a [`MemoryStore`], summed over its shards.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub struct MemoryStats {
    /// Keys tracked now.
    pub keys: usize,
    /// The bound on tracked keys.
    pub max_keys: usize,
    /// Keys dropped because they were back at rest.
    pub reclaimed: u64,
    /// Keys evicted to make room for new ones in a full shard, least used first.
    pub evicted: u64,
    /// The largest share of its quota (0.0 to 1.0) that an evicted key had in use at its last
    /// decision: what any eviction has given back, at most, as a share of that key's capacity.
    /// 0.0 while nothing was evicted.
    pub evicted_most_used: f64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// A store of at most [`DEFAULT_MAX_KEYS`] keys on the system clock.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder for the bound, shard count and clock.
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder {
            max_keys: DEFAULT_MAX_KEYS,
            shards: None,
            clock: Arc::new(SystemClock::new()),
            #[cfg(test)]
            colliding: false,
        }
    }

    /// The store's clock, in microseconds since the Unix epoch.
    pub fn now_us(&self) -> u64 {
        self.inner.clock.now_us()
    }

    /// The clock the store decides by.
    pub(crate) fn clock(&self) -> Arc<dyn Clock> {
        Arc::clone(&self.inner.clock)
    }

    /// Sums the shards' counters; locks each shard briefly.
    pub fn stats(&self) -> MemoryStats {
        let mut stats = MemoryStats {
            max_keys: self.inner.max_keys,
            ..MemoryStats::default()
        };
        for index in 0..self.inner.shards.len() {
            let shard = self.lock(index);
            stats.keys += shard.len;
            stats.reclaimed += shard.reclaimed;
            stats.evicted += shard.evicted;
            stats.evicted_most_used = stats
                .evicted_most_used
                .max(f64::from(shard.evicted_fill) / f64::from(u16::MAX));
        }
        stats
    }

    /// [`Store::decide`] without a future: the memory store never waits on anything but a
    /// shard's mutex, and never fails: a full shard makes room by evicting the entries closest
    /// to rest (see [`MemoryStore`]).
    pub fn decide_sync(&self, check: &Check<'_>) -> Answer {
        if let [(policy, key)] = check.pairs() {
            let cost = check.cost_of(0);
            let holder = check.holder();
            return with_meter!(policy.algorithm(), M => self.acquire_one::<M>(policy, key, cost, holder));
        }
        // Containers are filled by pushes, not collected through iterator adapters: this is every
        // request's path, and the adapters cost more than the loops.
        let mut judged: SmallVec<[Judged<'_>; 2]> = SmallVec::new();
        for (policy, key) in check.pairs() {
            judged.push(Judged::of(self.key_id(policy, key)));
        }
        let mut locked = self.lock_all(&mut judged);
        // The clock is read under the locks, so decisions on one key are time-ordered.
        let now = self.inner.clock.now_us();
        let cap = self.inner.per_shard_max;
        // Room is made before judging, so no entry vanishes between judging and concluding. The
        // check's cost is its largest pair's: above 0, something may be stored.
        if check.cost() > 0 {
            locked.make_room(check, &judged, now, cap);
        }

        // Phase 1: judge every pair, catching tracked keys up in place; nothing is consumed yet.
        for (i, ((policy, _), judged)) in check.pairs().iter().zip(&mut judged).enumerate() {
            let shard = locked.shard(judged);
            let cost = check.cost_of(i);
            with_meter!(policy.algorithm(), M => judge::<M>(shard, judged, now, cost, policy));
        }
        let allowed = check
            .policies()
            .zip(&judged)
            .all(|(policy, judged)| policy.mode() == Mode::Shadow || judged.evaluation.allowed);

        // Phase 2: consume where admitted if everything enforced admitted, and report. A pair of
        // cost 0 consumes nothing whatever `allowed` says.
        let mut decisions = SmallVec::new();
        for (i, ((policy, _), judged)) in check.pairs().iter().zip(&judged).enumerate() {
            let shard = locked.shard(judged);
            let cost = check.cost_of(i);
            let held = Held {
                commit: allowed,
                holder: check.holder(),
            };
            decisions.push(with_meter!(policy.algorithm(), M => conclude::<M>(shard, judged, now, cost, policy, held)));
        }
        Answer::from_store(allowed, decisions)
    }

    /// [`MemoryStore::decide_sync`] of one policy and one key, the common case: one lock and
    /// one probe, the same decision as the general path.
    fn acquire_one<M: Tracked>(
        &self,
        policy: &Policy,
        key: &[u8],
        cost: u64,
        holder: Holder,
    ) -> Answer {
        let id = self.key_id(policy, key);
        let mut shard = self.lock(self.shard_of(id));
        // Under the lock, as in the general path.
        let now = self.inner.clock.now_us();
        let cap = self.inner.per_shard_max;
        if cost > 0 && shard.sweep_due(1, cap) {
            shard.sweep(now);
            // Room for the key if it is new; evict_least_used evicts only from a full shard.
            if shard.position::<M>(id).is_none() {
                shard.evict_least_used(1, cap);
            }
        }
        if let Some(entry) = shard.get_mut::<M>(id) {
            let (allowed, decision, ttl_us) =
                decide_alone::<M>(&mut entry.state, now, cost, policy, holder);
            if entry.record(now, ttl_us, &decision) {
                shard.remove_at_rest::<M>(id);
            }
            return Answer::from_store(allowed, smallvec::smallvec![decision]);
        }
        let mut state = M::fresh(now, policy);
        let (allowed, decision, ttl_us) = decide_alone::<M>(&mut state, now, cost, policy, holder);
        shard.track_new::<M>(id, now, ttl_us, &decision, state);
        Answer::from_store(allowed, smallvec::smallvec![decision])
    }

    /// [`Store::refund`] without a future.
    pub fn refund_sync(&self, check: &Check<'_>) -> Answer {
        self.adjust_sync(check, Adjustment::Refund)
    }

    /// [`Store::debit`] without a future.
    pub fn debit_sync(&self, charge: &Charge<'_>) -> Answer {
        self.adjust_sync(charge.as_check(), Adjustment::Debit)
    }

    /// Each pair's cost given back or charged, under its shard's lock: never denied.
    fn adjust_sync(&self, check: &Check<'_>, adjustment: Adjustment) -> Answer {
        let mut decisions: SmallVec<[Decision; 2]> = SmallVec::new();
        for (i, (policy, key)) in check.pairs().iter().enumerate() {
            let id = self.key_id(policy, key);
            let mut shard = self.lock(self.shard_of(id));
            let now = self.inner.clock.now_us();
            let cost = check.cost_of(i);
            decisions.push(with_meter!(policy.algorithm(), M => {
                let step = match adjustment {
                    Adjustment::Refund => refund_in_place::<M>,
                    Adjustment::Debit => debit_in_place::<M>,
                };
                adjust::<M>(&mut shard, id, now, cost, policy, step)
            }));
        }
        Answer::from_store(true, decisions)
    }

    /// [`Store::release`] without a future.
    pub fn release_sync(&self, check: &Check<'_>) {
        let holder = check.holder();
        for (policy, key) in check.pairs() {
            if policy.algorithm() != Algorithm::Concurrency {
                continue;
            }
            let id = self.key_id(policy, key);
            let mut shard = self.lock(self.shard_of(id));
            let now = self.inner.clock.now_us();
            with_meter!(policy.algorithm(), M => release::<M>(&mut shard, id, now, holder, policy));
        }
    }

    /// [`Store::reset`] without a future.
    pub fn reset_sync(&self, check: &Check<'_>) {
        for (policy, key) in check.pairs() {
            let id = self.key_id(policy, key);
            let mut shard = self.lock(self.shard_of(id));
            with_meter!(policy.algorithm(), M => { shard.remove::<M>(id); });
        }
    }

    /// Where `key` of `policy` lives. A key shorter than 16 bytes is kept as itself, so no two
    /// keys can share state whatever their hashes; a longer one is kept as a 120-bit digest under
    /// the store's secret, which nobody without the secret can aim at another key's.
    // Always inlined, as the probe and the evaluation are: as calls, the three cost a fifth of
    // a decision (measured on the memory bench).
    #[inline(always)]
    fn key_id<'p>(&self, policy: &'p Policy, key: &[u8]) -> KeyId<'p> {
        let stored = StoredKey::inline(key).unwrap_or_else(|| {
            let (k0, k1) = self.inner.digest_key;
            let mut hasher = SipHasher13::new_with_keys(k0, k1);
            hasher.write(key);
            StoredKey::digest(hasher.finish128().as_bytes())
        });
        let hashing = &self.inner.hashing;
        KeyId {
            policy: policy.shared_name(),
            policy_hash: policy.name_hash(),
            key: stored,
            hash: hashing.key(stored),
        }
    }

    /// The shard of `id`: bits of the hash that the tables' buckets (its low bits) and their
    /// tags (its top seven) do not use, so a shard's keys still spread over its buckets.
    fn shard_of(&self, id: KeyId<'_>) -> usize {
        ((id.hash >> 32) as usize) & self.inner.shard_mask
    }

    fn lock(&self, index: usize) -> MutexGuard<'_, Shard> {
        // A panic while holding a shard cannot leave it half-written (every write is one
        // assignment after the decision), so a poisoned lock is safe to keep using.
        self.inner.shards[index]
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Locks the shards of `ids` in ascending index order, so that concurrent multi-key calls
    /// cannot deadlock.
    /// Each pair learns which of the locked shards holds its key.
    fn lock_all(&self, pairs: &mut [Judged]) -> Locked<'_> {
        let mut guards = SmallVec::new();
        // One pair: one shard, nothing to order, and slot 0 is already the pair's.
        if let [pair] = pairs {
            guards.push(self.lock(self.shard_of(pair.id)));
            return Locked { guards };
        }
        let mut order: SmallVec<[usize; 2]> = SmallVec::new();
        for pair in pairs.iter() {
            order.push(self.shard_of(pair.id));
        }
        order.sort_unstable();
        order.dedup();
        // With one shard locked every pair is in it, and slot 0 is already each pair's.
        if order.len() > 1 {
            for pair in pairs.iter_mut() {
                let index = self.shard_of(pair.id);
                pair.slot = order.iter().position(|&i| i == index).unwrap_or(0);
            }
        }
        for &index in &order {
            guards.push(self.lock(index));
        }
        Locked { guards }
    }
}

/// One policy deciding alone: it consumes whenever it admits, and a shadow one that would deny
/// is answered allowed. Returns whether it admits, its decision and the state's time to rest.
// Inlined into both callers: a call returning the decision through memory stalls the caller's
// first read of it, a seventh of a one-key decision.
#[inline(always)]
fn decide_alone<M: Tracked>(
    state: &mut M::State,
    now_us: u64,
    cost: u64,
    policy: &Policy,
    holder: Holder,
) -> (bool, Decision, u64) {
    let evaluation = Evaluation::of::<M>(state, now_us, cost, policy);
    let allowed = policy.mode() == Mode::Shadow || evaluation.allowed;
    let (decision, ttl_us) =
        evaluation.conclude_held::<M>(state, now_us, cost, policy, allowed, holder);
    (allowed, decision, ttl_us)
}

/// The locked shards of one decision, in ascending index order.
struct Locked<'a> {
    guards: SmallVec<[MutexGuard<'a, Shard>; 2]>,
}

impl Locked<'_> {
    /// The locked shard holding `pair`'s key.
    #[inline]
    fn shard(&mut self, pair: &Judged) -> &mut Shard {
        &mut self.guards[pair.slot]
    }

    /// Makes room, in each shard the keys of `pairs` may grow past `cap`, for every key of
    /// `pairs`: keys at rest are swept first, and if the keys not yet tracked still do not fit,
    /// the entries closest to rest are evicted.
    fn make_room(&mut self, check: &Check<'_>, pairs: &[Judged], now_us: u64, cap: usize) {
        let one_shard = self.guards.len() == 1;
        for (slot, shard) in self.guards.iter_mut().enumerate() {
            let incoming = match one_shard {
                true => pairs.len(),
                false => pairs.iter().filter(|p| p.slot == slot).count(),
            };
            if !shard.sweep_due(incoming, cap) {
                continue;
            }
            shard.sweep(now_us);
            if shard.len + incoming <= cap {
                continue;
            }
            let mut new_keys = 0;
            for ((policy, _), pair) in check.pairs().iter().zip(pairs) {
                if pair.slot == slot
                    && with_meter!(policy.algorithm(), M => shard.position::<M>(pair.id)).is_none()
                {
                    new_keys += 1;
                }
            }
            if shard.len + new_keys > cap {
                // Room for every incoming key, tracked or not: one evicted here comes back new.
                shard.evict_least_used(incoming, cap);
            }
        }
    }
}

/// One pair of a decision: its key, where the key sits in its table if tracked, and the
/// judgement of phase 1.
#[derive(Debug, Clone, Copy)]
struct Judged<'p> {
    id: KeyId<'p>,
    /// Which of the decision's locked shards holds the key.
    slot: usize,
    position: Option<usize>,
    evaluation: Evaluation,
}

impl<'p> Judged<'p> {
    fn of(id: KeyId<'p>) -> Self {
        Judged {
            id,
            slot: 0,
            position: None,
            evaluation: Evaluation {
                remaining: 0,
                allowed: false,
            },
        }
    }
}

/// Judges a request of `cost` against the key's state, caught up in place when tracked.
#[inline]
fn judge<M: Tracked>(
    shard: &mut Shard,
    judged: &mut Judged,
    now_us: u64,
    cost: u64,
    policy: &Policy,
) {
    let id = judged.id;
    judged.position = shard.position::<M>(id);
    judged.evaluation = match judged.position.and_then(|p| shard.at::<M>(p, id)) {
        Some(entry) => Evaluation::of::<M>(&mut entry.state, now_us, cost, policy),
        None => Evaluation::of::<M>(&mut M::fresh(now_us, policy), now_us, cost, policy),
    };
}

/// Whether a judged pair consumes, and for whom.
#[derive(Debug, Clone, Copy)]
struct Held {
    commit: bool,
    holder: Holder,
}

/// Finishes a judged pair: consumes (held by `held.holder`) if `held.commit`, stores or forgets
/// the state, and reports. A position that an earlier pair's insert moved is found again by
/// [`Shard::at`].
#[inline]
fn conclude<M: Tracked>(
    shard: &mut Shard,
    judged: &Judged,
    now_us: u64,
    cost: u64,
    policy: &Policy,
    held: Held,
) -> Decision {
    let (id, evaluation) = (judged.id, judged.evaluation);
    let Held { commit, holder } = held;
    if let Some(entry) = judged.position.and_then(|p| shard.at::<M>(p, id)) {
        let (decision, ttl_us) =
            evaluation.conclude_held::<M>(&mut entry.state, now_us, cost, policy, commit, holder);
        if entry.record(now_us, ttl_us, &decision) {
            shard.remove_at_rest::<M>(id);
        }
        return decision;
    }
    let mut state = M::fresh(now_us, policy);
    let (decision, ttl_us) =
        evaluation.conclude_held::<M>(&mut state, now_us, cost, policy, commit, holder);
    // Only a committed consumption leaves a fresh key away from rest; room was made.
    shard.track_new::<M>(id, now_us, ttl_us, &decision, state);
    decision
}

/// What [`MemoryStore::adjust_sync`] does to each pair.
#[derive(Debug, Clone, Copy)]
enum Adjustment {
    Refund,
    Debit,
}

/// Gives back (`refund_in_place`) or charges (`debit_in_place`) `cost` units of the key's
/// state: `adjust` is one of them. The state is kept only while away from rest, so a refund of
/// a key not tracked (at rest: nothing to give back) tracks nothing, and a charge tracks it.
fn adjust<M: Tracked>(
    shard: &mut Shard,
    id: KeyId<'_>,
    now_us: u64,
    cost: u64,
    policy: &Policy,
    adjust: fn(&mut M::State, u64, u64, &Policy) -> (Decision, u64),
) -> Decision {
    if let Some(entry) = shard.get_mut::<M>(id) {
        let (decision, ttl_us) = adjust(&mut entry.state, now_us, cost, policy);
        if entry.record(now_us, ttl_us, &decision) {
            shard.remove_at_rest::<M>(id);
        }
        return decision;
    }
    let mut state = M::fresh(now_us, policy);
    let (decision, ttl_us) = adjust(&mut state, now_us, cost, policy);
    shard.track_new::<M>(id, now_us, ttl_us, &decision, state);
    decision
}

/// Gives back what `holder` holds of the key's state, forgetting it once nothing is held.
fn release<M: Tracked>(
    shard: &mut Shard,
    id: KeyId<'_>,
    now_us: u64,
    holder: Holder,
    policy: &Policy,
) {
    let Some(entry) = shard.get_mut::<M>(id) else {
        return;
    };
    let (after, ttl_us) = release_in_place::<M>(&mut entry.state, now_us, holder, policy);
    if entry.record(now_us, ttl_us, &after) {
        shard.remove_at_rest::<M>(id);
    }
}

impl Store for MemoryStore {
    async fn decide(&self, check: &Check<'_>) -> Result<Answer, StoreError> {
        Ok(self.decide_sync(check))
    }

    async fn refund(&self, check: &Check<'_>) -> Result<Answer, StoreError> {
        Ok(self.refund_sync(check))
    }

    async fn debit(&self, charge: &Charge<'_>) -> Result<Answer, StoreError> {
        Ok(self.debit_sync(charge))
    }

    async fn reset(&self, check: &Check<'_>) -> Result<(), StoreError> {
        self.reset_sync(check);
        Ok(())
    }

    async fn release(&self, check: &Check<'_>) -> Result<(), StoreError> {
        self.release_sync(check);
        Ok(())
    }

    fn release_in_place(&self, check: &Check<'_>) -> bool {
        self.release_sync(check);
        true
    }

    fn clock(&self) -> Arc<dyn Clock> {
        MemoryStore::clock(self)
    }
}
