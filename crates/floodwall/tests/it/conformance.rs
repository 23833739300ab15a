//! One behaviour specification, run against every store: the memory store, Redis on one node,
//! and Redis on a 3-master cluster, one test per behaviour and store
//! (`conformance::redis_cluster::refunds_restore_each_algorithm`), so that the first failure
//! names both. Each runs on its own `ManualClock` (the Redis stores are told to use it instead
//! of `TIME`), so every expectation is exact.

use crate::support::StoreExt;
use std::time::Duration;

use floodwall::redis::{RedisConfig, RedisStore};
use floodwall::store::Store;
use floodwall::{Algorithm, Check, ManualClock, MemoryStore, Mode, Policy, Verdict};
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

/// `cost` for each (policy, key) pair through the store, paired back with the policies.
async fn check_each(store: &impl Store, pairs: &[(&Policy, &[u8])], cost: u64) -> Verdict {
    let check = Check::each(pairs.iter().copied(), cost).unwrap();
    let answer = store.decide(&check).await.unwrap();
    Verdict::from_answer(pairs.iter().map(|(policy, _)| *policy), answer)
}

async fn remaining(store: &impl Store, policy: &Policy, key: &[u8]) -> u64 {
    let policies = [policy.clone()];
    store.look(&policies, key).await.unwrap().decisions()[0].remaining
}

async fn checks_across_keys_are_all_or_nothing(store: &impl Store, _clock: &ManualClock) {
    let minute = Duration::from_secs(60);
    let per_user = policy("per-user", Algorithm::FixedWindow, 2, minute);
    let global = policy("global", Algorithm::SlidingWindow, 3, minute);
    // Many users, so that on a cluster some pairs are decided user slot first and others global
    // slot first (the slots of "user-2" and "user-6" are below that of "all", the others above):
    // a denial by either slot must leave the other uncharged.
    let users: Vec<String> = (0..8).map(|u| format!("user-{u}")).collect();
    let pairs = |user: &str| {
        [
            (&per_user, user.as_bytes().to_vec()),
            (&global, b"all".to_vec()),
        ]
    };
    let ask = |user: String| {
        let pairs = pairs(&user);
        async move {
            let pairs: Vec<(&Policy, &[u8])> = pairs.iter().map(|(p, k)| (*p, &k[..])).collect();
            let verdict = check_each(store, &pairs, 1).await;
            (
                verdict.allowed(),
                verdict
                    .decisions()
                    .iter()
                    .map(|d| d.allowed)
                    .collect::<Vec<_>>(),
            )
        }
    };
    assert_eq!(ask(users[0].clone()).await, (true, vec![true, true]));
    assert_eq!(ask(users[0].clone()).await, (true, vec![true, true]));
    // The user's own limit denies; the global unit is not taken.
    assert_eq!(ask(users[0].clone()).await, (false, vec![false, true]));
    assert_eq!(remaining(store, &global, b"all").await, 1);
    assert_eq!(ask(users[1].clone()).await, (true, vec![true, true]));
    // The global limit denies every other user now, and none of them is charged.
    for user in &users[2..] {
        assert_eq!(
            ask(user.clone()).await,
            (false, vec![true, false]),
            "{user}"
        );
        assert_eq!(
            remaining(store, &per_user, user.as_bytes()).await,
            2,
            "{user}"
        );
    }
    assert_eq!(remaining(store, &per_user, users[1].as_bytes()).await, 1);

    // A refund gives the units back under each pair, and never past a full quota.
    let refund = Check::each(
        [(&per_user, users[1].as_bytes()), (&global, &b"all"[..])],
        1,
    )
    .unwrap();
    let remainings = |answer: floodwall::store::Answer| {
        assert!(answer.allowed);
        answer
            .decisions
            .iter()
            .map(|d| d.remaining)
            .collect::<Vec<_>>()
    };
    assert_eq!(remainings(store.refund(&refund).await.unwrap()), [2, 1]);
    assert_eq!(remainings(store.refund(&refund).await.unwrap()), [2, 2]);
    assert_eq!(ask(users[5].clone()).await, (true, vec![true, true]));
}

async fn refunds_restore_each_algorithm(store: &impl Store, _clock: &ManualClock) {
    for algorithm in Algorithm::ALL {
        let policies = [policy("refund", algorithm, 4, Duration::from_secs(10))];
        let key = format!("refund-{algorithm}");
        for _ in 0..4 {
            assert!(
                store
                    .check(&policies, key.as_bytes(), 1)
                    .await
                    .unwrap()
                    .allowed()
            );
        }
        assert!(
            !store
                .check(&policies, key.as_bytes(), 1)
                .await
                .unwrap()
                .allowed()
        );
        let check = Check::new(&policies, key.as_bytes(), 3).unwrap();
        let after = store.refund(&check).await.unwrap();
        assert_eq!(after.decisions[0].remaining, 3, "{algorithm}");
        assert!(
            store
                .check(&policies, key.as_bytes(), 3)
                .await
                .unwrap()
                .allowed(),
            "{algorithm}"
        );
        assert!(
            !store
                .check(&policies, key.as_bytes(), 1)
                .await
                .unwrap()
                .allowed(),
            "{algorithm}"
        );
        // A key back at rest by a refund is forgotten, like any key at rest.
        let all = Check::new(&policies, key.as_bytes(), 4).unwrap();
        let rest = store.refund(&all).await.unwrap();
        assert_eq!(rest.decisions[0].remaining, 4, "{algorithm}");
        assert_eq!(rest.decisions[0].reset_after, Duration::ZERO, "{algorithm}");
    }
}

async fn redis_store(url: String, clock: &ManualClock) -> RedisStore {
    let config = RedisConfig::new(url)
        .timeout(Duration::from_secs(5))
        .clock(clock.clone());
    RedisStore::connect(config).await.unwrap()
}

/// What a backend's test checks after the behaviour ran (Redis: every key it wrote expires),
/// holding whatever must outlive the run.
type After = Box<dyn FnOnce()>;

async fn on_memory(clock: &ManualClock) -> (MemoryStore, After) {
    let store = MemoryStore::builder().clock(clock.clone()).build();
    (store, Box::new(|| ()))
}

async fn on_one_redis_node(clock: &ManualClock) -> (RedisStore, After) {
    let server = RedisServer::start().unwrap();
    let store = redis_store(server.url(), clock).await;
    (store, Box::new(move || assert_every_key_expires(&server)))
}

async fn on_a_redis_cluster(clock: &ManualClock) -> (RedisStore, After) {
    let cluster = RedisCluster::start().unwrap();
    let store = redis_store(cluster.url(), clock).await;
    let after = move || cluster.nodes().iter().for_each(assert_every_key_expires);
    (store, Box::new(after))
}

/// One test per behaviour and backend (`conformance::redis_cluster::refunds_restore_each_algorithm`),
/// so that the first failure names both; each starts its own store on its own clock.
macro_rules! every_behaviour {
    ($setup:path: $($behaviour:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $behaviour() {
            let clock = ManualClock::new(NOW);
            let (store, after) = $setup(&clock).await;
            super::$behaviour(&store, &clock).await;
            after();
        }
    )*};
}

macro_rules! conformance {
    ($($backend:ident => $setup:ident;)*) => {$(
        mod $backend {
            use super::*;

            every_behaviour! {
                super::$setup:
                admits_up_to_the_limit_then_denies_until_retry_after,
                several_policies_are_all_or_nothing,
                a_shadow_policy_reports_but_never_denies,
                peek_consumes_nothing_and_reset_restores,
                hostile_keys_are_distinct_and_harmless,
                checks_across_keys_are_all_or_nothing,
                refunds_restore_each_algorithm,
            }
        }
    )*};
}

conformance! {
    memory_store => on_memory;
    redis_single_node => on_one_redis_node;
    redis_cluster => on_a_redis_cluster;
}
