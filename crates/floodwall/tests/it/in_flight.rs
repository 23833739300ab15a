//! `concurrency` through [`Limiter::lease`]: 8 instances × 64 tasks holding leases for random
//! times never have more than the limit in flight (counted independently of the store), a
//! holder that never releases gives its slot back after the period, a release gives back only
//! the in-flight units, on memory, one Redis node and a 3-master cluster.

use crate::support::LimiterExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use floodwall::redis::{RedisConfig, RedisStore};
use floodwall::{Algorithm, Limiter, ManualClock, MemoryStore, Policy};
use floodwall_testkit::{RedisCluster, RedisServer};

use crate::inspect::assert_every_key_expires;

const INSTANCES: usize = 8;
const TASKS: usize = 64;

fn in_flight(limit: u64, timeout: Duration) -> Arc<Policy> {
    Arc::new(Policy::new("exports", Algorithm::Concurrency, limit, timeout).unwrap())
}

async fn redis_limiters(url: &str, clock: Option<&ManualClock>) -> Vec<Limiter> {
    let mut limiters = Vec::new();
    for _ in 0..INSTANCES {
        let config = RedisConfig::new(url).timeout(Duration::from_secs(5));
        let config = match clock {
            Some(clock) => config.clock(clock.clone()),
            None => config,
        };
        limiters.push(Limiter::new(RedisStore::connect(config).await.unwrap()));
    }
    limiters
}

/// Every task takes leases on one key and holds each for 0–2 ms; an independent counter, raised
/// after an admission and lowered before its release, never passes the limit and reaches it.
/// Returns how many leases were admitted.
async fn never_more_than_the_limit_in_flight(limiters: &[Limiter], attempts: usize) -> u64 {
    const LIMIT: u64 = 5;
    let policy = in_flight(LIMIT, Duration::from_secs(60));
    let now = Arc::new(AtomicU64::new(0));
    let most = Arc::new(AtomicU64::new(0));
    let admitted = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let limiter = limiters[t % limiters.len()].clone();
            let (policy, now, most, admitted) = (
                Arc::clone(&policy),
                Arc::clone(&now),
                Arc::clone(&most),
                Arc::clone(&admitted),
            );
            tokio::spawn(async move {
                for attempt in 0..attempts {
                    let lease = limiter.lease(&policy, "tenant-7").await.unwrap();
                    if !lease.allowed() {
                        assert!(!lease.holds());
                        tokio::task::yield_now().await;
                        continue;
                    }
                    admitted.fetch_add(1, Ordering::Relaxed);
                    let in_flight = now.fetch_add(1, Ordering::AcqRel) + 1;
                    most.fetch_max(in_flight, Ordering::AcqRel);
                    let hold_us = ((t * 31 + attempt * 17) % 2_000) as u64;
                    tokio::time::sleep(Duration::from_micros(hold_us)).await;
                    now.fetch_sub(1, Ordering::AcqRel);
                    lease.release().await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let most = most.load(Ordering::Acquire);
    assert!(most <= LIMIT, "{most} in flight, limit {LIMIT}");
    assert_eq!(
        most, LIMIT,
        "the race never filled the limit: it proves nothing"
    );
    // Everything was released: the whole limit is free again.
    let after = limiters[0].peek(&policy, "tenant-7").await.unwrap();
    assert_eq!(after.decisions()[0].remaining, LIMIT);
    admitted.load(Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_never_more_than_the_limit_in_flight() {
    let store = MemoryStore::new();
    let limiters: Vec<_> = (0..INSTANCES)
        .map(|_| Limiter::new(store.clone()))
        .collect();
    let admitted = never_more_than_the_limit_in_flight(&limiters, 40).await;
    assert!(admitted >= 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_one_node_never_more_than_the_limit_in_flight() {
    let server = RedisServer::start().unwrap();
    let limiters = redis_limiters(&server.url(), None).await;
    never_more_than_the_limit_in_flight(&limiters, 10).await;
    assert_every_key_expires(&server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_never_more_than_the_limit_in_flight() {
    let cluster = RedisCluster::start().unwrap();
    let limiters = redis_limiters(&cluster.url(), None).await;
    never_more_than_the_limit_in_flight(&limiters, 10).await;
    for node in cluster.nodes() {
        assert_every_key_expires(node);
    }
}

/// A holder that never releases (it crashed: the lease is forgotten, not dropped) keeps its slot
/// for exactly the period, and a denial's `retry_after` says so.
async fn a_forgotten_lease_times_out(limiter: &Limiter, clock: &ManualClock) {
    let policy = in_flight(1, Duration::from_secs(30));
    let crashed = limiter.lease(&policy, "worker").await.unwrap();
    assert!(crashed.holds());
    std::mem::forget(crashed);
    clock.advance(Duration::from_secs(10));
    let denied = limiter.lease(&policy, "worker").await.unwrap();
    assert!(!denied.allowed());
    assert_eq!(
        denied.verdict().retry_after(),
        Some(Duration::from_secs(20))
    );
    clock.advance(Duration::from_secs(20) - Duration::from_micros(1));
    assert!(!limiter.lease(&policy, "worker").await.unwrap().allowed());
    clock.advance(Duration::from_micros(1));
    let back = limiter.lease(&policy, "worker").await.unwrap();
    assert!(back.allowed());
}

#[tokio::test]
async fn in_memory_a_forgotten_lease_times_out() {
    let clock = ManualClock::new(1_767_225_600_000_000);
    let limiter = Limiter::new(MemoryStore::builder().clock(clock.clone()).build());
    a_forgotten_lease_times_out(&limiter, &clock).await;
}

#[tokio::test]
async fn on_one_node_a_forgotten_lease_times_out() {
    let server = RedisServer::start().unwrap();
    let clock = ManualClock::new(1_767_225_600_000_000);
    let limiters = redis_limiters(&server.url(), Some(&clock)).await;
    a_forgotten_lease_times_out(&limiters[0], &clock).await;
}

/// A lease under a rate and an in-flight limit spends the rate and holds the slot; releasing it
/// frees the slot only, and releasing twice (drop after release is impossible; a second lease
/// dropped) never frees another holder's slot.
async fn a_release_gives_back_only_what_is_in_flight(limiter: &Limiter) {
    let policies = [
        Policy::new(
            "per-hour",
            Algorithm::FixedWindow,
            3,
            Duration::from_secs(3600),
        )
        .unwrap(),
        Policy::new(
            "exports",
            Algorithm::Concurrency,
            2,
            Duration::from_secs(60),
        )
        .unwrap(),
    ];
    let first = limiter.lease_all(&policies, "user-1", 1).await.unwrap();
    let second = limiter.lease_all(&policies, "user-1", 1).await.unwrap();
    assert!(first.allowed() && second.allowed());
    let full = limiter.lease_all(&policies, "user-1", 1).await.unwrap();
    assert!(!full.allowed());
    assert_eq!(
        full.verdict()
            .violated()
            .map(Policy::name)
            .collect::<Vec<_>>(),
        ["exports"]
    );
    drop(full);
    first.release().await.unwrap();
    let peek = limiter.check_all(&policies, "user-1", 0).await.unwrap();
    assert_eq!(peek.decisions()[0].remaining, 1, "the rate stays spent");
    assert_eq!(peek.decisions()[1].remaining, 1, "one slot is back");
    // Dropping the other gives its slot back too; the denied lease held nothing to give.
    drop(second);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let peek = limiter.check_all(&policies, "user-1", 0).await.unwrap();
    assert_eq!(peek.decisions()[1].remaining, 2);
}

#[tokio::test]
async fn in_memory_a_release_gives_back_only_what_is_in_flight() {
    a_release_gives_back_only_what_is_in_flight(&Limiter::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_one_node_a_release_gives_back_only_what_is_in_flight() {
    let server = RedisServer::start().unwrap();
    let limiters = redis_limiters(&server.url(), None).await;
    a_release_gives_back_only_what_is_in_flight(&limiters[0]).await;
    assert_every_key_expires(&server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_lease_of_several_clients_is_released_in_every_slot() {
    let cluster = RedisCluster::start().unwrap();
    let limiters = redis_limiters(&cluster.url(), None).await;
    let per_user = Policy::new(
        "per-user",
        Algorithm::Concurrency,
        1,
        Duration::from_secs(60),
    );
    let per_tenant = Policy::new(
        "per-tenant",
        Algorithm::Concurrency,
        1,
        Duration::from_secs(60),
    );
    let (per_user, per_tenant) = (per_user.unwrap(), per_tenant.unwrap());
    // Keys chosen to land in different slots (and most likely on different masters).
    let pairs = [(&per_user, "user-a"), (&per_tenant, "tenant-b")];
    let held = limiters[0].lease_each(&pairs, 1).await.unwrap();
    assert!(held.allowed());
    assert!(!limiters[1].lease_each(&pairs, 1).await.unwrap().allowed());
    held.release().await.unwrap();
    assert!(limiters[1].lease_each(&pairs, 1).await.unwrap().allowed());
}
