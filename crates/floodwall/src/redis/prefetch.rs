//! Prefetching a hot key: units of a hot `fixed_window` key taken from Redis in one call (a
//! prefetch) and spent by this instance without a round trip (a policy's
//! [`prefetch`](floodwall_core::Policy::prefetch)).
//!
//! **Why instances together never admit more than the limit.** A unit is spent here only after
//! Redis counted it in a prefetch, and only before the window that counted it ends. That end is
//! measured on this instance's monotonic clock from *before* the prefetch was sent, plus the
//! time Redis said was left, so it falls no later than Redis's own end of the window. Units not
//! spent are given back only by the prefetch script, which returns them only while the window
//! that counted them is still Redis's current one: a give-back that arrives late changes
//! nothing. So every admission is one that Redis counted in the window it happens in.
//!
//! **What it costs.** A window may admit less than its limit by the units that instances hold
//! unspent when it ends: at most `prefetch` per instance, since an instance prefetches for a
//! key only when its prefetched units are spent (one prefetch at a time; other requests for the
//! key wait for it). A request of `cost` above one may prefetch with up to `cost - 1` units
//! left, which are then kept: at most `max(prefetch, cost) + cost - 1` per instance.
//!
//! **Callers who leave, and stalls.** A prefetch runs on a task of its own and outlives its
//! caller: when Redis answers after the caller gave up (its deadline passed, it was cancelled),
//! the units land among the key's prefetched units all the same, for the next requests, and so
//! do the units of a caller that left just as the answer came. Only a prefetch whose reply never
//! comes (the connection broke after Redis ran it) loses its units, and the key prefetches
//! nothing else while one is in flight, so the bound above holds through any stall.
//! Units idle for [`IDLE`] are given back at once. A key is prefetched only from its second
//! request within [`IDLE`], so keys seen once cost nothing extra.
//!
//! Denials always come from Redis (or the deny cache repeating one), so their `retry_after` is
//! Redis's. Only single-policy checks of an enforced policy with a prefetch take this path; any
//! other check is decided by Redis as usual, where prefetched units are already counted.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use floodwall_core::key::{client_tag, storage_key_for_tag};
use floodwall_core::{Decision, Mode, Policy};
use smallvec::smallvec;
use tokio::time::Instant;

use super::local_time::LocalTime;
use super::reply::{self, Moved};
use super::script::{self, Operation, PrefetchMove};
use super::{Inner, RedisStore, Replicated, run_script, slot_of};
use crate::error::StoreError;
use crate::store::Check;
use crate::store::{Answer, Source};

/// A prefetch unused for this long is given back, and forgotten once empty.
pub(crate) const IDLE: Duration = Duration::from_millis(250);

/// How often idle prefetches are looked for.
const SWEEP: Duration = Duration::from_millis(50);

/// The most keys prefetched at once; past it, new keys are decided by Redis as usual.
pub(crate) const DEFAULT_CAPACITY: usize = 10_000;

/// The longest client key prefetched; longer ones are decided by Redis as usual, so that the table's
/// memory stays bounded by its capacity.
const MAX_KEY: usize = 256;

/// A prefetch's policy (by name) and client key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PrefetchKey {
    policy: Arc<str>,
    key: Box<[u8]>,
}

#[derive(Debug, Default)]
struct Held {
    /// Units prefetched and not yet spent.
    units: u64,
    /// When (local time) the window that counted them ends, or earlier.
    ends_us: u64,
    /// That window's start on Redis's clock, for the give-back.
    window_start_us: u64,
    /// What Redis had left after the last prefetch.
    remaining: u64,
    /// When (local time) a request last spent, or tried to.
    last_used_us: u64,
}

#[derive(Debug)]
struct Prefetched {
    /// The policy the units were prefetched under: a policy reloaded with other limits or
    /// windows starts a prefetch afresh.
    policy: Policy,
    held: Mutex<Held>,
    /// Held by the one prefetch in flight for this prefetch.
    refill: Arc<tokio::sync::Mutex<()>>,
}

impl Prefetched {
    /// A prefetch made at `now_us`: used then, so the sweeper cannot take it for idle before its
    /// first request has spent from it.
    fn new(policy: &Policy, now_us: u64) -> Self {
        Prefetched {
            policy: policy.clone(),
            held: Mutex::new(Held {
                last_used_us: now_us,
                ..Held::default()
            }),
            refill: Arc::default(),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Spends `cost` prefetched units at `now_us`, if there are that many and their window has
    /// not ended.
    fn spend(&self, cost: u64, now_us: u64, policy: &Policy) -> Option<Decision> {
        let mut held = self.held();
        held.last_used_us = now_us;
        if held.units < cost || now_us >= held.ends_us {
            return None;
        }
        held.units -= cost;
        Some(Decision {
            allowed: true,
            capacity: policy.capacity(),
            remaining: held.remaining.saturating_add(held.units),
            reset_after: Duration::from_micros(held.ends_us - now_us),
            retry_after: None,
            debt: 0,
        })
    }
}

/// This store's prefetches, bounded.
#[derive(Debug)]
pub(crate) struct Prefetches {
    table: Mutex<HashMap<PrefetchKey, Arc<Prefetched>>>,
    capacity: usize,
    time: LocalTime,
    /// Whether the task that gives back idle prefetches runs.
    sweeping: std::sync::Once,
}

impl Prefetches {
    pub(crate) fn new(capacity: usize, clock: Option<Arc<dyn floodwall_core::Clock>>) -> Self {
        Prefetches {
            table: Mutex::new(HashMap::new()),
            capacity,
            time: LocalTime::new(clock),
            sweeping: std::sync::Once::new(),
        }
    }

    /// The prefetch of `policy` on `key`, and whether it was made just now; `None` when the key is
    /// too long or the table is full.
    fn entry(&self, policy: &Policy, key: &[u8]) -> Option<(Arc<Prefetched>, bool)> {
        if key.len() > MAX_KEY {
            return None;
        }
        let id = PrefetchKey {
            policy: Arc::clone(policy.shared_name()),
            key: key.into(),
        };
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(prefetch) = table.get(&id)
            && prefetch.policy == *policy
        {
            return Some((Arc::clone(prefetch), false));
        }
        if table.len() >= self.capacity && !table.contains_key(&id) {
            return None;
        }
        // Units of a replaced prefetch are left unspent: fewer admissions, never more.
        let prefetch = Arc::new(Prefetched::new(policy, self.time.now_us()));
        table.insert(id, Arc::clone(&prefetch));
        Some((prefetch, true))
    }

    /// Drops this instance's units of `policy` on `key` (after a reset: they were counted
    /// before it).
    pub(crate) fn forget(&self, policy: &Policy, key: &[u8]) {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        table.retain(|id, _| !(*id.policy == *policy.name() && *id.key == *key));
    }

    /// Takes the units of every prefetch idle since `IDLE` ago (to give back) and forgets the
    /// prefetches that are empty and idle.
    fn take_idle(&self) -> Vec<(Policy, Box<[u8]>, u64, u64)> {
        let now = self.time.now_us();
        let idle_us = u64::try_from(IDLE.as_micros()).unwrap_or(u64::MAX);
        let mut returned = Vec::new();
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        table.retain(|id, prefetch| {
            let mut held = prefetch.held();
            if now.saturating_sub(held.last_used_us) < idle_us {
                return true;
            }
            if held.units > 0 && now < held.ends_us {
                returned.push((
                    prefetch.policy.clone(),
                    id.key.clone(),
                    held.units,
                    held.window_start_us,
                ));
            }
            held.units = 0;
            // A prefetch in flight will still fill it: keep it until that is done.
            prefetch.refill.try_lock().is_err()
        });
        returned
    }
}

/// The (policy, key) of a check that a prefetch may decide: one pair, an enforced policy with a
/// prefetch, a cost to spend.
pub(crate) fn prefetched_pair<'c>(check: &Check<'c>) -> Option<(&'c Policy, &'c [u8])> {
    match check.pairs() {
        &[(policy, key)]
            if policy.prefetch() > 0
                && policy.mode() == Mode::Enforce
                && check.cost() > 0
                && check.costs().is_none() =>
        {
            Some((policy, key))
        }
        _ => None,
    }
}

impl RedisStore {
    /// Decides `cost` units of `policy` on `key` from this instance's prefetch, prefetching from
    /// Redis when it has too few.
    pub(super) async fn decide_prefetched(
        &self,
        check: &Check<'_>,
        prefetches: &Prefetches,
        policy: &Policy,
        key: &[u8],
    ) -> Result<Answer, StoreError> {
        // A decision spent from a prefetch completes without waiting on anything: the budget
        // makes a caller deciding in a loop still yield to the other tasks now and then.
        tokio::task::consume_budget().await;
        let cost = check.cost();
        let local = |decision| Answer {
            allowed: true,
            decisions: smallvec![decision],
            source: Source::Prefetched,
        };
        let Some((prefetch, new)) = prefetches.entry(policy, key) else {
            return self.run(check, Operation::Decide).await;
        };
        prefetches
            .sweeping
            .call_once(|| spawn_sweeper(Arc::downgrade(&self.inner)));
        if let Some(decision) = prefetch.spend(cost, prefetches.time.now_us(), policy) {
            return Ok(local(decision));
        }
        if new {
            // A key's first request is decided as usual: a prefetch pays only for keys seen again.
            return self.run(check, Operation::Decide).await;
        }
        let deadline = Instant::now() + self.inner.timeout;
        let waited = self.until(deadline, async {
            let guard = Arc::clone(&prefetch.refill).lock_owned().await;
            Ok(guard)
        });
        let guard = waited.await?;
        if let Some(decision) = prefetch.spend(cost, prefetches.time.now_us(), policy) {
            return Ok(local(decision));
        }
        if let Some(answer) = self.cached_denial(policy, key, cost) {
            return Ok(answer);
        }
        // The prefetch runs in a task of its own, so that a caller that gives up cannot
        // lose units Redis has already counted: they land in the prefetch whatever happens here.
        let (answer, answered) = tokio::sync::oneshot::channel();
        let (store, policy, key) = (self.clone(), policy.clone(), key.to_vec());
        self.spawn_tracked(async move {
            let _refilling = guard;
            store.fetch(&prefetch, &policy, &key, cost, answer).await;
        });
        answered.await.unwrap_or_else(|_| {
            Err(StoreError::Reply {
                detail: "the prefetch task ended".to_owned(),
            })
        })
    }

    /// Prefetches up to the policy's prefetch (at least `cost`) into `prefetch` and spends `cost`,
    /// answering on `answer` by the store's deadline. A prefetch Redis has not answered by
    /// then is still awaited, until the window it would count in has surely ended, and its
    /// units kept; so are the units of a caller that left as the answer came.
    async fn fetch(
        &self,
        prefetch: &Prefetched,
        policy: &Policy,
        key: &[u8],
        cost: u64,
        answer: tokio::sync::oneshot::Sender<Result<Answer, StoreError>>,
    ) {
        let prefetches = &self.inner.prefetches;
        let sent_us = prefetches.time.now_us();
        let most = policy.prefetch().max(cost);
        let movement = PrefetchMove::Take { most, fewest: cost };
        let group = self.inner.breakers.group(slot_of(&client_tag(key)));
        let admission = match self.inner.breakers.enter(group) {
            Ok(admission) => admission,
            Err(open) => {
                let _ = answer.send(Err(open));
                return;
            }
        };
        let deadline = Instant::now() + self.inner.timeout;
        let mut call = std::pin::pin!(self.move_units_now(policy, key, movement));
        let (moved, answer) = match tokio::time::timeout_at(deadline, &mut call).await {
            Ok(moved) => {
                self.inner.breakers.record_outcome(group, admission, &moved);
                (moved, Some(answer))
            }
            Err(_) => {
                self.inner.breakers.record(group, admission, false);
                let after = self.inner.timeout;
                let _ = answer.send(Err(StoreError::Timeout { after }));
                // Past the policy's period, whatever Redis counted is in an ended window.
                match tokio::time::timeout(policy.period(), call).await {
                    Ok(moved) => (moved, None),
                    Err(_) => return,
                }
            }
        };
        let moved = match moved {
            Ok(moved) => moved,
            Err(error) => {
                if let Some(answer) = answer {
                    let _ = answer.send(Err(error));
                }
                return;
            }
        };
        let decision = |allowed, remaining| Decision {
            allowed,
            capacity: policy.capacity(),
            remaining,
            reset_after: moved.reset_after,
            retry_after: moved.retry_after,
            debt: 0,
        };
        if moved.units == 0 {
            let denial = Answer::from_store(false, smallvec![decision(false, moved.remaining)]);
            if let Some(cache) = &self.inner.deny_cache {
                let id = (cache.key_id(key), cache.policies_id(&[policy]));
                cache.put(id.0, id.1, cost, &denial, &[policy]);
            }
            if let Some(answer) = answer {
                let _ = answer.send(Ok(denial));
            }
            return;
        }
        // A late prefetch was spent by nobody: all of it is the prefetch's.
        let spare = match answer {
            Some(_) => moved.units - cost,
            None => moved.units,
        };
        let reset_us = u64::try_from(moved.reset_after.as_micros()).unwrap_or(u64::MAX);
        {
            let mut held = prefetch.held();
            // Units of an earlier window are void: they were counted there.
            if held.window_start_us == moved.window_start_us {
                held.units += spare;
            } else {
                held.units = spare;
            }
            held.ends_us = sent_us.saturating_add(reset_us);
            held.window_start_us = moved.window_start_us;
            held.remaining = moved.remaining;
            held.last_used_us = prefetches.time.now_us();
        }
        let Some(answer) = answer else { return };
        let admitted = Answer::from_store(true, smallvec![decision(true, moved.remaining + spare)]);
        if answer.send(Ok(admitted)).is_err() {
            // The caller left as the answer came: its units go to the next requests.
            self.inner.abandoned.fetch_add(1, Ordering::Relaxed);
            let mut held = prefetch.held();
            if held.window_start_us == moved.window_start_us {
                held.units += cost;
            }
        }
    }

    /// A denial of `cost` on `key` this instance saw moments ago, still in force.
    fn cached_denial(&self, policy: &Policy, key: &[u8], cost: u64) -> Option<Answer> {
        let cache = self.inner.deny_cache.as_ref()?;
        cache.get(cache.key_id(key), cache.policies_id(&[policy]), cost)
    }

    /// One call of the prefetch script, through the key's breaker, within the store's timeout.
    async fn move_units(
        &self,
        policy: &Policy,
        key: &[u8],
        movement: PrefetchMove,
    ) -> Result<Moved, StoreError> {
        let deadline = Instant::now() + self.inner.timeout;
        let call = self.move_units_now(policy, key, movement);
        self.guarded(slot_of(&client_tag(key)), |_| self.until(deadline, call))
            .await
    }

    /// One call of the prefetch script, however long Redis takes, bypassing the breaker.
    async fn move_units_now(
        &self,
        policy: &Policy,
        key: &[u8],
        movement: PrefetchMove,
    ) -> Result<Moved, StoreError> {
        let state_key = storage_key_for_tag(&self.inner.prefix, policy, &client_tag(key));
        let now_us = self.inner.clock.as_ref().map(|clock| clock.now_us());
        let take = matches!(movement, PrefetchMove::Take { .. });
        // Units taken are what a failover could lose; units given back are not.
        let replicated = match movement {
            PrefetchMove::Take { .. } => Replicated::by(
                self.inner.wait_replicas,
                Instant::now() + self.inner.timeout,
            ),
            _ => None,
        };
        let reply = run_script(&self.inner.connection, replicated, |with_source| {
            script::prefetch_command(with_source, &state_key, now_us, policy, movement)
        })
        .await?;
        reply::decode_prefetch(&reply, take)
    }
}

/// Gives back idle prefetches every [`SWEEP`] while the store lives.
fn spawn_sweeper(store: Weak<Inner>) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(SWEEP);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(inner) = store.upgrade() else { return };
            let store = RedisStore { inner };
            for (policy, key, units, window_start_us) in store.inner.prefetches.take_idle() {
                let movement = PrefetchMove::Give {
                    units,
                    window_start_us,
                };
                // A give-back that fails leaves the units unspent: under-admission, never over.
                let _ = store.move_units(&policy, &key, movement).await;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::redis::RedisConfig;
    use floodwall_core::{Algorithm, ManualClock};
    use floodwall_testkit::RedisServer;

    const EPOCH_US: u64 = 1_767_225_600_000_000;

    /// A sweep that runs between a prefetch's creation and its first spend (the sweeper starts
    /// with a key's first request, on another worker) keeps it: it was used just now.
    #[test]
    fn a_lease_made_just_now_is_not_idle() {
        let clock = ManualClock::new(EPOCH_US);
        let prefetches = Prefetches::new(16, Some(Arc::new(clock.clone())));
        let policy = Policy::new("p", Algorithm::FixedWindow, 10, Duration::from_secs(60))
            .unwrap()
            .with_prefetch(5)
            .unwrap();
        let (_, new) = prefetches.entry(&policy, b"k").unwrap();
        assert!(new);
        assert!(prefetches.take_idle().is_empty());
        let (_, new) = prefetches.entry(&policy, b"k").unwrap();
        assert!(!new, "the sweep dropped a prefetch made just now");
        clock.advance(IDLE);
        prefetches.take_idle();
        assert!(prefetches.entry(&policy, b"k").unwrap().1, "idle, it goes");
    }

    /// The script's guard, which the sweeper never tests by itself (it skips ended windows): a
    /// give-back naming a window that has ended changes nothing, even when it lands in the next.
    #[tokio::test]
    async fn a_give_back_for_an_ended_window_changes_nothing() {
        let server = RedisServer::start().unwrap();
        let clock = ManualClock::new(EPOCH_US);
        let config = RedisConfig::new(server.url()).clock(clock.clone());
        let store = RedisStore::connect(config).await.unwrap();
        let minute = Duration::from_secs(60);
        let policy = Policy::new("p", Algorithm::FixedWindow, 10, minute).unwrap();
        let take = PrefetchMove::Take { most: 6, fewest: 1 };
        let taken = store.move_units(&policy, b"k", take).await.unwrap();
        assert_eq!((taken.units, taken.remaining), (6, 4));
        assert_eq!(taken.window_start_us, EPOCH_US);

        let give = |units| PrefetchMove::Give {
            units,
            window_start_us: taken.window_start_us,
        };
        let given = store.move_units(&policy, b"k", give(2)).await.unwrap();
        assert_eq!((given.units, given.remaining), (2, 6));

        clock.advance(minute);
        let next = store.move_units(&policy, b"k", take).await.unwrap();
        assert_eq!((next.units, next.remaining), (6, 4));
        let late = store.move_units(&policy, b"k", give(4)).await.unwrap();
        assert_eq!(
            (late.units, late.remaining),
            (0, 4),
            "the next window keeps its count"
        );

        // A take of more than is left prefetches what is left, and none below the fewest.
        let rest = PrefetchMove::Take {
            most: 10,
            fewest: 1,
        };
        assert_eq!(
            store.move_units(&policy, b"k", rest).await.unwrap().units,
            4
        );
        let none = store.move_units(&policy, b"k", take).await.unwrap();
        assert_eq!(none.units, 0);
        assert_eq!(none.retry_after, Some(minute));
    }
}
