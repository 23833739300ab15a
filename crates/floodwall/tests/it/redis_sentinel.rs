//! Redis behind Sentinel, with real processes: a master, a replica and three sentinels. Exact
//! decisions through the sentinels, a manual failover and a killed master followed, a sentinel
//! that is down or names a stale master, and a wrong master name refused at start.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use floodwall::redis::{RedisConfig, RedisStore};
use floodwall::stats::{RedisStats, StorageStats};
use floodwall::{Algorithm, Limiter, Policy, Source, StoreError};
use floodwall_testkit::RedisSentinels;
use tokio::time::Instant;

const DEADLINE: Duration = Duration::from_millis(50);

/// How long a limiter may take to follow a failover once the sentinels have named the new
/// master: a few rounds of asking them, each after a failed call.
const FOLLOW_BOUND: Duration = Duration::from_secs(3);

fn hourly(limit: u64) -> Policy {
    Policy::new(
        "sentinel",
        Algorithm::FixedWindow,
        limit,
        Duration::from_secs(3600),
    )
    .unwrap()
}

async fn limiter(url: &str) -> Limiter {
    Limiter::new(
        RedisStore::connect(RedisConfig::new(url).timeout(DEADLINE))
            .await
            .unwrap(),
    )
}

fn redis_stats(limiter: &Limiter) -> RedisStats {
    match limiter.store().stats() {
        StorageStats::Redis(stats) => stats,
        other => panic!("not a Redis store: {other:?}"),
    }
}

/// The port of the master `limiter` sends its calls to.
fn master_port_in_use(limiter: &Limiter) -> Option<u16> {
    let sentinel = redis_stats(limiter)
        .sentinel
        .expect("a store behind Sentinel");
    sentinel
        .address
        .and_then(|address| address.rsplit_once(':')?.1.parse().ok())
}

/// Waits until `limiter` uses node `master` of `set` and decides there again.
async fn wait_until_following(
    limiter: &Limiter,
    set: &RedisSentinels,
    master: usize,
    policy: &Policy,
) -> Duration {
    let started = Instant::now();
    loop {
        let verdict = limiter.check(policy, "probe", 1).await.unwrap();
        if master_port_in_use(limiter) == set.nodes()[master].port()
            && verdict.source() == Source::Store
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < FOLLOW_BOUND,
            "not following node {master} after {:?}: {:?}",
            started.elapsed(),
            redis_stats(limiter)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks on `key` from `limiter` until `stop`, counting what the store admitted and what was
/// answered without it.
fn load(
    limiter: Limiter,
    policy: Policy,
    key: &'static str,
    stop: Arc<AtomicBool>,
    admitted: Arc<AtomicU64>,
    fail_open: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let verdict = limiter.check(&policy, key, 1).await.unwrap();
            assert!(
                started.elapsed() < DEADLINE + Duration::from_millis(100),
                "a decision took {:?}",
                started.elapsed()
            );
            match verdict.source() {
                Source::Store if verdict.allowed() => {
                    admitted.fetch_add(1, Ordering::Relaxed);
                }
                Source::FailOpen => {
                    fail_open.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
}

/// What the master the sentinels name now has counted for `key`.
async fn counted(limiter: &Limiter, policy: &Policy, key: &str) -> u64 {
    let verdict = limiter.peek(policy, key).await.unwrap();
    assert_eq!(verdict.source(), Source::Store);
    policy.limit() - verdict.decision().unwrap().remaining
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_limiters_through_the_sentinels_decide_exactly() {
    let set = RedisSentinels::start(1, 3).unwrap();
    let (a, b) = (limiter(&set.url()).await, limiter(&set.url()).await);
    let master = set.master_index().unwrap();
    assert_eq!(master_port_in_use(&a), set.nodes()[master].port());
    let policy = hourly(100);
    let mut tasks = Vec::new();
    for limiter in [a.clone(), b.clone(), a.clone(), b.clone()] {
        let policy = policy.clone();
        tasks.push(tokio::spawn(async move {
            let mut admitted = 0;
            for _ in 0..60 {
                let verdict = limiter.check(&policy, "shared", 1).await.unwrap();
                // A denial may be repeated from this instance's memory of the store's.
                assert!(
                    matches!(verdict.source(), Source::Store | Source::DenyCache),
                    "{:?}",
                    verdict.source()
                );
                admitted += u64::from(verdict.allowed());
            }
            admitted
        }));
    }
    let mut admitted = 0;
    for task in tasks {
        admitted += task.await.unwrap();
    }
    assert_eq!(admitted, 100, "240 checks against a limit of 100");
    let stats = redis_stats(&a).sentinel.unwrap();
    assert_eq!(stats.name, RedisSentinels::MASTER_NAME);
    assert_eq!(stats.changes, 1, "the first master found counts as one");
    assert!(stats.changed_at_unix_ms > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_failover_under_load_is_followed_and_counts_continue() {
    let set = RedisSentinels::start(1, 3).unwrap();
    let (a, b) = (limiter(&set.url()).await, limiter(&set.url()).await);
    let policy = hourly(1_000_000);
    let stop = Arc::new(AtomicBool::new(false));
    let admitted = Arc::new(AtomicU64::new(0));
    let fail_open = Arc::new(AtomicU64::new(0));
    let loads: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .map(|limiter| {
            load(
                limiter,
                policy.clone(),
                "busy",
                Arc::clone(&stop),
                Arc::clone(&admitted),
                Arc::clone(&fail_open),
            )
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before_failover = admitted.load(Ordering::Relaxed);
    assert!(before_failover > 50, "the load ran: {before_failover}");
    let set = Arc::new(set);
    let new_master = {
        let set = Arc::clone(&set);
        tokio::task::spawn_blocking(move || set.failover())
            .await
            .unwrap()
            .unwrap()
    };
    let followed_a = wait_until_following(&a, &set, new_master, &policy).await;
    let followed_b = wait_until_following(&b, &set, new_master, &policy).await;
    eprintln!("followed the failover within {followed_a:?} and {followed_b:?}");
    // Once both follow, nothing is answered without the store.
    let fail_open_after = fail_open.load(Ordering::Relaxed);
    let admitted_after = admitted.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for task in loads {
        task.await.unwrap();
    }
    assert_eq!(fail_open.load(Ordering::Relaxed), fail_open_after);
    assert!(admitted.load(Ordering::Relaxed) > admitted_after + 50);
    // The replica was in sync when it was promoted: what was admitted before the failover
    // began is counted on the new master.
    let on_new_master = counted(&a, &policy, "busy").await;
    assert!(
        on_new_master >= before_failover,
        "{on_new_master} counted, {before_failover} admitted before the failover"
    );
    let stats = redis_stats(&a).sentinel.unwrap();
    assert_eq!(stats.changes, 2, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_is_followed_and_the_gap_is_answered_per_on_error() {
    let mut set = RedisSentinels::start(1, 3).unwrap();
    let a = limiter(&set.url()).await;
    let policy = hourly(1_000_000);
    let old = set.master_index().unwrap();
    assert_eq!(
        a.check(&policy, "k", 1).await.unwrap().source(),
        Source::Store
    );
    set.node_mut(old).unwrap().kill();
    let killed = Instant::now();
    // During the gap: answered at once, per on_error (allow), never an error to the caller.
    let mut gap = 0;
    let new_master = loop {
        let started = Instant::now();
        let verdict = a.check(&policy, "k", 1).await.unwrap();
        assert!(started.elapsed() < DEADLINE + Duration::from_millis(100));
        if verdict.source() == Source::Store {
            break set.master_index().unwrap();
        }
        assert_eq!(verdict.source(), Source::FailOpen);
        gap += 1;
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "not following after {:?}: {:?}",
            killed.elapsed(),
            redis_stats(&a)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_ne!(new_master, old);
    assert!(gap > 0, "the kill left no gap");
    eprintln!(
        "decided by the new master {:?} after the kill",
        killed.elapsed()
    );
    assert_eq!(master_port_in_use(&a), set.nodes()[new_master].port());
    // Enforcing resumed by itself: a denial is a denial again.
    let small = hourly(3);
    for _ in 0..3 {
        assert!(a.check(&small, "after", 1).await.unwrap().allowed());
    }
    let denied = a.check(&small, "after", 1).await.unwrap();
    assert!(!denied.allowed());
    assert_eq!(denied.source(), Source::Store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_that_is_down_or_names_a_stale_master_is_passed_over() {
    let mut set = RedisSentinels::start(1, 3).unwrap();
    let old = set.master_index().unwrap();
    // The first sentinel of the URL is down: the others answer.
    set.sentinel_mut(0).unwrap().kill();
    let policy = hourly(10);
    let a = limiter(&set.url()).await;
    for _ in 0..10 {
        assert!(a.check(&policy, "exact", 1).await.unwrap().allowed());
    }
    assert!(!a.check(&policy, "exact", 1).await.unwrap().allowed());
    // A failover it does not see: when it comes back it names the old master until it hears
    // from the others, and that node is a replica now.
    let new_master = set.failover().unwrap();
    assert_ne!(new_master, old);
    set.sentinel_mut(0).unwrap().restart().unwrap();
    let b = limiter(&set.url()).await;
    assert_eq!(master_port_in_use(&b), set.nodes()[new_master].port());
    let verdict = b.check(&policy, "exact", 1).await.unwrap();
    assert_eq!(verdict.source(), Source::Store);
    assert!(!verdict.allowed(), "the count moved with the failover");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_name_no_sentinel_knows_is_a_clear_error_at_start() {
    let set = RedisSentinels::start(0, 1).unwrap();
    let url = set
        .url()
        .replace(RedisSentinels::MASTER_NAME, "no-such-master");
    let error = RedisStore::connect(RedisConfig::new(url))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Config { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("\"no-such-master\""), "{message}");
    assert!(message.contains("SENTINEL MASTERS"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinels_that_cannot_be_reached_at_start_are_an_outage_not_an_error() {
    let mut set = RedisSentinels::start(0, 1).unwrap();
    set.sentinel_mut(0).unwrap().kill();
    let a = limiter(&set.url()).await;
    let policy = hourly(5);
    let verdict = a.check(&policy, "k", 1).await.unwrap();
    assert_eq!(verdict.source(), Source::FailOpen);
    assert_eq!(redis_stats(&a).sentinel.unwrap().address, None);
    set.sentinel_mut(0).unwrap().restart().unwrap();
    let started = Instant::now();
    while a.check(&policy, "k", 1).await.unwrap().source() != Source::Store {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never connected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(master_port_in_use(&a), set.nodes()[0].port());
}
