//! What Sentinel and `wait_replicas` cost, and what a failover loses without them.
//!
//! `cargo bench -p floodwall --bench redis_replication` (what `bench/replication.sh` runs) starts
//! its own processes: a master with two replicas behind three sentinels, and a cluster of three
//! masters with a replica each. It reports, as JSON lines:
//!
//! 1. throughput and latency of GCRA decisions (64 callers, 10 000 keys) to the master directly
//!    and through the sentinels (alternated, twice), through the sentinels with
//!    `wait_replicas = 1` and `= 2`, and on the cluster with `wait_replicas` 0 and 1;
//! 2. the failover bound: a master SIGKILLed under load (64 callers), behind Sentinel and on the
//!    cluster, with `wait_replicas` 0 and 1: acknowledged admissions the new master does not
//!    count (lost), acknowledged admissions in all, and how long decisions failed.
//!
//! Under `cargo test` (no `--bench`) it runs a short pass of part 1 only.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use floodwall::redis::{RedisConfig, RedisStore};
use floodwall::stats::StorageStats;
use floodwall::{Algorithm, Limiter, Policy, Source};
use floodwall_testkit::{RedisCluster, RedisSentinels};
use tokio::time::Instant;

#[path = "redis_support/mod.rs"]
mod redis_support;
use redis_support::{random_key, timed_callers};

const CALLERS: u64 = 64;
const KEYS: u64 = 10_000;

fn policy() -> Policy {
    Policy::new(
        "bench",
        Algorithm::Gcra,
        1_000_000,
        Duration::from_secs(3600),
    )
    .unwrap()
}

/// A count that only the day's turn (UTC midnight) resets: what the store counted is the limit
/// less what remains.
fn counting_policy() -> Policy {
    Policy::new(
        "bench-count",
        Algorithm::FixedWindow,
        100_000_000,
        Duration::from_secs(86_400),
    )
    .unwrap()
}

async fn limiter(url: &str, wait_replicas: u32) -> Limiter {
    let config = RedisConfig::new(url)
        .timeout(Duration::from_millis(200))
        .wait_replicas(wait_replicas);
    Limiter::new(RedisStore::connect(config).await.unwrap())
}

/// [`throughput`]'s load, unreported.
async fn throughput_quietly(url: &str, seconds: f64) {
    let _ = measure(url, 0, seconds).await;
}

/// Part 1: `CALLERS` callers for `seconds`; ops/s and latency percentiles.
async fn throughput(case: &str, url: &str, wait_replicas: u32, seconds: f64) {
    let (latencies, elapsed) = measure(url, wait_replicas, seconds).await;
    let pct = |p: usize| latencies[latencies.len() * p / 100].as_secs_f64() * 1e6;
    println!(
        "{{\"bench\": \"floodwall-replication\", \"case\": \"{case}\", \"wait_replicas\": {wait_replicas}, \
         \"callers\": {CALLERS}, \"ops_per_s\": {:.0}, \"p50_us\": {:.1}, \"p99_us\": {:.1}}}",
        latencies.len() as f64 / elapsed,
        pct(50),
        pct(99),
    );
}

/// Every decision's latency, sorted, and the seconds the load took.
async fn measure(url: &str, wait_replicas: u32, seconds: f64) -> (Vec<Duration>, f64) {
    let limiter = limiter(url, wait_replicas).await;
    timed_callers(CALLERS, seconds, move |caller, n| {
        let limiter = limiter.clone();
        async move {
            let key = random_key(caller, n, KEYS).to_string();
            let verdict = limiter.check(&policy(), key, 1).await.unwrap();
            assert_eq!(verdict.source(), Source::Store);
        }
    })
    .await
}

/// Part 2: load on `limiter`, `kill` after a second, load for `recovery` more; then the
/// acknowledged admissions the store no longer counts, as a limiter that waits for no replica
/// (`looking`) sees them.
async fn failover(
    case: &str,
    url: &str,
    wait_replicas: u32,
    recovery: Duration,
    kill: impl FnOnce() + Send + 'static,
) {
    let limiter = limiter(url, wait_replicas).await;
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let failed = Arc::new(AtomicU64::new(0));
    let first_failure = Arc::new(Mutex::new(None::<Instant>));
    let last_failure = Arc::new(Mutex::new(None::<Instant>));
    let callers: Vec<_> = (0..CALLERS)
        .map(|c| {
            let (limiter, stop) = (limiter.clone(), Arc::clone(&stop));
            let (acknowledged, failed) = (Arc::clone(&acknowledged), Arc::clone(&failed));
            let (first, last) = (Arc::clone(&first_failure), Arc::clone(&last_failure));
            tokio::spawn(async move {
                let policy = counting_policy();
                let mut mine: HashMap<String, u64> = HashMap::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    // Few keys per caller, so that each key sees many admissions.
                    let key = random_key(c, i % 4, KEYS).to_string();
                    i += 1;
                    let verdict = limiter.check(&policy, &key, 1).await.unwrap();
                    if verdict.source() == Source::Store {
                        *mine.entry(key).or_default() += 1;
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                        let now = Instant::now();
                        first.lock().unwrap().get_or_insert(now);
                        *last.lock().unwrap() = Some(now);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                let mut all = acknowledged.lock().unwrap();
                for (key, count) in mine {
                    *all.entry(key).or_default() += count;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    tokio::task::spawn_blocking(kill).await.unwrap();
    tokio::time::sleep(recovery).await;
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await.unwrap();
    }
    let looking = self::limiter(url, 0).await;
    let policy = counting_policy();
    let acknowledged = acknowledged.lock().unwrap().clone();
    let (mut lost, mut total, mut keys_losing) = (0, 0, 0);
    for (key, admitted) in &acknowledged {
        let started = Instant::now();
        let verdict = loop {
            let verdict = looking.peek(&policy, key).await.unwrap();
            if verdict.source() == Source::Store || started.elapsed() > Duration::from_secs(10) {
                break verdict;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let counted = policy.limit() - verdict.decision().unwrap().remaining;
        if *admitted > counted {
            lost += admitted - counted;
            keys_losing += 1;
        }
        total += admitted;
    }
    // Behind Sentinel: masters the limiter used (2 for one failover; more when the sentinels
    // failed over again, which loses what the short-lived master acknowledged).
    let masters_used = match limiter.store().stats() {
        StorageStats::Redis(stats) => stats.sentinel.map_or(0, |master| master.changes),
        _ => 0,
    };
    let gap_ms = match (
        *first_failure.lock().unwrap(),
        *last_failure.lock().unwrap(),
    ) {
        (Some(first), Some(last)) => (last - first).as_secs_f64() * 1e3,
        _ => 0.0,
    };
    println!(
        "{{\"bench\": \"floodwall-failover\", \"case\": \"{case}\", \"wait_replicas\": {wait_replicas}, \
         \"callers\": {CALLERS}, \"acknowledged\": {total}, \"lost\": {lost}, \"keys_losing\": {keys_losing}, \
         \"keys\": {}, \"failed_decisions\": {}, \"gap_ms\": {gap_ms:.0}, \"masters_used\": {masters_used}}}",
        acknowledged.len(),
        failed.load(Ordering::Relaxed),
    );
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let seconds = if bench { 5.0 } else { 0.3 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let set = RedisSentinels::start(2, 3).unwrap();
        let direct = set.nodes()[set.master_index().unwrap()].url();
        // A first pass warms the processes and the replicas' links; it is not reported.
        throughput_quietly(&direct, seconds / 5.0).await;
        for _ in 0..2 {
            throughput("master, direct", &direct, 0, seconds).await;
            throughput("through the sentinels", &set.url(), 0, seconds).await;
        }
        throughput("through the sentinels", &set.url(), 1, seconds).await;
        throughput("through the sentinels", &set.url(), 2, seconds).await;
        drop(set);
        if !bench {
            return;
        }
        let cluster = RedisCluster::start_with(3, 1).unwrap();
        throughput(
            "cluster, 3 masters with a replica each",
            &cluster.url(),
            0,
            seconds,
        )
        .await;
        throughput(
            "cluster, 3 masters with a replica each",
            &cluster.url(),
            1,
            seconds,
        )
        .await;
        drop(cluster);
        for wait_replicas in [0, 1] {
            let set = Arc::new(Mutex::new(RedisSentinels::start(2, 3).unwrap()));
            let url = set.lock().unwrap().url();
            let killing = Arc::clone(&set);
            failover(
                "sentinel, master killed",
                &url,
                wait_replicas,
                Duration::from_secs(6),
                move || {
                    let mut set = killing.lock().unwrap();
                    let master = set.master_index().unwrap();
                    set.node_mut(master).unwrap().kill();
                },
            )
            .await;
        }
        for wait_replicas in [0, 1] {
            let cluster = Arc::new(Mutex::new(RedisCluster::start_with(3, 1).unwrap()));
            let url = cluster.lock().unwrap().url();
            let killing = Arc::clone(&cluster);
            failover(
                "cluster, a master killed",
                &url,
                wait_replicas,
                Duration::from_secs(5),
                move || {
                    killing.lock().unwrap().node_mut(0).unwrap().kill();
                },
            )
            .await;
        }
    });
}
