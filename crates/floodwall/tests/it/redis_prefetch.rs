//! Prefetches (docs/testing.md: A15): instances that reserve units of a hot key from Redis and spend
//! them themselves never admit more than the limit together, never spend a unit after the
//! window that counted it, give back what they leave idle, and spare Redis the round trips.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use floodwall::redis::{RedisConfig, RedisStore};
use floodwall::{Algorithm, ManualClock, Policy, Source};
use floodwall_testkit::{RedisCluster, RedisServer};

use crate::inspect::{assert_every_key_expires, script_calls};
use crate::support::StoreExt;

/// The period of the tests that decide on Redis's own clock. Windows are aligned to the epoch,
/// so an hour-long one ends on every hour and a run that crosses it admits a second limit;
/// one of 366 days ends once a year.
const WINDOW: Duration = Duration::from_secs(366 * 86_400);

const INSTANCES: usize = 4;
const TASKS: usize = 64;

/// A window boundary, far from any other test's keys' times.
const EPOCH_US: u64 = 1_767_225_600_000_000;

async fn instances(url: &str, clock: Option<&ManualClock>) -> Vec<RedisStore> {
    let mut stores = Vec::new();
    for _ in 0..INSTANCES {
        let config = RedisConfig::new(url).timeout(Duration::from_secs(5));
        let config = match clock {
            Some(clock) => config.clock(clock.clone()),
            None => config,
        };
        stores.push(RedisStore::connect(config).await.unwrap());
    }
    stores
}

fn prefetched(limit: u64, period: Duration, prefetch: u64) -> Arc<[Policy; 1]> {
    let policy = Policy::new("hot", Algorithm::FixedWindow, limit, period).unwrap();
    Arc::new([policy.with_prefetch(prefetch).unwrap()])
}

/// Counts of what `attempts` requests per task (64 tasks over the instances) admitted on `key`,
/// and how many of those were spent from a prefetch.
async fn race(
    stores: &[RedisStore],
    policy: &Arc<[Policy; 1]>,
    key: &'static [u8],
    attempts: usize,
) -> (u64, u64) {
    let admitted = Arc::new(AtomicU64::new(0));
    let from_leases = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let store = stores[t % stores.len()].clone();
            let (policy, admitted, from_leases) = (
                Arc::clone(policy),
                Arc::clone(&admitted),
                Arc::clone(&from_leases),
            );
            tokio::spawn(async move {
                for _ in 0..attempts {
                    let verdict = store.check(&policy[..], key, 1).await.unwrap();
                    if verdict.allowed() {
                        admitted.fetch_add(1, Ordering::Relaxed);
                        if verdict.source() == Source::Prefetched {
                            from_leases.fetch_add(1, Ordering::Relaxed);
                        }
                    } else {
                        // A denial is Redis's: a wait until the window ends, never a guess.
                        assert!(verdict.retry_after().unwrap() > Duration::ZERO);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    (
        admitted.load(Ordering::Relaxed),
        from_leases.load(Ordering::Relaxed),
    )
}

/// 4 instances × 64 tasks × 40 attempts on one key, limit 500 per window, prefetch 20: exactly the
/// limit is admitted (demand outlasts every prefetch), most of it from prefetches, in about one call
/// per prefetch.
async fn prefetching_instances_admit_exactly_the_limit(url: &str) -> u64 {
    let stores = instances(url, None).await;
    let policy = prefetched(500, WINDOW, 20);
    let (admitted, from_leases) = race(&stores, &policy, b"hot-key", 40).await;
    assert_eq!(admitted, 500);
    assert!(
        from_leases >= 400,
        "{from_leases} of 500 spent from prefetches"
    );
    from_leases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetching_instances_admit_exactly_the_limit_on_one_node() {
    let server = RedisServer::start().unwrap();
    prefetching_instances_admit_exactly_the_limit(&server.url()).await;
    // Each instance's first request is decided as usual, then about one call per 20 units, and
    // one per denial until the deny cache holds it: far fewer than the 500 admissions.
    let calls = script_calls(&server);
    assert!(calls < 120, "{calls} script calls for 500 admissions");
    assert_every_key_expires(&server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetching_instances_admit_exactly_the_limit_on_a_cluster() {
    let cluster = RedisCluster::start().unwrap();
    prefetching_instances_admit_exactly_the_limit(&cluster.url()).await;
    cluster.nodes().iter().for_each(assert_every_key_expires);
}

/// Units an instance still holds when its window ends are never spent in the next one: after
/// every instance reserved and barely spent, the next window admits exactly its limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn units_of_an_ended_window_are_never_spent() {
    let server = RedisServer::start().unwrap();
    let clock = ManualClock::new(EPOCH_US);
    let stores = instances(&server.url(), Some(&clock)).await;
    let policy = prefetched(100, Duration::from_secs(60), 30);
    // Two requests each: the first as usual, the second reserves 30 (the last instance gets
    // what is left), so every instance holds units it has not spent.
    for store in &stores {
        for _ in 0..2 {
            assert!(store.check(&policy[..], b"k", 1).await.unwrap().allowed());
        }
    }
    let held_back = stores[0].look(&policy[..], b"k").await.unwrap();
    assert_eq!(held_back.decisions()[0].remaining, 0, "all 100 reserved");

    clock.advance(Duration::from_secs(60));
    let (admitted, _) = race(&stores, &policy, b"k", 10).await;
    assert_eq!(
        admitted, 100,
        "the new window admits its limit, and no leftover"
    );

    // Within the window, nothing more.
    clock.advance(Duration::from_secs(30));
    let (admitted, _) = race(&stores, &policy, b"k", 2).await;
    assert_eq!(admitted, 0);
}

/// A prefetch left idle is given back: another instance can then spend those units.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_prefetched_units_are_given_back() {
    let server = RedisServer::start().unwrap();
    let clock = ManualClock::new(EPOCH_US);
    let stores = instances(&server.url(), Some(&clock)).await;
    let policy = prefetched(50, Duration::from_secs(60), 40);
    assert!(
        stores[0]
            .check(&policy[..], b"k", 1)
            .await
            .unwrap()
            .allowed()
    );
    let reserved = stores[0].check(&policy[..], b"k", 1).await.unwrap();
    assert!(reserved.allowed());
    assert_eq!(reserved.source(), Source::Store, "this one reserved");
    let third = stores[0].check(&policy[..], b"k", 1).await.unwrap();
    assert_eq!(third.source(), Source::Prefetched);
    assert_eq!(third.decisions()[0].remaining, 47);
    // Redis counts 41: the first request and the 40 reserved.
    let peek = stores[1].look(&policy[..], b"k").await.unwrap();
    assert_eq!(peek.decisions()[0].remaining, 9);

    // Idle past the prefetch's idle time (on the injected clock): the 38 unspent come back.
    clock.advance(Duration::from_secs(1));
    let mut remaining = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        remaining = stores[1].look(&policy[..], b"k").await.unwrap().decisions()[0].remaining;
        if remaining == 47 {
            break;
        }
    }
    assert_eq!(
        remaining, 47,
        "the idle prefetch's 38 units were given back"
    );
    let (admitted, _) = race(&stores[1..], &policy, b"k", 4).await;
    assert_eq!(admitted, 47);
}

/// A reset drops this instance's prefetch with the state: the key starts with a full quota and
/// nothing reserved before the reset is spent on top of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_forgets_the_prefetched_units() {
    let server = RedisServer::start().unwrap();
    let stores = instances(&server.url(), None).await;
    let store = &stores[0];
    let policy = prefetched(10, WINDOW, 10);
    for _ in 0..2 {
        assert!(store.check(&policy[..], b"k", 1).await.unwrap().allowed());
    }
    store.forget(&policy[..], b"k").await.unwrap();
    let mut admitted = 0;
    for _ in 0..20 {
        admitted += u64::from(store.check(&policy[..], b"k", 1).await.unwrap().allowed());
    }
    assert_eq!(admitted, 10);
}
