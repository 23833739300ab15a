//! Exactness across instances (RELIABILITY A1, A2, A3, E1): many `RedisStore`s, each with its own
//! connection, racing on the same keys through real redis-server processes, on Redis's clock.

use crate::support::StoreExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use floodwall::redis::{RedisConfig, RedisStore};
use floodwall::{Algorithm, Policy};
use floodwall_testkit::{RedisCluster, RedisServer};

use crate::inspect::{assert_every_key_expires, keys_and_expires};

const INSTANCES: usize = 8;
const TASKS: usize = 64;

async fn instances(url: &str) -> Vec<RedisStore> {
    let mut stores = Vec::new();
    for _ in 0..INSTANCES {
        let config = RedisConfig::new(url).timeout(Duration::from_secs(5));
        stores.push(RedisStore::connect(config).await.unwrap());
    }
    stores
}

/// 8 instances × 64 tasks × 20 attempts on one key per algorithm, limit 100 per hour.
async fn one_hot_key_admits_exactly_the_limit(url: &str) {
    let stores = instances(url).await;
    for algorithm in Algorithm::ALL {
        let policy =
            Arc::new([Policy::new("hot", algorithm, 100, Duration::from_secs(3600)).unwrap()]);
        let admitted = Arc::new(AtomicU64::new(0));
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let (store, policy, admitted) = (
                    stores[t % INSTANCES].clone(),
                    Arc::clone(&policy),
                    Arc::clone(&admitted),
                );
                tokio::spawn(async move {
                    for _ in 0..20 {
                        if store
                            .check(&policy[..], b"one-key", 1)
                            .await
                            .unwrap()
                            .allowed()
                        {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(admitted.load(Ordering::Relaxed), 100, "{algorithm}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_instances_admit_exactly_the_limit_on_one_node() {
    let server = RedisServer::start().unwrap();
    one_hot_key_admits_exactly_the_limit(&server.url()).await;
    assert_every_key_expires(&server);
    // The sliding log kept one member per admitted unit: none collided (A3).
    let members = server
        .cli(&["ZCARD", "floodwall:hot:sliding_log:{one-key}"])
        .unwrap();
    assert_eq!(members, "100");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_instances_admit_exactly_the_limit_on_a_cluster() {
    let cluster = RedisCluster::start().unwrap();
    one_hot_key_admits_exactly_the_limit(&cluster.url()).await;
    cluster.nodes().iter().for_each(assert_every_key_expires);
}

/// 10 000 keys × limit 10 on the cluster, 12 attempts per key from racing tasks (A2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_admits_exactly_its_limit_spread_over_all_masters() {
    const KEYS: u64 = 10_000;
    let cluster = RedisCluster::start().unwrap();
    let stores = instances(&cluster.url()).await;
    let policy = Arc::new([Policy::new(
        "per-key",
        Algorithm::FixedWindow,
        10,
        Duration::from_secs(3600),
    )
    .unwrap()]);
    let admitted: Arc<Vec<AtomicU64>> = Arc::new((0..KEYS).map(|_| AtomicU64::new(0)).collect());
    let tasks: Vec<_> = (0..TASKS as u64)
        .map(|t| {
            let (store, policy, admitted) = (
                stores[t as usize % INSTANCES].clone(),
                Arc::clone(&policy),
                Arc::clone(&admitted),
            );
            tokio::spawn(async move {
                // Attempt a targets key a % KEYS, so each key gets exactly 12 attempts, and task t
                // makes the attempts a ≡ t (mod 64): a key's attempts come from 12 different tasks.
                for a in (t..KEYS * 12).step_by(TASKS) {
                    let key = a % KEYS;
                    if store
                        .check(&policy[..], key.to_string().as_bytes(), 1)
                        .await
                        .unwrap()
                        .allowed()
                    {
                        admitted[key as usize].fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let total: u64 = admitted.iter().map(|a| a.load(Ordering::Relaxed)).sum();
    assert!(
        admitted.iter().all(|a| a.load(Ordering::Relaxed) <= 10),
        "a key admitted more than 10"
    );
    assert_eq!(
        total,
        KEYS * 10,
        "every key reaches exactly 10 (each was tried 12 times)"
    );
    for node in cluster.nodes() {
        let (keys, expires) = keys_and_expires(node);
        assert_eq!(keys, expires);
        assert!(
            keys > KEYS / 5,
            "keys pile up away from {:?}: {keys}",
            node.port()
        );
    }
}
