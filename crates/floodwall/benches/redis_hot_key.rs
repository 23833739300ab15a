//! One hot key across 4 `RedisStore` instances (each with its own connection, in this
//! process), 64 callers, with a policy's prefetch off and at 10, 100 and 1000 units: decisions per
//! second, latency percentiles, Redis script calls per decision and Redis CPU per decision.
//!
//! `REDIS_URL=redis://127.0.0.1:PORT cargo bench -p floodwall --bench redis_hot_key` (what
//! `bench/redis.sh` runs). Without `--bench` (under `cargo test`) it starts its own server and
//! runs a short smoke pass.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use floodwall::redis::{RedisConfig, RedisStore};
use floodwall::store::Store;
use floodwall::{Algorithm, Check, Policy};
use floodwall_testkit::RedisServer;

#[path = "redis_support/mod.rs"]
mod redis_support;
use redis_support::{script_cost, timed_callers};

const INSTANCES: usize = 4;
const CALLERS: usize = 64;

async fn run(url: &str, seconds: f64) {
    let client = redis::Client::open(url).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    for prefetch in [0, 10, 100, 1_000] {
        // Never reached: the bench measures the cost of deciding, not of denying.
        let policy = Policy::new(
            "hot",
            Algorithm::FixedWindow,
            1 << 40,
            Duration::from_secs(3600),
        )
        .unwrap()
        .with_prefetch(prefetch)
        .unwrap();
        let policy = Arc::new([policy]);
        let _: () = redis::cmd("FLUSHALL")
            .query_async(&mut admin)
            .await
            .unwrap();
        let mut stores = Vec::new();
        for _ in 0..INSTANCES {
            let config = RedisConfig::new(url).timeout(Duration::from_secs(2));
            stores.push(RedisStore::connect(config).await.unwrap());
        }
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut admin)
            .await
            .unwrap();
        let (latencies, elapsed) = timed_callers(CALLERS as u64, seconds, move |caller, _| {
            let (store, policy) = (
                stores[caller as usize % INSTANCES].clone(),
                Arc::clone(&policy),
            );
            async move {
                let check = Check::new(&policy[..], b"hot", 1).unwrap();
                assert!(store.decide(&check).await.unwrap().allowed);
            }
        })
        .await;
        let (calls, usec) = script_cost(&mut admin).await;
        let pct = |p: usize| latencies[latencies.len() * p / 100].as_secs_f64() * 1e6;
        let decisions = latencies.len() as f64;
        println!(
            "{{\"bench\": \"floodwall-redis-hot-key\", \"prefetch\": {prefetch}, \"instances\": {INSTANCES}, \"callers\": {CALLERS}, \
             \"ops_per_s\": {:.0}, \"p50_us\": {:.1}, \"p99_us\": {:.1}, \"calls_per_decision\": {:.4}, \"usec_per_decision\": {:.3}}}",
            decisions / elapsed,
            pct(50),
            pct(99),
            calls / decisions.max(1.0),
            usec / decisions.max(1.0),
        );
    }
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
            runtime.block_on(run(&url, seconds));
        }
        _ => {
            let server = RedisServer::start().unwrap();
            runtime.block_on(run(&server.url(), 0.2));
        }
    }
}
