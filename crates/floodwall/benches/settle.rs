//! What a cost known after the answer costs, beside a plain check, through the `Limiter`:
//! decisions per second and latency percentiles with 64 concurrent callers on 10 000 random
//! keys, on the memory store and on Redis, for
//!
//! - `check`: one check of cost 1 (the baseline);
//! - `debit`: one charge of 1 whatever is left;
//! - `reserve+settle`: a reservation of 1 settled at 2 (a check, then a charge of 1);
//! - `reserve+keep+settle_kept`: the same kept in the store under an id and settled by it, as
//!   the check API's `"reserve": true` and `POST /v1/settle` do (adds a record's write and its
//!   take).
//!
//! `REDIS_URL=redis://127.0.0.1:PORT cargo bench -p floodwall --bench settle` (`bench/settle.sh`
//! starts the server). Without `--bench` (under `cargo test`) it starts its own server and runs
//! a short smoke pass.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use floodwall::redis::{RedisConfig, RedisStore};
use floodwall::{Algorithm, Limiter, MemoryStore, Policy};
use floodwall_testkit::RedisServer;

#[path = "redis_support/mod.rs"]
mod redis_support;
use redis_support::{random_key, timed_callers};

const CALLERS: u64 = 64;

#[derive(Clone, Copy, Debug)]
enum Operation {
    Check,
    Debit,
    ReserveSettle,
    KeptSettle,
}

impl Operation {
    const ALL: [Operation; 4] = [
        Operation::Check,
        Operation::Debit,
        Operation::ReserveSettle,
        Operation::KeptSettle,
    ];

    fn name(self) -> &'static str {
        match self {
            Operation::Check => "check",
            Operation::Debit => "debit",
            Operation::ReserveSettle => "reserve+settle",
            Operation::KeptSettle => "reserve+keep+settle_kept",
        }
    }

    async fn run(self, limiter: &Limiter, policies: &[Policy], key: &str) {
        let named = |name: &str| (name == policies[0].name()).then(|| policies[0].clone());
        match self {
            Operation::Check => {
                limiter.check(&policies[0], key, 1).await.unwrap();
            }
            Operation::Debit => {
                limiter.debit(&policies[0], key, 1).await.unwrap();
            }
            Operation::ReserveSettle => {
                let reservation = limiter.reserve(policies, key, 1).await.unwrap();
                reservation.settle(2).await.unwrap();
            }
            Operation::KeptSettle => {
                let reservation = limiter.reserve(policies, key, 1).await.unwrap();
                let id = reservation.keep(Duration::from_secs(60)).await.unwrap();
                limiter
                    .settle_kept(&id.unwrap(), 2, named)
                    .await
                    .unwrap()
                    .unwrap();
            }
        }
    }
}

async fn run(store: &str, limiter: Limiter, seconds: f64, keys: u64) {
    // Far above what 10 000 keys take in a run: nothing is ever denied or owed.
    let policy = Policy::new("tokens", Algorithm::Gcra, 1_000_000, Duration::from_secs(1)).unwrap();
    let policies: Arc<[Policy]> = Arc::new([policy]);
    let mut baseline = None;
    for operation in Operation::ALL {
        let (limiter, policies) = (limiter.clone(), Arc::clone(&policies));
        let (latencies, elapsed) = timed_callers(CALLERS, seconds, move |caller, n| {
            let (limiter, policies) = (limiter.clone(), Arc::clone(&policies));
            async move {
                let key = random_key(caller, n, keys).to_string();
                operation.run(&limiter, &policies, &key).await;
                // The memory store answers without waiting: let the timer and the other callers
                // run (the same for every operation, so the ratios stand).
                tokio::task::yield_now().await;
            }
        })
        .await;
        let pct = |p: usize| latencies[latencies.len() * p / 100].as_secs_f64() * 1e6;
        let ops = latencies.len() as f64 / elapsed;
        let ratio = ops / *baseline.get_or_insert(ops);
        println!(
            "{{\"bench\": \"floodwall-settle\", \"store\": \"{store}\", \"operation\": \"{}\", \"callers\": {CALLERS}, \"keys\": {keys}, \
             \"ops_per_s\": {ops:.0}, \"p50_us\": {:.1}, \"p99_us\": {:.1}, \"throughput_vs_check\": {ratio:.2}}}",
            operation.name(),
            pct(50),
            pct(99),
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
    let seconds = match bench {
        true => std::env::var("BENCH_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(5.0),
        false => 0.2,
    };
    let keys = if bench { 10_000 } else { 1_000 };
    runtime.block_on(async {
        run("memory", Limiter::new(MemoryStore::new()), seconds, keys).await;
        // Under cargo test, or without REDIS_URL: a server of our own.
        let own = match (bench, std::env::var("REDIS_URL")) {
            (true, Ok(url)) => (None, url),
            _ => {
                let server = RedisServer::start().unwrap();
                let url = server.url();
                (Some(server), url)
            }
        };
        let config = RedisConfig::new(&own.1).timeout(Duration::from_secs(2));
        let limiter = Limiter::new(RedisStore::connect(config).await.unwrap());
        run("redis", limiter, seconds, keys).await;
        drop(own);
    });
}
