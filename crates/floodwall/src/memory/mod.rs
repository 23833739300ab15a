//! The embedded store: sharded, exact per key, bounded by `max_keys`.

mod shard;

use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use floodwall_core::algorithm::{
    Evaluation, FixedWindow, Gcra, SlidingLog, SlidingWindow, TokenBucket, check_cost,
};
use floodwall_core::{Algorithm, Clock, Decision, Mode, Policy, SystemClock};
use siphasher::sip128::{Hasher128, SipHasher13};
use smallvec::SmallVec;

use self::shard::{KeyId, Shard, Tracked};
use crate::error::StoreError;
use crate::store::Store;
use crate::verdict::{Verdict, verdict};

/// The default bound on tracked keys.
pub const DEFAULT_MAX_KEYS: usize = 1_000_000;

/// Runs `$body` with `$meter` bound to the `Meter` type of `$algorithm`. The `Algorithm`
/// variants and the `Meter` types share their names, so one arm shape serves all five.
macro_rules! with_meter {
    ($algorithm:expr, $meter:ident => $body:expr) => {
        with_meter!(@arms $algorithm, $meter, $body,
            FixedWindow SlidingLog SlidingWindow TokenBucket Gcra)
    };
    (@arms $algorithm:expr, $meter:ident, $body:expr, $($variant:ident)*) => {
        match $algorithm {
            $(Algorithm::$variant => {
                type $meter = $variant;
                $body
            })*
        }
    };
}

/// An in-process store: exact under concurrency, bounded whatever keys clients send.
///
/// - **Exact**: each key lives in one of several mutex-guarded shards; a decision over several
///   policies locks their shards in index order, evaluates every policy, and writes only if all
///   enforced policies admit. No interleaving of threads or tasks over-admits.
/// - **Bounded**: at most `max_keys` keys are tracked (split evenly across shards, so a shard may
///   fill slightly before the store does). Per-key memory does not depend on the client key: a
///   key is identified by a 128-bit keyed hash of (policy, client key), secret per store, so
///   clients can neither make keys large nor aim at a shard, and two keys share state with
///   negligible probability (about 2^-128 per pair).
/// - **Reclaimed**: a key back at its full quota is dropped when a request finds it so, and
///   shards sweep keys at rest as they grow or fill, without any caller asking.
/// - **Never evicts a restricting key**: when a shard is full of keys whose state still limits a
///   client, a *new* key is refused with [`StoreError::Full`] (counted in
///   [`MemoryStats::refused`]) rather than evicting one; the limiter's `on_error` decides the
///   refused request. Flooding new keys therefore never gives a denied client a fresh quota
///   (RELIABILITY F2).
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
    hash_key: (u64, u64),
}

/// One shard on its own cache lines, so threads on different shards do not contend for one.
#[derive(Debug)]
#[repr(align(128))]
struct Padded(Mutex<Shard>);

/// Counters of a [`MemoryStore`], summed over its shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct MemoryStats {
    /// Keys tracked now.
    pub keys: usize,
    /// The bound on tracked keys.
    pub max_keys: usize,
    /// Keys dropped because they were back at rest.
    pub reclaimed: u64,
    /// New keys not tracked because the store was full of keys still restricting clients.
    pub refused: u64,
}

/// Builds a [`MemoryStore`].
#[derive(Debug)]
pub struct MemoryStoreBuilder {
    max_keys: usize,
    shards: Option<usize>,
    clock: Arc<dyn Clock>,
}

impl MemoryStoreBuilder {
    /// The most keys tracked at once (default [`DEFAULT_MAX_KEYS`]; at least 1).
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

    /// The clock (default [`SystemClock`]). Tests pass a `ManualClock`.
    #[must_use]
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Builds the store.
    pub fn build(self) -> MemoryStore {
        let wanted = self.shards.unwrap_or_else(|| {
            let cpus = std::thread::available_parallelism().map_or(1, usize::from);
            // Small bounds get fewer shards so each holds a useful share of the keys.
            (cpus * 32).clamp(64, 1024).min(self.max_keys / 256)
        });
        let shards = prev_power_of_two(wanted.clamp(1, self.max_keys));
        let random = std::collections::hash_map::RandomState::new();
        MemoryStore {
            inner: Arc::new(Inner {
                shards: (0..shards)
                    .map(|_| Padded(Mutex::new(Shard::new())))
                    .collect(),
                shard_mask: shards - 1,
                per_shard_max: self.max_keys / shards,
                max_keys: self.max_keys,
                clock: self.clock,
                // Secret per store, from the OS-seeded keys of std's RandomState.
                hash_key: (random.hash_one(0x5eed_u64), random.hash_one(0xf00d_u64)),
            }),
        }
    }
}

fn prev_power_of_two(n: usize) -> usize {
    if n.is_power_of_two() {
        n
    } else {
        n.next_power_of_two() / 2
    }
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
        }
    }

    /// The store's clock, in microseconds since the Unix epoch.
    pub fn now_us(&self) -> u64 {
        self.inner.clock.now_us()
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
            stats.refused += shard.refused;
        }
        stats
    }

    /// [`Store::acquire`] without a future: the memory store never waits on anything but a
    /// shard's mutex.
    ///
    /// # Errors
    ///
    /// [`StoreError::Cost`] when a policy can never admit `cost`; [`StoreError::Full`] when the
    /// request would be admitted but its key cannot be tracked.
    pub fn acquire_sync(
        &self,
        policies: &[Policy],
        key: &[u8],
        cost: u64,
    ) -> Result<Verdict, StoreError> {
        self.decide(policies, key, cost, true)
    }

    /// [`Store::peek`] without a future.
    ///
    /// # Errors
    ///
    /// As [`MemoryStore::acquire_sync`], never [`StoreError::Full`].
    pub fn peek_sync(&self, policies: &[Policy], key: &[u8]) -> Result<Verdict, StoreError> {
        self.decide(policies, key, 0, false)
    }

    /// [`Store::reset`] without a future.
    pub fn reset_sync(&self, policies: &[Policy], key: &[u8]) {
        for policy in policies {
            let id = self.key_id(policy, key);
            let mut shard = self.lock(self.shard_of(id));
            with_meter!(policy.algorithm(), M => { shard.remove::<M>(id); });
        }
    }

    fn key_id(&self, policy: &Policy, key: &[u8]) -> KeyId {
        let (k0, k1) = self.inner.hash_key;
        let mut hasher = SipHasher13::new_with_keys(k0, k1);
        // Length-prefixed name and algorithm, client key last: no two inputs share an encoding.
        // Gathered into one buffer because SipHash absorbs one long write about twice as fast as
        // several short ones.
        let name = policy.name().as_bytes();
        let algorithm = policy.algorithm().as_str().as_bytes();
        let mut buffer = [0u8; 160];
        let prefix_len = 2 + name.len() + algorithm.len(); // names are at most 64 bytes
        buffer[0] = name.len() as u8;
        buffer[1..1 + name.len()].copy_from_slice(name);
        buffer[1 + name.len()] = algorithm.len() as u8;
        buffer[2 + name.len()..prefix_len].copy_from_slice(algorithm);
        if let Some(room) = buffer.get_mut(prefix_len..prefix_len + key.len()) {
            room.copy_from_slice(key);
            hasher.write(&buffer[..prefix_len + key.len()]);
        } else {
            hasher.write(&buffer[..prefix_len]);
            hasher.write(key);
        }
        let hash = hasher.finish128();
        KeyId {
            low: hash.h1,
            high: hash.h2,
        }
    }

    fn shard_of(&self, id: KeyId) -> usize {
        (id.high as usize) & self.inner.shard_mask
    }

    fn lock(&self, index: usize) -> MutexGuard<'_, Shard> {
        // A panic while holding a shard cannot leave it half-written (every write is one
        // assignment after the decision), so a poisoned lock is safe to keep using.
        self.inner.shards[index]
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Decides `policies` for `key` all-or-nothing under their shards' locks.
    fn decide(
        &self,
        policies: &[Policy],
        key: &[u8],
        cost: u64,
        may_commit: bool,
    ) -> Result<Verdict, StoreError> {
        for policy in policies {
            check_cost(policy, cost)?;
        }
        if let [policy] = policies {
            return self.decide_one(policy, key, cost, may_commit);
        }
        let ids: SmallVec<[KeyId; 2]> = policies.iter().map(|p| self.key_id(p, key)).collect();
        let mut order: SmallVec<[usize; 2]> = ids.iter().map(|&id| self.shard_of(id)).collect();
        order.sort_unstable();
        order.dedup();
        // Locks are taken in ascending shard order, so concurrent multi-policy calls cannot
        // deadlock; the clock is read under them, so decisions on one key are time-ordered.
        let mut guards: SmallVec<[MutexGuard<'_, Shard>; 2]> =
            order.iter().map(|&index| self.lock(index)).collect();
        let now = self.inner.clock.now_us();
        let slot = |id: KeyId| {
            order
                .iter()
                .position(|&i| i == self.shard_of(id))
                .unwrap_or(0)
        };
        let consumes = may_commit && cost > 0;

        // Make room before evaluating, so no entry vanishes between evaluation and commit.
        if consumes {
            for (g, shard) in guards.iter_mut().enumerate() {
                let here = ids.iter().filter(|&&id| slot(id) == g).count();
                shard.sweep_if_due(now, here, self.inner.per_shard_max);
            }
        }

        // Evaluate every policy; nothing is consumed yet.
        let mut evaluations: SmallVec<[Evaluation; 2]> = SmallVec::new();
        let mut new_keys: SmallVec<[usize; 2]> = SmallVec::from_elem(0, guards.len());
        for (policy, &id) in policies.iter().zip(&ids) {
            let g = slot(id);
            let shard = &mut guards[g];
            let (evaluation, tracked) =
                with_meter!(policy.algorithm(), M => evaluate::<M>(shard, id, now, cost, policy));
            if !tracked && evaluation.allowed && consumes {
                new_keys[g] += 1;
            }
            evaluations.push(evaluation);
        }
        let allowed = policies
            .iter()
            .zip(&evaluations)
            .all(|(p, e)| p.mode() == Mode::Shadow || e.allowed);
        let commit = allowed && consumes;
        if commit {
            for (g, shard) in guards.iter_mut().enumerate() {
                if shard.len + new_keys[g] > self.inner.per_shard_max {
                    shard.refused += 1;
                    return Err(StoreError::Full {
                        max_keys: self.inner.max_keys,
                    });
                }
            }
        }

        // Conclude: consume where admitted if everything enforced admitted.
        let mut decisions: SmallVec<[Decision; 2]> = SmallVec::new();
        for ((policy, &id), evaluation) in policies.iter().zip(&ids).zip(evaluations) {
            let shard = &mut guards[slot(id)];
            let decision = with_meter!(policy.algorithm(), M => conclude::<M>(shard, id, now, cost, policy, evaluation, commit));
            decisions.push(decision);
        }
        drop(guards);
        Ok(verdict(policies, decisions, allowed))
    }
}

impl MemoryStore {
    /// [`MemoryStore::decide`] for one policy: one lock, one table lookup for a tracked key.
    fn decide_one(
        &self,
        policy: &Policy,
        key: &[u8],
        cost: u64,
        may_commit: bool,
    ) -> Result<Verdict, StoreError> {
        let id = self.key_id(policy, key);
        let mut shard = self.lock(self.shard_of(id));
        let now = self.inner.clock.now_us();
        let consumes = may_commit && cost > 0;
        let cap = self.inner.per_shard_max;
        if consumes {
            shard.sweep_if_due(now, 1, cap);
        }
        let (decision, allowed) = with_meter!(policy.algorithm(), M => decide_single::<M>(&mut shard, id, now, cost, policy, consumes, cap))
            .ok_or(StoreError::Full { max_keys: self.inner.max_keys })?;
        drop(shard);
        let mut decisions = SmallVec::new();
        decisions.push(decision);
        Ok(verdict(std::slice::from_ref(policy), decisions, allowed))
    }
}

/// Decides one policy for one key in its locked shard; `None` when an admission needs a new
/// key and the shard is full (counted as refused).
fn decide_single<M: Tracked>(
    shard: &mut Shard,
    id: KeyId,
    now_us: u64,
    cost: u64,
    policy: &Policy,
    consumes: bool,
    cap: usize,
) -> Option<(Decision, bool)> {
    let shadow = policy.mode() == Mode::Shadow;
    if let Some(entry) = shard.get_mut::<M>(id) {
        let evaluation = Evaluation::of::<M>(&mut entry.state, now_us, cost, policy);
        let allowed = evaluation.allowed || shadow;
        let (decision, ttl_us) =
            evaluation.conclude::<M>(&mut entry.state, now_us, cost, policy, allowed && consumes);
        entry.expires_at_us = now_us + ttl_us;
        if ttl_us == 0 {
            shard.remove_at_rest::<M>(id);
        }
        return Some((decision, allowed));
    }
    let mut state = M::fresh(now_us, policy);
    let evaluation = Evaluation::of::<M>(&mut state, now_us, cost, policy);
    let allowed = evaluation.allowed || shadow;
    if allowed && consumes && evaluation.allowed && shard.len >= cap {
        shard.refused += 1;
        return None;
    }
    let (decision, ttl_us) =
        evaluation.conclude::<M>(&mut state, now_us, cost, policy, allowed && consumes);
    if ttl_us > 0 {
        shard.insert::<M>(id, now_us + ttl_us, state);
    }
    Some((decision, allowed))
}

fn evaluate<M: Tracked>(
    shard: &mut Shard,
    id: KeyId,
    now_us: u64,
    cost: u64,
    policy: &Policy,
) -> (Evaluation, bool) {
    match shard.get_mut::<M>(id) {
        Some(entry) => (
            Evaluation::of::<M>(&mut entry.state, now_us, cost, policy),
            true,
        ),
        None => {
            let mut fresh = M::fresh(now_us, policy);
            (Evaluation::of::<M>(&mut fresh, now_us, cost, policy), false)
        }
    }
}

fn conclude<M: Tracked>(
    shard: &mut Shard,
    id: KeyId,
    now_us: u64,
    cost: u64,
    policy: &Policy,
    evaluation: Evaluation,
    commit: bool,
) -> Decision {
    if let Some(entry) = shard.get_mut::<M>(id) {
        let (decision, ttl_us) =
            evaluation.conclude::<M>(&mut entry.state, now_us, cost, policy, commit);
        entry.expires_at_us = now_us + ttl_us;
        if ttl_us == 0 {
            shard.remove_at_rest::<M>(id);
        }
        return decision;
    }
    let mut state = M::fresh(now_us, policy);
    let (decision, ttl_us) = evaluation.conclude::<M>(&mut state, now_us, cost, policy, commit);
    if ttl_us > 0 {
        // Only a committed consumption leaves a fresh key away from rest; room was made.
        shard.insert::<M>(id, now_us + ttl_us, state);
    }
    decision
}

impl Store for MemoryStore {
    async fn acquire(
        &self,
        policies: &[Policy],
        key: &[u8],
        cost: u64,
    ) -> Result<Verdict, StoreError> {
        self.acquire_sync(policies, key, cost)
    }

    async fn peek(&self, policies: &[Policy], key: &[u8]) -> Result<Verdict, StoreError> {
        self.peek_sync(policies, key)
    }

    async fn reset(&self, policies: &[Policy], key: &[u8]) -> Result<(), StoreError> {
        self.reset_sync(policies, key);
        Ok(())
    }
}
