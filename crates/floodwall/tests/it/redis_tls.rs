//! `rediss://`: a TLS connection that verifies the server, and decides exactly as plain TCP does;
//! on one node, a cluster, and through sentinels (`rediss+sentinel://`).

use crate::support::StoreExt;
use std::time::Duration;

use floodwall::{Limiter, RedisConfig, RedisStore, StoreError};
use floodwall_core::{Algorithm, Policy};
use floodwall_testkit::RedisServer;

use crate::inspect::assert_every_key_expires;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_connection_decides_exactly() {
    let server = RedisServer::builder().tls().start().unwrap();
    let url = server.tls_url().unwrap();
    let config = RedisConfig::new(&url)
        .timeout(Duration::from_secs(2))
        .tls_root_certificate(server.tls_ca_pem().unwrap());
    let limiter = Limiter::new(RedisStore::connect(config).await.unwrap());
    let policy = Policy::new("tls", Algorithm::SlidingLog, 5, Duration::from_secs(3600)).unwrap();
    let mut admitted = 0;
    for _ in 0..8 {
        let verdict = limiter.check(&policy, "client", 1).await.unwrap();
        admitted += u32::from(verdict.allowed());
    }
    assert_eq!(admitted, 5);
    // The state is where a plain connection to the same server sees it.
    let keys = server.cli(&["DBSIZE"]).unwrap();
    assert_eq!(keys.trim(), "1");
    assert_every_key_expires(&server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_signed_by_an_unknown_ca_is_refused() {
    let server = RedisServer::builder().tls().start().unwrap();
    // Another throwaway CA: it did not sign this server's certificate.
    let stranger = RedisServer::builder().tls().start().unwrap();
    let config = RedisConfig::new(server.tls_url().unwrap())
        .timeout(Duration::from_millis(500))
        .tls_root_certificate(stranger.tls_ca_pem().unwrap());
    let store = RedisStore::connect(config).await.unwrap();
    let policy = Policy::new("tls", Algorithm::Gcra, 5, Duration::from_secs(3600)).unwrap();
    let policies = [policy];
    let result = store.check(&policies, b"client", 1).await;
    // The handshake fails on every reconnection attempt, so the call runs out its deadline.
    assert!(
        matches!(
            result,
            Err(StoreError::Redis { .. } | StoreError::Timeout { .. })
        ),
        "an unverified server was used: {result:?}"
    );
    assert_eq!(server.cli(&["DBSIZE"]).unwrap().trim(), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_decides_exactly_on_every_master() {
    let cluster = floodwall_testkit::RedisCluster::start_tls().unwrap();
    let config = RedisConfig::new(cluster.tls_url().unwrap())
        .timeout(Duration::from_secs(2))
        .tls_root_certificate(cluster.tls_ca_pem().unwrap());
    let limiter = Limiter::new(RedisStore::connect(config).await.unwrap());
    let policy = Policy::new("tls", Algorithm::Gcra, 5, Duration::from_secs(3600)).unwrap();
    // Enough keys that every master owns some of them.
    for key in 0..12 {
        let mut admitted = 0;
        for _ in 0..8 {
            let verdict = limiter
                .check(&policy, format!("client-{key}"), 1)
                .await
                .unwrap();
            admitted += u32::from(verdict.allowed());
        }
        assert_eq!(admitted, 5, "client-{key}");
    }
    let mut keys_per_master = Vec::new();
    for node in &cluster.nodes()[..cluster.masters()] {
        let dbsize: u64 = node.cli(&["DBSIZE"]).unwrap().trim().parse().unwrap();
        keys_per_master.push(dbsize);
    }
    assert!(
        keys_per_master.iter().all(|n| *n > 0),
        "{keys_per_master:?}"
    );
    assert_eq!(keys_per_master.iter().sum::<u64>(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_sentinels_over_tls_decides_exactly_on_the_master() {
    let set = floodwall_testkit::RedisSentinels::start_tls(1, 1).unwrap();
    let config = RedisConfig::new(set.tls_url().unwrap())
        .timeout(Duration::from_secs(2))
        .tls_root_certificate(set.tls_ca_pem().unwrap());
    let limiter = Limiter::new(RedisStore::connect(config).await.unwrap());
    let policy = Policy::new("tls", Algorithm::FixedWindow, 5, Duration::from_secs(3600)).unwrap();
    let mut admitted = 0;
    for _ in 0..8 {
        let verdict = limiter.check(&policy, "client", 1).await.unwrap();
        admitted += u32::from(verdict.allowed());
    }
    assert_eq!(admitted, 5);
    let master = &set.nodes()[set.master_index().unwrap()];
    let floodwall::stats::StorageStats::Redis(stats) = limiter.store().stats() else {
        panic!("not a Redis store");
    };
    assert_eq!(
        stats.sentinel.unwrap().address,
        Some(format!("127.0.0.1:{}", master.tls_port().unwrap()))
    );
    assert_eq!(master.cli(&["DBSIZE"]).unwrap().trim(), "1");
}
