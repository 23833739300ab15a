//! Redis faults with real processes: kill -9 and restart, SIGSTOP, SCRIPT FLUSH, a store built
//! before Redis is up, plus the deny cache's contract and the script cache's size. These measure
//! real latency (deadlines are the point), on tokio's clock.

use crate::support::StoreExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use floodwall::redis::{RedisConfig, RedisStore};
use floodwall::stats::StorageStats;
use floodwall::store::Store;
use floodwall::{
    Algorithm, Check, Error, Limiter, ManualClock, OnError, Policy, Source, StoreErrorKind,
};
use floodwall_testkit::RedisServer;
use tokio::time::Instant;

use crate::inspect::{assert_every_key_expires, info_u64, keys_and_expires, script_calls};

const DEADLINE: Duration = Duration::from_millis(50);

pub(crate) fn hourly(limit: u64) -> Policy {
    Policy::new("faults", Algorithm::Gcra, limit, Duration::from_secs(3600)).unwrap()
}

async fn store(server: &RedisServer) -> RedisStore {
    RedisStore::connect(RedisConfig::new(server.url()).timeout(DEADLINE))
        .await
        .unwrap()
}

/// The Redis store's open circuit breakers.
fn open_breakers(limiter: &Limiter) -> usize {
    match limiter.store().stats() {
        StorageStats::Redis(stats) => stats.open_breakers,
        other => panic!("not a Redis store: {other:?}"),
    }
}

/// Calls until a decision comes from Redis again; returns how long that took.
async fn until_redis_decides(limiter: &Limiter, policy: &Policy) -> Duration {
    let started = Instant::now();
    loop {
        if let Ok(verdict) = limiter.check(policy, "recovery", 1).await
            && verdict.source() == Source::Store
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "Redis never came back"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_redis_is_answered_per_on_error_within_the_deadline_and_recovers() {
    let mut server = RedisServer::start().unwrap();
    let policy_allow = hourly(1_000);
    let policy_deny = hourly(1_000).with_on_error(OnError::Deny);
    let policy_local = Policy::new(
        "local",
        Algorithm::FixedWindow,
        3,
        Duration::from_secs(3600),
    )
    .unwrap()
    .with_on_error(OnError::Local);
    let limiter = Limiter::new(store(&server).await);
    assert_eq!(
        limiter.check(&policy_allow, "k", 1).await.unwrap().source(),
        Source::Store
    );

    server.kill();
    let mut slowest = Duration::ZERO;
    for i in 0..50 {
        let started = Instant::now();
        let allow = limiter.check(&policy_allow, "k", 1).await.unwrap();
        assert!(
            allow.allowed() && allow.source() == Source::FailOpen,
            "C1: {allow:?}"
        );
        let deny = limiter.check(&policy_deny, "k", 1).await;
        assert!(
            matches!(deny, Err(Error::StoreUnavailable { .. })),
            "C2: {deny:?}"
        );
        let local = limiter.check(&policy_local, "k", 1).await.unwrap();
        assert_eq!(local.source(), Source::Local, "C3");
        assert_eq!(
            local.allowed(),
            i < 3,
            "C3: the local fallback enforces the policy"
        );
        slowest = slowest.max(started.elapsed() / 3);
    }
    assert!(
        slowest < DEADLINE + Duration::from_millis(25),
        "a decision took {slowest:?}"
    );
    let stats = limiter.stats();
    assert_eq!(
        (stats.fail_open, stats.fail_closed, stats.local),
        (50, 50, 50)
    );
    // A dead server shows first as connection errors, then as the open circuit.
    let errors = stats.store_errors;
    assert_eq!(errors.iter().map(|(_, count)| count).sum::<u64>(), 150);
    assert!(
        errors.get(StoreErrorKind::CircuitOpen) > 0
            && errors.get(StoreErrorKind::Redis) + errors.get(StoreErrorKind::Timeout) > 0,
        "{errors:?}"
    );

    server.restart().unwrap();
    let recovery = until_redis_decides(&limiter, &policy_allow).await;
    assert!(
        recovery <= Duration::from_secs(1),
        "recovered after {recovery:?}"
    );
    assert_every_key_expires(&server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_redis_opens_the_breaker_and_costs_no_storm() {
    let server = RedisServer::start().unwrap();
    let limiter = Limiter::new(store(&server).await);
    let policy = Arc::new(hourly(1_000_000));
    assert!(limiter.check(&policy, "warm", 1).await.unwrap().allowed());

    let paused = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..64)
        .map(|t| {
            let (limiter, policy, paused, stop) = (
                limiter.clone(),
                Arc::clone(&policy),
                Arc::clone(&paused),
                Arc::clone(&stop),
            );
            tokio::spawn(async move {
                let mut outage_latencies = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let during = paused.load(Ordering::Relaxed);
                    let started = Instant::now();
                    let verdict = limiter.check(&policy, format!("k{t}"), 1).await.unwrap();
                    if during && paused.load(Ordering::Relaxed) {
                        outage_latencies.push(started.elapsed());
                        assert_eq!(verdict.source(), Source::FailOpen);
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                outage_latencies
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(open_breakers(&limiter), 0);
    server.pause().unwrap();
    paused.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(open_breakers(&limiter), 1, "the breaker did not open");
    paused.store(false, Ordering::Relaxed);
    server.resume().unwrap();
    let recovery = until_redis_decides(&limiter, &policy).await;
    assert_eq!(open_breakers(&limiter), 0, "the breaker stayed open");
    stop.store(true, Ordering::Relaxed);
    let mut latencies: Vec<Duration> = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    let worst = latencies[latencies.len() - 1];
    assert!(
        latencies.len() > 1_000,
        "only {} outage decisions",
        latencies.len()
    );
    assert!(
        p99 < Duration::from_millis(5),
        "outage p99 {p99:?} (worst {worst:?})"
    );
    assert!(
        worst < DEADLINE + Duration::from_millis(50),
        "worst {worst:?}"
    );
    assert!(
        recovery <= Duration::from_secs(1),
        "recovered after {recovery:?}"
    );
    // One multiplexed connection for the store, one for redis-cli: no reconnection storm.
    let connected = info_u64(&server, "clients", "connected_clients");
    assert!(
        connected <= 3,
        "{connected} clients connected after the outage"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_flushes_under_load_never_surface() {
    let server = RedisServer::start().unwrap();
    let store = RedisStore::connect(RedisConfig::new(server.url()).timeout(Duration::from_secs(2)))
        .await
        .unwrap();
    let policy = Arc::new([hourly(1_000_000)]);
    let stop = Arc::new(AtomicBool::new(false));
    let decided = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let (store, policy, stop, decided) = (
                store.clone(),
                Arc::clone(&policy),
                Arc::clone(&stop),
                Arc::clone(&decided),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let verdict = store
                        .check(&policy[..], format!("k{t}").as_bytes(), 1)
                        .await;
                    assert!(verdict.is_ok_and(|v| v.allowed()), "a flush surfaced");
                    decided.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(server.cli(&["SCRIPT", "FLUSH"]).unwrap(), "OK");
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    assert!(decided.load(Ordering::Relaxed) > 100);
    assert_eq!(info_u64(&server, "memory", "number_of_cached_scripts"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_built_before_redis_starts_connects_once_it_is_up() {
    let mut server = RedisServer::start().unwrap();
    server.kill();
    // The store is built while nothing listens.
    let limiter = Limiter::new(store(&server).await);
    let policy = hourly(10);
    let verdict = limiter.check(&policy, "k", 1).await.unwrap();
    assert_eq!(verdict.source(), Source::FailOpen);
    tokio::time::sleep(Duration::from_secs(5)).await;
    server.restart().unwrap();
    let recovery = until_redis_decides(&limiter, &policy).await;
    assert!(
        recovery <= Duration::from_secs(1),
        "connected {recovery:?} after Redis came up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deny_cache_spares_redis_and_never_admits() {
    let server = RedisServer::start().unwrap();
    let clock = ManualClock::new(1_767_225_600_000_000);
    let config = RedisConfig::new(server.url())
        .timeout(Duration::from_secs(2))
        .clock(clock.clone());
    let store = RedisStore::connect(config).await.unwrap();
    let policies =
        [Policy::new("cached", Algorithm::SlidingLog, 2, Duration::from_secs(10)).unwrap()];
    assert!(
        store
            .check(&policies, b"hammer", 1)
            .await
            .unwrap()
            .allowed()
    );
    assert!(
        store
            .check(&policies, b"hammer", 1)
            .await
            .unwrap()
            .allowed()
    );
    let first = store.check(&policies, b"hammer", 1).await.unwrap();
    assert!(!first.allowed());
    assert_eq!(first.source(), floodwall::Source::Store);
    let calls_before = script_calls(&server);
    for _ in 0..1_000 {
        clock.advance(Duration::from_millis(1));
        let repeat = store.check(&policies, b"hammer", 1).await.unwrap();
        assert!(!repeat.allowed());
        assert_eq!(repeat.source(), floodwall::Source::DenyCache);
    }
    assert_eq!(
        script_calls(&server),
        calls_before,
        "the repeats reached Redis"
    );
    // Exactly at the original retry_after, Redis decides again, and admits.
    let retry = first.retry_after().unwrap();
    clock.set_us(1_767_225_600_000_000 + u64::try_from(retry.as_micros()).unwrap() - 1);
    assert_eq!(
        store.check(&policies, b"hammer", 1).await.unwrap().source(),
        floodwall::Source::DenyCache
    );
    clock.advance(Duration::from_micros(1));
    let admitted = store.check(&policies, b"hammer", 1).await.unwrap();
    assert!(admitted.allowed() && admitted.source() == floodwall::Source::Store);
    // A reset through this instance forgets the cached denial at once.
    store.check(&policies, b"hammer", 1).await.unwrap();
    assert!(
        !store
            .check(&policies, b"hammer", 1)
            .await
            .unwrap()
            .allowed()
    );
    store.forget(&policies, b"hammer").await.unwrap();
    assert!(
        store
            .check(&policies, b"hammer", 1)
            .await
            .unwrap()
            .allowed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_number_of_cached_scripts_whatever_the_keys() {
    let server = RedisServer::start().unwrap();
    let store = RedisStore::connect(RedisConfig::new(server.url()).timeout(Duration::from_secs(5)))
        .await
        .unwrap();
    // Every algorithm's single-policy decisions, the multi-policy script, and (every seventh
    // call) the refund.
    let mut choices: Vec<Vec<Policy>> = Algorithm::ALL
        .into_iter()
        .map(|algorithm| vec![Policy::new("one", algorithm, 5, Duration::from_secs(3600)).unwrap()])
        .collect();
    choices.push(vec![
        hourly(5),
        Policy::new(
            "second",
            Algorithm::SlidingWindow,
            5,
            Duration::from_secs(60),
        )
        .unwrap(),
    ]);
    let choices = Arc::new(choices);
    let tasks: Vec<_> = (0..32u64)
        .map(|t| {
            let (store, choices) = (store.clone(), Arc::clone(&choices));
            tokio::spawn(async move {
                for i in (t..100_000).step_by(32) {
                    let key = format!("{{}}{i}\r\n{{");
                    let policies = &choices[usize::try_from(i).unwrap() % choices.len()];
                    store.check(policies, key.as_bytes(), 1).await.unwrap();
                    if i % 7 == 0 {
                        let check = Check::new(policies, key.as_bytes(), 1).unwrap();
                        store.refund(&check).await.unwrap();
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    // Single-policy decisions all went out coalesced, so: one batch script per algorithm, the
    // multi-policy one, and the refund. (The single-policy scripts serve breaker probes alone.)
    let scripts = u64::try_from(Algorithm::ALL.len()).unwrap() + 2;
    assert_eq!(
        info_u64(&server, "memory", "number_of_cached_scripts"),
        scripts
    );
    assert_every_key_expires(&server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_fallback_admits_an_instances_share_of_the_limit() {
    let mut server = RedisServer::start().unwrap();
    let limiter = Limiter::builder(store(&server).await)
        .local_share(8)
        .build();
    let policy = Policy::new(
        "shared",
        Algorithm::SlidingWindow,
        80,
        Duration::from_secs(3600),
    )
    .unwrap()
    .with_on_error(OnError::Local);
    server.kill();
    let mut admitted = 0;
    for _ in 0..50 {
        let verdict = limiter.check(&policy, "k", 1).await.unwrap();
        assert_eq!(verdict.source(), Source::Local);
        admitted += u64::from(verdict.allowed());
    }
    // ⌈80 / 8⌉ on this instance while Redis is down (docs/testing.md: C3).
    assert_eq!(admitted, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_cancelled_mid_flight_leave_every_key_with_an_expiry() {
    let server = RedisServer::start().unwrap();
    for round in 0..5u64 {
        let stores = eight_stores(&server).await;
        let policies = Arc::new([
            hourly(3),
            Policy::new("log", Algorithm::SlidingLog, 4, Duration::from_secs(60)).unwrap(),
        ]);
        let tasks: Vec<_> = (0..64u64)
            .map(|t| {
                let (store, policies) = (
                    stores[t as usize % stores.len()].clone(),
                    Arc::clone(&policies),
                );
                tokio::spawn(async move {
                    for i in 0.. {
                        let key = format!("r{round}-{}", (i * 31 + t) % 500);
                        let _ = store.check(&policies[..], key.as_bytes(), 1).await;
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100 + 37 * round)).await;
        // Abort every caller wherever it is, then drop the stores and their connections.
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
        drop(stores);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_every_key_expires(&server);
}

async fn eight_stores(server: &RedisServer) -> Vec<RedisStore> {
    let mut stores = Vec::new();
    for _ in 0..8 {
        stores.push(
            RedisStore::connect(RedisConfig::new(server.url()))
                .await
                .unwrap(),
        );
    }
    stores
}

/// The environment variable that turns this test binary into a hammering limiter process.
const HAMMER_URL: &str = "FLOODWALL_TEST_HAMMER_URL";

/// docs/testing.md: C16: a limiter process killed with SIGKILL mid-call, ten times, never leaves a
/// key without an expiry. The test runs its own binary again as the limiter process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limiter_process_killed_mid_call_leaves_every_key_with_an_expiry() {
    if let Ok(url) = std::env::var(HAMMER_URL) {
        hammer_until_killed(&url).await;
    }
    let server = RedisServer::start().unwrap();
    let exe = std::env::current_exe().unwrap();
    for round in 0..10u64 {
        let mut child = std::process::Command::new(&exe)
            .args([
                "--exact",
                "redis_faults::a_limiter_process_killed_mid_call_leaves_every_key_with_an_expiry",
                "--test-threads=1",
            ])
            .env(HAMMER_URL, server.url())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Kill it while it is busy: once it has written, after a different pause each round.
        let before = info_u64(&server, "stats", "total_commands_processed");
        let started = Instant::now();
        while info_u64(&server, "stats", "total_commands_processed") < before + 200 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the limiter process never ran"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(7 + 23 * round)).await;
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let (keys, _) = keys_and_expires(&server);
    assert!(keys > 100, "the killed processes wrote only {keys} keys");
    assert_every_key_expires(&server);
}

/// The limiter process: 64 tasks deciding two policies, one a multi-unit sliding log, on 1 000
/// keys, until killed.
async fn hammer_until_killed(url: &str) -> ! {
    let store = RedisStore::connect(RedisConfig::new(url).timeout(Duration::from_secs(2)))
        .await
        .unwrap();
    let policies = Arc::new([
        hourly(50),
        Policy::new("log", Algorithm::SlidingLog, 40, Duration::from_secs(60)).unwrap(),
    ]);
    for t in 0..64u64 {
        let (store, policies) = (store.clone(), Arc::clone(&policies));
        tokio::spawn(async move {
            for i in 0u64.. {
                let key = format!("c16-{}", (i * 31 + t) % 1_000);
                let _ = store.check(&policies[..], key.as_bytes(), 1 + i % 3).await;
            }
        });
    }
    loop {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
}
