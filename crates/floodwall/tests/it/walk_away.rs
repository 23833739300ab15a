//! Callers who walk away (docs/testing.md: L1–L6): a caller may stop waiting at any
//! `.await`, and what its call started still finishes its bookkeeping. Each test drops calls
//! mid-flight against real Redis processes (one node, a cluster, SIGSTOP stalls) or the memory
//! store, then counts exactly what is left held.

use crate::support::LimiterExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use floodwall::redis::{RedisConfig, RedisStore};
use floodwall::stats::StorageStats;
use floodwall::{Algorithm, Limiter, ManualClock, MemoryStore, Policy, Source, StoreErrorKind};
use floodwall_testkit::{RedisCluster, RedisServer};
use tokio::time::Instant;

const DEADLINE: Duration = Duration::from_millis(50);

/// 20 in flight at once, held for 10 minutes unless released: a leaked slot stays for the test.
fn shared_cap() -> Policy {
    Policy::new("cap", Algorithm::Concurrency, 20, Duration::from_secs(600)).unwrap()
}

async fn redis_limiter(url: &str) -> Limiter {
    Limiter::new(
        RedisStore::connect(RedisConfig::new(url).timeout(DEADLINE))
            .await
            .unwrap(),
    )
}

fn redis_stats(limiter: &Limiter) -> floodwall::stats::RedisStats {
    match limiter.store().stats() {
        StorageStats::Redis(stats) => stats,
        other => panic!("not a Redis store: {other:?}"),
    }
}

/// How many of `policy`'s slots on `key` a fresh holder can take now: all of them when none
/// leaked. The leases are held together and released at the end. Waits first for the breaker
/// to let calls reach Redis.
async fn free_slots(limiter: &Limiter, policy: &Policy, key: &str) -> u64 {
    let started = Instant::now();
    while redis_stats(limiter).open_breakers > 0 {
        let _ = limiter.lease(policy, key).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the breaker stays open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(limiter.quiesce(Duration::from_secs(10)).await);
    let mut held = Vec::new();
    for _ in 0..policy.limit() + 1 {
        let lease = limiter.lease(policy, key).await.unwrap();
        assert_eq!(lease.verdict().source(), Source::Store);
        if !lease.allowed() {
            break;
        }
        held.push(lease);
    }
    let free = held.len() as u64;
    for lease in held {
        lease.release().await.unwrap();
    }
    free
}

/// 1 000 lease calls on one shared key, each abandoned after 0–800 µs (many mid-call, some
/// before the call leaves, some after it answered): returns how many were cut short.
async fn abandon_leases(limiter: &Limiter, policy: &Policy, key: &str) -> u64 {
    impatient_callers(|patience| async move {
        match tokio::time::timeout(patience, limiter.lease(policy, key)).await {
            // Answered in time: the caller goes at once, releasing by dropping.
            Ok(lease) => {
                drop(lease.unwrap());
                false
            }
            Err(_) => true,
        }
    })
    .await
}

/// 1 000 callers, 50 at a time (enough to keep the connection busy and calls in flight), each
/// with a patience of 0–800 µs, the same spread every run; `call` says whether it was cut
/// short. Returns how many were.
async fn impatient_callers<F: Future<Output = bool>>(call: impl Fn(Duration) -> F) -> u64 {
    let mut cut = 0;
    let mut patience = (0..1_000u64).map(|i| Duration::from_micros((i * 7_919) % 800));
    loop {
        let wave: Vec<_> = patience.by_ref().take(50).map(&call).collect();
        if wave.is_empty() {
            return cut;
        }
        let outcomes = std::sync::Mutex::new(Vec::new());
        futures_join_all(
            wave.into_iter()
                .map(|call| async {
                    let was_cut = call.await;
                    outcomes.lock().unwrap().push(was_cut);
                })
                .collect(),
        )
        .await;
        cut += outcomes
            .into_inner()
            .unwrap()
            .into_iter()
            .filter(|c| *c)
            .count() as u64;
    }
}

/// Runs every future of `wave` concurrently on this task.
async fn futures_join_all<F: Future<Output = ()>>(wave: Vec<F>) {
    let mut set = Vec::with_capacity(wave.len());
    for future in wave {
        set.push(Box::pin(future));
    }
    std::future::poll_fn(|cx| {
        set.retain_mut(|future| future.as_mut().poll(cx).is_pending());
        match set.is_empty() {
            true => std::task::Poll::Ready(()),
            false => std::task::Poll::Pending,
        }
    })
    .await;
}

async fn abandoned_leases_leave_no_slot_held(url: &str) {
    let limiter = redis_limiter(url).await;
    let policy = shared_cap();
    let cut = abandon_leases(&limiter, &policy, "global").await;
    assert!(
        cut > 0,
        "no call was cut short: the test would prove nothing"
    );
    assert!(
        limiter.quiesce(Duration::from_secs(10)).await,
        "give-backs still running"
    );
    assert_eq!(
        free_slots(&limiter, &policy, "global").await,
        20,
        "slots leaked by {cut} callers who left"
    );
    let stats = redis_stats(&limiter);
    assert!(
        stats.abandoned > 0,
        "callers who left are counted: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_who_leave_mid_call_leave_no_slot_held_on_one_node() {
    let server = RedisServer::start().unwrap();
    abandoned_leases_leave_no_slot_held(&server.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_who_leave_mid_call_leave_no_slot_held_on_a_cluster() {
    let cluster = RedisCluster::start().unwrap();
    abandoned_leases_leave_no_slot_held(&cluster.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_who_leave_mid_call_leave_no_slot_held_in_memory() {
    let limiter = Limiter::new(MemoryStore::new());
    let policy = shared_cap();
    abandon_leases(&limiter, &policy, "global").await;
    let mut held = Vec::new();
    for _ in 0..21 {
        let lease = limiter.lease(&policy, "global").await.unwrap();
        if !lease.allowed() {
            break;
        }
        held.push(lease);
    }
    assert_eq!(held.len(), 20);
}

/// Single-policy decisions, coalesced into batches, abandoned at every point on a healthy
/// Redis: nothing a caller saw admitted went uncounted, and nobody is locked out afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_who_leave_batched_decisions_lock_out_nobody() {
    let server = RedisServer::start().unwrap();
    let limiter = redis_limiter(&server.url()).await;
    let limit = 100_000;
    let policy = Policy::new(
        "batched",
        Algorithm::FixedWindow,
        limit,
        Duration::from_secs(3600),
    )
    .unwrap();
    let admitted = AtomicU64::new(0);
    let cut = impatient_callers(|patience| {
        let (limiter, policy, admitted) = (&limiter, &policy, &admitted);
        async move {
            match tokio::time::timeout(patience, limiter.check(policy, "k", 1)).await {
                Ok(verdict) => {
                    let verdict = verdict.unwrap();
                    assert_eq!(verdict.source(), Source::Store);
                    admitted.fetch_add(u64::from(verdict.allowed()), Ordering::Relaxed);
                    false
                }
                Err(_) => true,
            }
        }
    })
    .await;
    assert!(
        cut > 0,
        "no call was cut short: the test would prove nothing"
    );
    let after = limiter.peek(&policy, "k").await.unwrap();
    assert_eq!(after.source(), Source::Store, "locked out after the cuts");
    let counted = limit - after.iter().next().unwrap().1.remaining;
    let admitted = admitted.load(Ordering::Relaxed);
    assert!(
        admitted <= counted && counted <= 1_000,
        "{admitted} admitted, {counted} counted"
    );
    let stats = redis_stats(&limiter);
    assert_eq!(stats.open_breakers, 0, "{stats:?}");
    assert!(
        stats.abandoned > 0,
        "callers who left are counted: {stats:?}"
    );
}

/// Waits until `limiter`'s breaker is open (3 failed calls at the store's deadline).
async fn open_the_breaker(limiter: &Limiter, policy: &Policy) {
    for _ in 0..20 {
        let _ = limiter.check(policy, "k", 1).await;
        if redis_stats(limiter).open_breakers == 1 {
            return;
        }
    }
    panic!("the breaker never opened: {:?}", redis_stats(limiter));
}

/// Checks until one is decided by Redis again; how long that took.
async fn until_redis_decides(limiter: &Limiter, policy: &Policy, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let verdict = limiter.check(policy, "recovery", 1).await.unwrap();
        if verdict.source() == Source::Store {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "Redis is back but no check reached it in {within:?}: {:?}",
            redis_stats(limiter)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The probe of an open breaker is abandoned by its caller while Redis hangs; the breaker
/// still hears how it went, and the next probe after Redis resumes closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_probe_does_not_wedge_the_breaker() {
    let server = RedisServer::start().unwrap();
    let limiter = redis_limiter(&server.url()).await;
    let per_hour = Policy::new("p", Algorithm::Gcra, 1_000, Duration::from_secs(3600)).unwrap();
    limiter.check(&per_hour, "warm", 1).await.unwrap();
    server.pause().unwrap();
    open_the_breaker(&limiter, &per_hour).await;
    // Past the probe interval, the next call is the probe; its caller gives up after 5 ms.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let probe = tokio::time::timeout(
        Duration::from_millis(5),
        limiter.check(&per_hour, "probe", 1),
    );
    assert!(probe.await.is_err(), "the probe answered while Redis hung");
    server.resume().unwrap();
    // At worst the abandoned probe fails at its deadline (50 ms) and the next comes one probe
    // interval (250 ms) later; the rest is slack for a loaded machine.
    let took = until_redis_decides(&limiter, &per_hour, Duration::from_secs(2)).await;
    assert!(took < Duration::from_millis(750), "recovery took {took:?}");
    assert_eq!(redis_stats(&limiter).open_breakers, 0);
}

/// Callers with a deadline shorter than the store's give up on a hung Redis: their calls still
/// time out at the store's deadline, and those failures open the breaker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_who_give_up_early_still_open_the_breaker() {
    let server = RedisServer::start().unwrap();
    let limiter = redis_limiter(&server.url()).await;
    // Two policies: a check of both is one direct call, not a batch.
    let policies = [
        Policy::new("a", Algorithm::Gcra, 1_000, Duration::from_secs(3600)).unwrap(),
        Policy::new(
            "b",
            Algorithm::FixedWindow,
            1_000,
            Duration::from_secs(3600),
        )
        .unwrap(),
    ];
    let single = &policies[0];
    limiter.check_all(&policies, "warm", 1).await.unwrap();
    server.pause().unwrap();
    // Three failures open it.
    for i in 0..3 {
        let impatient = Duration::from_millis(5);
        let cut = match i % 2 {
            0 => tokio::time::timeout(impatient, limiter.check_all(&policies, "k", 1))
                .await
                .is_err(),
            _ => tokio::time::timeout(impatient, limiter.check(single, "k", 1))
                .await
                .is_err(),
        };
        assert!(cut, "answered while Redis hung");
        // The next caller comes once this call has reached its own deadline.
        tokio::time::sleep(DEADLINE + Duration::from_millis(20)).await;
    }
    let stats = redis_stats(&limiter);
    server.resume().unwrap();
    assert_eq!(stats.open_breakers, 1, "{stats:?}");
    assert!(stats.abandoned >= 3, "{stats:?}");
}

/// A deadline shorter than the store's: the answer comes by it, per `on_error`, counted as a
/// timeout; the store call goes on and is counted as abandoned when it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_deadline_is_answered_per_on_error() {
    let server = RedisServer::start().unwrap();
    let limiter = redis_limiter(&server.url()).await;
    let policy = Policy::new("p", Algorithm::Gcra, 1_000, Duration::from_secs(3600)).unwrap();
    limiter.check(&policy, "warm", 1).await.unwrap();
    server.pause().unwrap();
    let started = Instant::now();
    let deadline = started + Duration::from_millis(15);
    let verdict = limiter
        .check_weighted_by(&[(&policy, "k", 1)], deadline)
        .await
        .unwrap();
    let took = started.elapsed();
    server.resume().unwrap();
    assert_eq!(verdict.source(), Source::FailOpen);
    assert!(took < Duration::from_millis(40), "answered after {took:?}");
    let stats = limiter.stats();
    assert_eq!(stats.store_errors.get(StoreErrorKind::Timeout), 1);
    // Healthy, the same call is Redis's.
    let deadline = Instant::now() + Duration::from_millis(500);
    let verdict = limiter
        .check_weighted_by(&[(&policy, "k", 1)], deadline)
        .await
        .unwrap();
    assert_eq!(verdict.source(), Source::Store);
}

/// Lease calls that time out while Redis hangs run when it resumes; what they took is given
/// back, so every slot is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_lease_calls_leave_no_slot_held_after_redis_resumes() {
    let server = RedisServer::start().unwrap();
    let limiter = redis_limiter(&server.url()).await;
    let policy = shared_cap();
    assert_eq!(free_slots(&limiter, &policy, "global").await, 20);
    server.pause().unwrap();
    // Two calls time out (the breaker opens at three): both reached the paused Redis.
    for _ in 0..2 {
        let lease = limiter.lease(&policy, "global").await.unwrap();
        assert_eq!(lease.verdict().source(), Source::FailOpen);
        assert!(!lease.holds());
    }
    // And two callers leave before the store's deadline.
    for _ in 0..2 {
        let cut = tokio::time::timeout(Duration::from_millis(5), limiter.lease(&policy, "global"));
        assert!(cut.await.is_err());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.resume().unwrap();
    assert!(limiter.quiesce(Duration::from_secs(10)).await);
    assert_eq!(free_slots(&limiter, &policy, "global").await, 20);
}

/// A hot key's lease while callers give up mid-reservation, healthy and during a 1 s stall:
/// reservations that time out are still awaited, and the units of a reservation whose caller
/// left land in the lease, so the window admits at least its limit less one lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_key_loses_at_most_one_prefetch_in_a_stall() {
    hot_key_prefetch_loss(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_key_prefetch_loses_nothing_to_callers_who_leave() {
    hot_key_prefetch_loss(false).await;
}

async fn hot_key_prefetch_loss(stall: bool) {
    let server = RedisServer::start().unwrap();
    // A clock that stands still: one window for the whole test.
    let clock = ManualClock::new(1_767_225_600_000_000);
    let store = RedisStore::connect(
        RedisConfig::new(server.url())
            .timeout(DEADLINE)
            .clock(clock.clone()),
    )
    .await
    .unwrap();
    let limiter = Limiter::new(store);
    let (limit, prefetch) = (2_000, 100);
    let policy = Policy::new(
        "hot",
        Algorithm::FixedWindow,
        limit,
        Duration::from_secs(3600),
    )
    .unwrap()
    .with_prefetch(prefetch)
    .unwrap();
    let mut counted = 0u64;
    let mut count = |verdict: &floodwall::Verdict| {
        if verdict.allowed() && matches!(verdict.source(), Source::Store | Source::Prefetched) {
            counted += 1;
        }
    };
    for _ in 0..150 {
        count(&limiter.check(&policy, "hot", 1).await.unwrap());
    }
    if stall {
        server.pause().unwrap();
    }
    let started = Instant::now();
    let mut patience = 0u64;
    while started.elapsed() < Duration::from_secs(1) {
        count(&limiter.check(&policy, "hot", 1).await.unwrap());
        // Some callers give up early too (0-2 ms, mid-prefetch on a healthy Redis): what
        // they would have spent goes to the next.
        patience = (patience + 277) % 2_000;
        let impatient = Duration::from_micros(patience);
        if let Ok(verdict) = tokio::time::timeout(impatient, limiter.check(&policy, "hot", 1)).await
        {
            count(&verdict.unwrap());
        }
        if stall {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    if stall {
        server.resume().unwrap();
    }
    assert!(limiter.quiesce(Duration::from_secs(10)).await);
    let drained = Instant::now();
    loop {
        let verdict = limiter.check(&policy, "hot", 1).await.unwrap();
        if verdict.allowed() {
            count(&verdict);
        } else if matches!(verdict.source(), Source::Store | Source::DenyCache) {
            // Redis's denial, or this instance repeating it: the window is spent.
            break;
        }
        assert!(drained.elapsed() < Duration::from_secs(20), "never denied");
    }
    assert!(counted <= limit, "{counted} admitted of {limit}");
    assert!(
        counted + prefetch >= limit,
        "{} units lost (bound: {prefetch}; stall: {stall})",
        limit - counted
    );
}
