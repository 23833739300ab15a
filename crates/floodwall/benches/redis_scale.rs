//! How Redis cost grows with the number of tracked clients: for 100 000, 1 000 000 and
//! 10 000 000 clients (`SCALE_CLIENTS`, comma-separated), on one node and on a 3-master cluster
//! started here, fill one `gcra` state per client through `RedisStore`, then decide for random
//! clients with 64 callers. Reports used_memory per client, decisions per second, and Redis CPU
//! per decision, in all and per master.
//!
//! `cargo bench -p floodwall --bench redis_scale` (what `bench/redis-scale.sh` runs). Without
//! `--bench` (under `cargo test`) it runs a short smoke pass of 2 000 clients.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use floodwall::redis::{RedisConfig, RedisStore};
use floodwall::store::Store;
use floodwall::{Algorithm, Check};
use floodwall_testkit::{RedisCluster, RedisServer};
use tokio::time::Instant;

#[path = "redis_support/mod.rs"]
mod redis_support;
use redis_support::{info_number, memory_policy, random_key, script_cost, timed_callers};

const CALLERS: u64 = 64;

/// Client `k` as an IPv4 address in 10.0.0.0/8: keys of 23 to 29 bytes
/// (`floodwall:ip:g{10.152.150.127}`), in Redis's size class of keys up to 30 bytes.
fn client(k: u64) -> String {
    format!("10.{}.{}.{}", (k >> 16) & 255, (k >> 8) & 255, k & 255)
}

async fn connections(urls: &[String]) -> Vec<redis::aio::MultiplexedConnection> {
    let mut connections = Vec::new();
    for url in urls {
        let client = redis::Client::open(url.as_str()).unwrap();
        connections.push(client.get_multiplexed_async_connection().await.unwrap());
    }
    connections
}

async fn each(nodes: &mut [redis::aio::MultiplexedConnection], command: &[&str]) {
    for node in nodes {
        let mut cmd = redis::cmd(command[0]);
        cmd.arg(&command[1..]);
        let _: redis::Value = cmd.query_async(node).await.unwrap();
    }
}

async fn run(topology: &str, store_url: &str, node_urls: &[String], clients: u64, seconds: f64) {
    let mut nodes = connections(node_urls).await;
    each(&mut nodes, &["FLUSHALL"]).await;
    let mut before = 0.0;
    for node in &mut nodes {
        before += info_number(node, "memory", "used_memory", None).await;
    }
    let config = RedisConfig::new(store_url).timeout(Duration::from_secs(5));
    let store = RedisStore::connect(config).await.unwrap();
    let policy = Arc::new([memory_policy(Algorithm::Gcra)]);
    let filled = Instant::now();
    let fillers: Vec<_> = (0..CALLERS)
        .map(|c| {
            let (store, policy) = (store.clone(), Arc::clone(&policy));
            tokio::spawn(async move {
                for k in (c..clients).step_by(CALLERS as usize) {
                    let key = client(k);
                    let check = Check::new(&policy[..], key.as_bytes(), 1).unwrap();
                    store.decide(&check).await.unwrap();
                }
            })
        })
        .collect();
    for filler in fillers {
        filler.await.unwrap();
    }
    let fill_seconds = filled.elapsed().as_secs_f64();
    let mut after = 0.0;
    for node in &mut nodes {
        after += info_number(node, "memory", "used_memory", None).await;
    }

    each(&mut nodes, &["CONFIG", "RESETSTAT"]).await;
    let (shared_store, shared_policy) = (store.clone(), Arc::clone(&policy));
    let (latencies, elapsed) = timed_callers(CALLERS, seconds, move |caller, n| {
        let (store, policy) = (shared_store.clone(), Arc::clone(&shared_policy));
        async move {
            let key = client(random_key(caller, n, clients));
            let check = Check::new(&policy[..], key.as_bytes(), 1).unwrap();
            assert!(store.decide(&check).await.unwrap().allowed);
        }
    })
    .await;
    let pct = |p: usize| latencies[latencies.len() * p / 100].as_secs_f64() * 1e6;
    let decisions = latencies.len() as f64;
    let mut usec = Vec::new();
    for node in &mut nodes {
        usec.push(script_cost(node).await.1);
    }
    let total: f64 = usec.iter().sum();
    let per_master: Vec<String> = usec
        .iter()
        .map(|u| format!("{:.2}", u / decisions.max(1.0)))
        .collect();
    println!(
        "{{\"bench\": \"floodwall-redis-scale\", \"topology\": \"{topology}\", \"clients\": {clients}, \
         \"bytes_per_client\": {:.1}, \"fill_per_s\": {:.0}, \"ops_per_s\": {:.0}, \"p50_us\": {:.1}, \"p99_us\": {:.1}, \
         \"usec_per_decision\": {:.2}, \"usec_per_decision_by_master\": [{}]}}",
        (after - before) / clients as f64,
        clients as f64 / fill_seconds,
        decisions / elapsed,
        pct(50),
        pct(99),
        total / decisions.max(1.0),
        per_master.join(", "),
    );
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (counts, seconds) = if bench {
        let counts =
            std::env::var("SCALE_CLIENTS").unwrap_or_else(|_| "100000,1000000,10000000".to_owned());
        let counts: Vec<u64> = counts
            .split(',')
            .map(|c| c.trim().parse().unwrap())
            .collect();
        let seconds = std::env::var("BENCH_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(5.0);
        (counts, seconds)
    } else {
        (vec![2_000], 0.2)
    };
    let server = RedisServer::start().unwrap();
    let cluster = RedisCluster::start().unwrap();
    let masters: Vec<String> = cluster.nodes()[..cluster.masters()]
        .iter()
        .map(RedisServer::url)
        .collect();
    for clients in counts {
        runtime.block_on(run(
            "node",
            &server.url(),
            &[server.url()],
            clients,
            seconds,
        ));
        runtime.block_on(run("cluster", &cluster.url(), &masters, clients, seconds));
    }
}
