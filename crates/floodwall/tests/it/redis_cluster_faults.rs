//! Redis Cluster faults with real processes: a dead master affects only its own slots, and a
//! check across slots that fails halfway is refunded.

use crate::support::LimiterExt;
use std::time::Duration;

use floodwall::redis::{RedisConfig, RedisStore};
use floodwall::store::Store;
use floodwall::{Algorithm, Check, Error, Limiter, OnError, Policy, Source, StoreError};

use tokio::time::Instant;

use crate::inspect::assert_every_key_expires;
use crate::redis_faults::hourly;
use crate::support::StoreExt;

const DEADLINE: Duration = Duration::from_millis(50);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_cluster_master_affects_only_its_own_slots() {
    let mut cluster = floodwall_testkit::RedisCluster::start().unwrap();
    let store = RedisStore::connect(RedisConfig::new(cluster.url()).timeout(DEADLINE))
        .await
        .unwrap();
    let limiter = Limiter::new(store);
    let policy = hourly(1_000_000);
    // A client key served by each master.
    let mut keys = vec![None; cluster.masters()];
    for i in 0.. {
        let key = format!("client-{i}");
        let master = cluster.master_of(&key).unwrap();
        keys[master].get_or_insert(key);
        if keys.iter().all(Option::is_some) {
            break;
        }
    }
    let keys: Vec<String> = keys.into_iter().map(Option::unwrap).collect();
    for key in &keys {
        assert_eq!(
            limiter.check(&policy, key, 1).await.unwrap().source(),
            Source::Store
        );
    }
    cluster.node_mut(0).unwrap().kill();
    let started = Instant::now();
    let mut dead_decisions = 0;
    while started.elapsed() < Duration::from_secs(3) {
        for (master, key) in keys.iter().enumerate() {
            let t = Instant::now();
            let verdict = limiter.check(&policy, key, 1).await.unwrap();
            assert!(
                t.elapsed() < DEADLINE + Duration::from_millis(50),
                "{:?}",
                t.elapsed()
            );
            if master == 0 {
                assert_eq!(verdict.source(), Source::FailOpen);
                dead_decisions += 1;
            } else {
                assert_eq!(
                    verdict.source(),
                    Source::Store,
                    "master {master}'s slots were affected"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(dead_decisions > 50);
}

/// A check across keys whose later slot cannot be reached refunds what the earlier slot
/// consumed: the request counts nowhere, and the failure is answered per `on_error`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_across_slots_that_fails_halfway_is_refunded() {
    let cluster = floodwall_testkit::RedisCluster::start().unwrap();
    // "user-2" hashes to slot 157 and "everyone" to 14 112: the user's slot is decided first,
    // on another master than the global key's.
    let (user, everyone) = ("user-2", "everyone");
    assert_ne!(
        cluster.master_of(user).unwrap(),
        cluster.master_of(everyone).unwrap()
    );
    let store = RedisStore::connect(RedisConfig::new(cluster.url()).timeout(DEADLINE))
        .await
        .unwrap();
    let (per_user, global) = (
        hourly(5),
        Policy::new("global", Algorithm::Gcra, 100, Duration::from_secs(3600)).unwrap(),
    );
    let pairs = [(&per_user, user.as_bytes()), (&global, everyone.as_bytes())];
    let check = Check::each(pairs, 2).unwrap();
    assert!(store.decide(&check).await.unwrap().allowed);

    let global_master = cluster.master_of(everyone).unwrap();
    cluster.nodes()[global_master].pause().unwrap();
    let failed = store.decide(&check).await;
    cluster.nodes()[global_master].resume().unwrap();
    assert!(
        matches!(failed, Err(StoreError::Timeout { .. })),
        "{failed:?}"
    );
    let policies = [per_user.clone()];
    let peek = store.look(&policies, user.as_bytes()).await.unwrap();
    assert_eq!(
        peek.decisions()[0].remaining,
        3,
        "the failed check stayed counted"
    );

    // Through a limiter failing closed, the same failure is a 503's error, and still refunded.
    cluster.nodes()[global_master].pause().unwrap();
    let limiter = Limiter::builder(store.clone())
        .on_error(OnError::Deny)
        .build();
    let denied = limiter
        .check_each(&[(&per_user, user), (&global, everyone)], 2)
        .await;
    cluster.nodes()[global_master].resume().unwrap();
    assert!(
        matches!(denied, Err(Error::StoreUnavailable { .. })),
        "{denied:?}"
    );
    let peek = store.look(&policies, user.as_bytes()).await.unwrap();
    assert_eq!(peek.decisions()[0].remaining, 3);
    cluster.nodes().iter().for_each(assert_every_key_expires);
}
