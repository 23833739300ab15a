//! The local deny cache: once Redis has denied a client until some time, this instance repeats
//! that denial until then without a round trip, so a client hammering one key stops costing Redis
//! anything.
//!
//! **Why it never admits more than Redis would.** The cache only ever answers *denied*; every
//! admission still comes from Redis. And it answers only where Redis would deny too: a denial of
//! cost `c` with `retry_after = R` means that, with nothing consumed meanwhile, the same request
//! (same policies, same cost) is denied for `R` of Redis's time; consumption by others only makes
//! that longer. Only that same request is answered from the cache, so the `retry_after` it
//! reports (`R` less the time since) stays exact; its `remaining` is the one of the original
//! denial, which can only be lower than the truth. The entry lives for `R` measured on this instance's monotonic clock,
//! starting when the reply arrived (after Redis decided). The one way the cache can deny a
//! request Redis would admit is a `reset` made through *another* instance, or a local clock that
//! runs slow, and both end when the entry expires, at most `R` later.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use std::sync::Arc;

use floodwall_core::{Clock, Policy};
use siphasher::sip::SipHasher13;

use super::local_time::LocalTime;

use crate::store::{Answer, Source};

/// The default number of client keys remembered.
pub(crate) const DEFAULT_CAPACITY: usize = 10_000;

#[derive(Debug)]
struct Entry {
    /// Identifies the policies (names, algorithms, parameters, modes) the denial was for.
    policies: u64,
    /// The cost that was denied.
    cost: u64,
    denied_at_us: u64,
    until_us: u64,
    answer: Answer,
}

/// Denials by client key, bounded.
#[derive(Debug)]
pub(crate) struct DenyCache {
    entries: Mutex<HashMap<u64, Entry>>,
    capacity: usize,
    hash_key: (u64, u64),
    time: LocalTime,
}

impl DenyCache {
    /// A cache of `capacity` client keys, timed by `clock` when the store decides on an injected
    /// clock (tests), else by tokio's monotonic clock.
    pub(crate) fn new(capacity: usize, clock: Option<Arc<dyn Clock>>) -> Self {
        let random = std::collections::hash_map::RandomState::new();
        DenyCache {
            entries: Mutex::new(HashMap::new()),
            capacity,
            hash_key: (random.hash_one(1u64), random.hash_one(2u64)),
            time: LocalTime::new(clock),
        }
    }

    fn hasher(&self) -> SipHasher13 {
        SipHasher13::new_with_keys(self.hash_key.0, self.hash_key.1)
    }

    /// The cache slot of a client key.
    pub(crate) fn key_id(&self, key: &[u8]) -> u64 {
        let mut hasher = self.hasher();
        hasher.write(key);
        hasher.finish()
    }

    /// A fingerprint of everything about `policies` that a decision depends on.
    pub(crate) fn policies_id(&self, policies: &[&Policy]) -> u64 {
        let mut hasher = self.hasher();
        for p in policies {
            hasher.write(p.name().as_bytes());
            hasher.write_u8(0xff);
            hasher.write(p.algorithm().as_str().as_bytes());
            hasher.write_u64(p.limit());
            hasher.write_u64(p.period_us());
            p.calendar().hash(&mut hasher);
            hasher.write_u64(p.capacity());
            hasher.write_u8(u8::from(p.mode() == floodwall_core::Mode::Shadow));
        }
        hasher.finish()
    }

    /// The cached denial for a request of `need` units, its waits shortened by the time since.
    pub(crate) fn get(&self, key_id: u64, policies_id: u64, need: u64) -> Option<Answer> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = entries.get(&key_id)?;
        let now = self.time.now_us();
        if now >= entry.until_us {
            entries.remove(&key_id);
            return None;
        }
        if entry.policies != policies_id || need != entry.cost {
            return None;
        }
        let elapsed = Duration::from_micros(now - entry.denied_at_us);
        let shorten = |d: Duration| d.saturating_sub(elapsed).max(Duration::from_micros(1));
        let mut answer = entry.answer.clone();
        for decision in &mut answer.decisions {
            decision.retry_after = decision.retry_after.map(shorten);
            decision.reset_after = decision.reset_after.saturating_sub(elapsed);
        }
        answer.source = Source::DenyCache;
        Some(answer)
    }

    /// Remembers a denial of `need` units under `policies`, received just now. It lasts as long
    /// as the longest wait among the enforced policies that denied.
    pub(crate) fn put(
        &self,
        key_id: u64,
        policies_id: u64,
        need: u64,
        answer: &Answer,
        policies: &[&Policy],
    ) {
        if answer.allowed {
            return;
        }
        let retry_after = policies
            .iter()
            .zip(&answer.decisions)
            .filter(|(policy, decision)| {
                policy.mode() == floodwall_core::Mode::Enforce && !decision.allowed
            })
            .filter_map(|(_, decision)| decision.retry_after)
            .max();
        let Some(retry_after) = retry_after.filter(|r| !r.is_zero()) else {
            return;
        };
        let now = self.time.now_us();
        let until = now.saturating_add(u64::try_from(retry_after.as_micros()).unwrap_or(u64::MAX));
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.capacity && !entries.contains_key(&key_id) {
            entries.retain(|_, e| e.until_us > now);
            if entries.len() >= self.capacity {
                // Full of live denials: this one is simply asked of Redis again next time.
                return;
            }
        }
        entries.insert(
            key_id,
            Entry {
                policies: policies_id,
                cost: need,
                denied_at_us: now,
                until_us: until,
                answer: answer.clone(),
            },
        );
    }

    /// Forgets any denial of a client key (after a reset).
    pub(crate) fn forget(&self, key_id: u64) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key_id);
    }
}
