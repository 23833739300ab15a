//! One behaviour specification, run against every store by one macro (limitador's pattern):
//! the memory store, Redis on one node, and Redis on a 3-master cluster. All run on one
//! `ManualClock` (the Redis stores are told to use it instead of `TIME`), so every expectation is
//! exact.

use crate::support::StoreExt;
use std::time::Duration;

use floodwall::redis::{RedisConfig, RedisStore};
use floodwall::{Algorithm, ManualClock, MemoryStore, Mode, Policy, Store};
use floodwall_testkit::{RedisCluster, RedisServer};

use crate::inspect::assert_every_key_expires;

const NOW: u64 = 1_767_225_600_000_000;

fn policy(name: &str, algorithm: Algorithm, limit: u64, period: Duration) -> Policy {
    Policy::new(name, algorithm, limit, period).unwrap()
}

async fn admits_up_to_the_limit_then_denies_until_retry_after(
    store: &impl Store,
    clock: &ManualClock,
) {
    for algorithm in Algorithm::ALL {
        let policies = [policy("three", algorithm, 3, Duration::from_secs(10))];
        let key = format!("limit-{algorithm}");
        for n in 0..3 {
            let verdict = store.check(&policies, key.as_bytes(), 1).await.unwrap();
            assert!(verdict.allowed(), "{algorithm}: request {n}");
            assert_eq!(verdict.decisions()[0].remaining, 2 - n, "{algorithm}");
        }
        let denied = store.check(&policies, key.as_bytes(), 1).await.unwrap();
        assert!(!denied.allowed(), "{algorithm}");
        let retry = denied.retry_after().unwrap();
        clock.advance(retry - Duration::from_micros(1));
        assert!(
            !store
                .check(&policies, key.as_bytes(), 1)
                .await
                .unwrap()
                .allowed(),
            "{algorithm}: early"
        );
        clock.advance(Duration::from_micros(1));
        assert!(
            store
                .check(&policies, key.as_bytes(), 1)
                .await
                .unwrap()
                .allowed(),
            "{algorithm}: on time"
        );
    }
}

async fn several_policies_are_all_or_nothing(store: &impl Store, _clock: &ManualClock) {
    let policies = [
        policy("per-second", Algorithm::Gcra, 5, Duration::from_secs(1)),
        policy(
            "per-minute",
            Algorithm::FixedWindow,
            3,
            Duration::from_secs(60),
        ),
    ];
    for _ in 0..3 {
        assert!(
            store
                .check(&policies, b"stacked", 1)
                .await
                .unwrap()
                .allowed()
        );
    }
    let denied = store.check(&policies, b"stacked", 1).await.unwrap();
    assert!(!denied.allowed());
    assert!(
        denied.decisions()[0].allowed,
        "the per-second policy alone would admit"
    );
    assert!(!denied.decisions()[1].allowed);
    // The denial consumed nothing from the per-second policy.
    let peek = store.look(&policies[..1], b"stacked").await.unwrap();
    assert_eq!(peek.decisions()[0].remaining, 2);
}

async fn a_shadow_policy_reports_but_never_denies(store: &impl Store, _clock: &ManualClock) {
    let policies = [
        policy(
            "enforced",
            Algorithm::SlidingWindow,
            10,
            Duration::from_secs(60),
        ),
        policy("trial", Algorithm::SlidingLog, 1, Duration::from_secs(60)).with_mode(Mode::Shadow),
    ];
    for n in 0..3 {
        let verdict = store.check(&policies, b"shadowed", 1).await.unwrap();
        assert!(verdict.allowed());
        assert_eq!(verdict.decisions()[1].allowed, n == 0);
    }
}

async fn peek_consumes_nothing_and_reset_restores(store: &impl Store, _clock: &ManualClock) {
    for algorithm in Algorithm::ALL {
        let policies = [policy("peeked", algorithm, 2, Duration::from_secs(60))];
        let key = format!("peek-{algorithm}");
        for _ in 0..5 {
            let peek = store.look(&policies, key.as_bytes()).await.unwrap();
            assert!(peek.allowed());
            assert_eq!(peek.decisions()[0].remaining, 2, "{algorithm}");
        }
        store.check(&policies, key.as_bytes(), 2).await.unwrap();
        assert!(
            !store
                .look(&policies, key.as_bytes())
                .await
                .unwrap()
                .allowed(),
            "{algorithm}"
        );
        store.forget(&policies, key.as_bytes()).await.unwrap();
        assert_eq!(
            store
                .look(&policies, key.as_bytes())
                .await
                .unwrap()
                .decisions()[0]
                .remaining,
            2
        );
    }
}

async fn hostile_keys_are_distinct_and_harmless(store: &impl Store, _clock: &ManualClock) {
    // One unit each, under two policies at once (a multi-key script call on the cluster).
    let policies = [
        policy(
            "hostile-a",
            Algorithm::FixedWindow,
            1,
            Duration::from_secs(60),
        ),
        policy(
            "hostile-b",
            Algorithm::SlidingLog,
            1,
            Duration::from_secs(60),
        ),
    ];
    let long = vec![b'{'; 64 * 1024];
    let keys: [&[u8]; 10] = [
        b"",
        b"{",
        b"}abc",
        b"a{b}c",
        b"{}",
        &long,
        b"nul\0byte",
        b"cr\r\nlf",
        b"\xff\xfe\xfd",
        b"*?[]",
    ];
    for key in keys {
        let verdict = store.check(&policies, key, 1).await.unwrap();
        assert!(
            verdict.allowed(),
            "{:?}",
            String::from_utf8_lossy(&key[..key.len().min(8)])
        );
    }
    for key in keys {
        assert!(!store.check(&policies, key, 1).await.unwrap().allowed());
    }
}

async fn behaves_like_every_store(store: &impl Store, clock: &ManualClock) {
    admits_up_to_the_limit_then_denies_until_retry_after(store, clock).await;
    several_policies_are_all_or_nothing(store, clock).await;
    a_shadow_policy_reports_but_never_denies(store, clock).await;
    peek_consumes_nothing_and_reset_restores(store, clock).await;
    hostile_keys_are_distinct_and_harmless(store, clock).await;
}

async fn redis_store(url: String, clock: &ManualClock) -> RedisStore {
    let config = RedisConfig::new(url)
        .timeout(Duration::from_secs(5))
        .clock(clock.clone());
    RedisStore::connect(config).await.unwrap()
}

/// One test per store; the setup returns the store and whatever must outlive the run.
macro_rules! conformance {
    ($($backend:ident => |$clock:ident| $setup:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $backend() {
            let $clock = ManualClock::new(NOW);
            let (store, after) = $setup;
            behaves_like_every_store(&store, &$clock).await;
            after();
        }
    )*};
}

conformance! {
    memory_store => |clock| (MemoryStore::builder().clock(clock.clone()).build(), || ());
    redis_single_node => |clock| {
        let server = RedisServer::start().unwrap();
        let store = redis_store(server.url(), &clock).await;
        (store, move || assert_every_key_expires(&server))
    };
    redis_cluster => |clock| {
        let cluster = RedisCluster::start().unwrap();
        let store = redis_store(cluster.url(), &clock).await;
        (store, move || cluster.nodes().iter().for_each(assert_every_key_expires))
    };
}
