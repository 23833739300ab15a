//! `RedisStore` under load: decisions per second and latency percentiles with 64 concurrent
//! callers on 10 000 random keys, Redis CPU per decision (`INFO commandstats`), and Redis memory
//! per tracked client at 100 000 keys, for each algorithm; and checks of two policies at once,
//! which go to Redis one script call each, never coalesced.
//!
//! `REDIS_URL=redis://127.0.0.1:PORT cargo bench -p floodwall --bench redis_throughput` (what
//! `bench/redis.sh` runs, beside the anchors on the same server). Without `--bench` (under
//! `cargo test`) it starts its own server and runs a short smoke pass.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use floodwall::redis::{RedisConfig, RedisStore};
use floodwall::store::Store;
use floodwall::{Algorithm, Check, Policy};
use floodwall_testkit::RedisServer;

#[path = "redis_support/mod.rs"]
mod redis_support;
use redis_support::{info_number, memory_policy, random_key, script_cost, timed_callers};

const CALLERS: usize = 64;

fn throughput_policy(algorithm: Algorithm) -> Policy {
    // Never reached at ~10 requests per key per second, as in the anchors' scripts.
    let limit = if matches!(algorithm, Algorithm::SlidingLog | Algorithm::Concurrency) {
        100
    } else {
        1_000
    };
    Policy::new("bench", algorithm, limit, Duration::from_secs(1)).unwrap()
}

async fn run(url: &str, seconds: f64, keys: u64, memory_keys: u64) {
    let client = redis::Client::open(url).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let config = RedisConfig::new(url).timeout(Duration::from_secs(2));
    let store = RedisStore::connect(config).await.unwrap();
    for algorithm in Algorithm::ALL {
        let policy: Arc<[Policy]> = Arc::new([throughput_policy(algorithm)]);
        let _: () = redis::cmd("FLUSHALL")
            .query_async(&mut admin)
            .await
            .unwrap();
        for k in 0..keys {
            let key = k.to_string();
            let check = Check::new(&policy[..], key.as_bytes(), 1).unwrap();
            store.decide(&check).await.unwrap();
        }
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut admin)
            .await
            .unwrap();
        let (latencies, elapsed) = measure(&store, &policy, keys, seconds).await;
        let pct = |p: usize| latencies[latencies.len() * p / 100].as_secs_f64() * 1e6;
        let (calls, usec) = script_cost(&mut admin).await;
        let usec_per_call = usec / calls.max(1.0);
        // Redis's CPU per decision, and how many decisions a call carried (coalescing).
        let decisions = latencies.len() as f64;
        let usec_per_decision = usec / decisions.max(1.0);
        let per_call = decisions / calls.max(1.0);

        // Memory per tracked client: a fresh keyspace, `memory_keys` clients, one request each
        // (ten for the sliding log, for the anchors' 10-entry log).
        let _: () = redis::cmd("FLUSHALL")
            .query_async(&mut admin)
            .await
            .unwrap();
        let before = info_number(&mut admin, "memory", "used_memory", None).await;
        let memory_policy = Arc::new([memory_policy(algorithm)]);
        let per_client = if matches!(algorithm, Algorithm::SlidingLog | Algorithm::Concurrency) {
            10
        } else {
            1
        };
        let fillers: Vec<_> = (0..CALLERS as u64)
            .map(|c| {
                let (store, policy) = (store.clone(), Arc::clone(&memory_policy));
                tokio::spawn(async move {
                    for k in (c..memory_keys).step_by(CALLERS) {
                        for _ in 0..per_client {
                            let key = format!("203.0.{}.{}", k / 256, k % 256);
                            let check = Check::new(&policy[..], key.as_bytes(), 1).unwrap();
                            store.decide(&check).await.unwrap();
                        }
                    }
                })
            })
            .collect();
        for filler in fillers {
            filler.await.unwrap();
        }
        let after = info_number(&mut admin, "memory", "used_memory", None).await;
        let bytes_per_client = (after - before) / memory_keys as f64;
        println!(
            "{{\"bench\": \"floodwall-redis\", \"algorithm\": \"{algorithm}\", \"callers\": {CALLERS}, \"keys\": {keys}, \
             \"ops_per_s\": {:.0}, \"p50_us\": {:.1}, \"p99_us\": {:.1}, \"usec_per_call\": {usec_per_call:.2}, \"usec_per_decision\": {usec_per_decision:.2}, \"decisions_per_call\": {per_call:.1}, \
             \"bytes_per_client\": {bytes_per_client:.1}, \"entries_per_client\": {per_client}}}",
            latencies.len() as f64 / elapsed,
            pct(50),
            pct(99),
        );
    }
    two_policies(&store, keys, seconds).await;
}

/// `CALLERS` callers deciding `policies` for random keys of `keys` for `seconds`: every
/// decision's latency, sorted, and the time it took.
async fn measure(
    store: &RedisStore,
    policies: &Arc<[Policy]>,
    keys: u64,
    seconds: f64,
) -> (Vec<Duration>, f64) {
    let (store, policies) = (store.clone(), Arc::clone(policies));
    timed_callers(CALLERS as u64, seconds, move |caller, n| {
        let (store, policies) = (store.clone(), Arc::clone(&policies));
        async move {
            let key = random_key(caller, n, keys).to_string();
            let check = Check::new(&policies[..], key.as_bytes(), 1).unwrap();
            assert!(store.decide(&check).await.unwrap().allowed);
        }
    })
    .await
}

/// Two policies of one client in each check (gcra and fixed_window): one script call per
/// decision, never coalesced, on a task of its own that finishes whoever waits.
async fn two_policies(store: &RedisStore, keys: u64, seconds: f64) {
    let policies: Arc<[Policy]> = Arc::new([
        throughput_policy(Algorithm::Gcra),
        Policy::new(
            "bench-2",
            Algorithm::FixedWindow,
            1_000,
            Duration::from_secs(1),
        )
        .unwrap(),
    ]);
    let (latencies, elapsed) = measure(store, &policies, keys, seconds).await;
    let pct = |p: usize| latencies[latencies.len() * p / 100].as_secs_f64() * 1e6;
    println!(
        "{{\"bench\": \"floodwall-redis\", \"algorithm\": \"gcra+fixed_window\", \"callers\": {CALLERS}, \"keys\": {keys}, \"ops_per_s\": {:.0}, \"p50_us\": {:.1}, \"p99_us\": {:.1}}}",
        latencies.len() as f64 / elapsed,
        pct(50),
        pct(99),
    );
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    match (bench, std::env::var("REDIS_URL")) {
        (true, Ok(url)) => {
            let seconds = std::env::var("BENCH_SECONDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(5.0);
            runtime.block_on(run(&url, seconds, 10_000, 100_000));
        }
        _ => {
            // Smoke pass: our own server, a fraction of a second per algorithm.
            let server = RedisServer::start().unwrap();
            runtime.block_on(run(&server.url(), 0.2, 1_000, 1_000));
        }
    }
}
