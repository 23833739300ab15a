//! Replication and failover with real processes: `wait_replicas` answers only what replicas
//! confirmed, and holds a master killed under load (Sentinel, and a cluster with replicas) at
//! zero acknowledged units lost; without it, what was lost is measured and printed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use floodwall::redis::{RedisConfig, RedisStore};
use floodwall::{Algorithm, Limiter, Policy, Source, StoreErrorKind};
use floodwall_testkit::{RedisCluster, RedisSentinels, RedisServer};
use tokio::time::Instant;

const DEADLINE: Duration = Duration::from_millis(100);

/// A count that only the day's turn (UTC midnight) resets.
fn daily() -> Policy {
    Policy::new(
        "replicated",
        Algorithm::FixedWindow,
        100_000_000,
        Duration::from_secs(86_400),
    )
    .unwrap()
}

async fn limiter(url: &str, wait_replicas: u32) -> Limiter {
    Limiter::new(
        RedisStore::connect(
            RedisConfig::new(url)
                .timeout(DEADLINE)
                .wait_replicas(wait_replicas),
        )
        .await
        .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_waits_for_the_replicas_it_was_told_to() {
    let set = RedisSentinels::start(1, 1).unwrap();
    let policy = daily();
    // One replica confirms: answers as usual, and the replica has the count. (A deadline far
    // past a WAIT's few milliseconds: on a loaded 2-core machine 100 ms was once too short.)
    let confirmed = Limiter::new(
        RedisStore::connect(
            RedisConfig::new(set.url())
                .timeout(Duration::from_secs(2))
                .wait_replicas(1),
        )
        .await
        .unwrap(),
    );
    for _ in 0..5 {
        let verdict = confirmed.check(&policy, "k", 1).await.unwrap();
        assert_eq!(verdict.source(), Source::Store);
    }
    // Two are asked for, one exists: the call ran, but its answer is not given. (Redis ends a
    // WAIT up to a tick of its clock late, 100 ms at the default `hz`: with a tight deadline
    // the shortfall arrives as a timeout instead.)
    let unconfirmed = Limiter::new(
        RedisStore::connect(
            RedisConfig::new(set.url())
                .timeout(Duration::from_secs(1))
                .wait_replicas(2),
        )
        .await
        .unwrap(),
    );
    let verdict = unconfirmed.check(&policy, "k", 1).await.unwrap();
    assert_eq!(verdict.source(), Source::FailOpen);
    assert_eq!(
        unconfirmed
            .stats()
            .store_errors
            .get(StoreErrorKind::NotReplicated),
        1,
        "{:?}",
        unconfirmed.stats()
    );
    let counted = confirmed.peek(&policy, "k").await.unwrap();
    assert_eq!(
        policy.limit() - counted.decision().unwrap().remaining,
        6,
        "the unconfirmed call still counted on the master"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_node_asked_to_wait_for_a_replica_never_answers_from_the_store() {
    let server = RedisServer::start().unwrap();
    let limiter = limiter(&server.url(), 1).await;
    let verdict = limiter.check(&daily(), "k", 1).await.unwrap();
    assert_eq!(verdict.source(), Source::FailOpen);
}

/// Acknowledged admissions per key, counted while the load runs.
type Acknowledged = Arc<Mutex<HashMap<String, u64>>>;

/// Checks on 32 keys from 4 callers until `stop`, recording each admission the store answered.
fn load(
    limiter: &Limiter,
    stop: &Arc<AtomicBool>,
) -> (Acknowledged, Vec<tokio::task::JoinHandle<()>>) {
    let acknowledged: Acknowledged = Arc::default();
    let policy = daily();
    let tasks = (0..4)
        .map(|caller| {
            let (limiter, policy) = (limiter.clone(), policy.clone());
            let (stop, acknowledged) = (Arc::clone(stop), Arc::clone(&acknowledged));
            tokio::spawn(async move {
                let mut round = 0_u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("client-{}", caller * 8 + round % 8);
                    round += 1;
                    let verdict = limiter.check(&policy, &key, 1).await.unwrap();
                    if verdict.source() == Source::Store && verdict.allowed() {
                        *acknowledged.lock().unwrap().entry(key).or_default() += 1;
                    }
                }
            })
        })
        .collect();
    (acknowledged, tasks)
}

/// Admissions the store acknowledged that the store no longer counts, summed over the keys:
/// what a failover lost.
async fn lost(limiter: &Limiter, acknowledged: &Acknowledged) -> (u64, u64) {
    let policy = daily();
    let acknowledged = acknowledged.lock().unwrap().clone();
    let (mut lost, mut total) = (0, 0);
    for (key, admitted) in acknowledged {
        let started = Instant::now();
        let verdict = loop {
            let verdict = limiter.peek(&policy, &key).await.unwrap();
            if verdict.source() == Source::Store {
                break verdict;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "never answered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let counted = policy.limit() - verdict.decision().unwrap().remaining;
        lost += admitted.saturating_sub(counted);
        total += admitted;
    }
    (lost, total)
}

/// Runs the load, kills a master with `kill` after half a second, keeps the load running for
/// `recovery`, and returns the acknowledged units lost and acknowledged in all.
async fn failover_under_load(
    url: &str,
    limiter: &Limiter,
    recovery: Duration,
    kill: impl FnOnce() + Send + 'static,
) -> (u64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let (acknowledged, tasks) = load(limiter, &stop);
    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::task::spawn_blocking(kill).await.unwrap();
    tokio::time::sleep(recovery).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    // Counted as the store now has it, by a limiter that waits for no replica: the killed
    // master's replica took over, and has none of its own.
    let looking = self::limiter(url, 0).await;
    lost(&looking, &acknowledged).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_sentinel_a_killed_master_loses_no_acknowledged_unit_with_wait_replicas() {
    for wait_replicas in [0, 1] {
        let set = Arc::new(Mutex::new(RedisSentinels::start(1, 3).unwrap()));
        let url = set.lock().unwrap().url();
        let limiter = limiter(&url, wait_replicas).await;
        let killing = Arc::clone(&set);
        let (lost, total) =
            failover_under_load(&url, &limiter, Duration::from_secs(6), move || {
                let mut set = killing.lock().unwrap();
                let master = set.master_index().unwrap();
                set.node_mut(master).unwrap().kill();
            })
            .await;
        eprintln!(
            "sentinel, wait_replicas = {wait_replicas}: {lost} of {total} acknowledged units lost"
        );
        assert!(total > 100, "the load ran: {total}");
        if wait_replicas > 0 {
            assert_eq!(lost, 0, "{lost} of {total} acknowledged units lost");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_killed_master_loses_no_acknowledged_unit_with_wait_replicas() {
    for wait_replicas in [0, 1] {
        let cluster = Arc::new(Mutex::new(RedisCluster::start_with(3, 1).unwrap()));
        let url = cluster.lock().unwrap().url();
        let limiter = limiter(&url, wait_replicas).await;
        let killing = Arc::clone(&cluster);
        let (lost, total) =
            failover_under_load(&url, &limiter, Duration::from_secs(5), move || {
                killing.lock().unwrap().node_mut(0).unwrap().kill();
            })
            .await;
        eprintln!(
            "cluster, wait_replicas = {wait_replicas}: {lost} of {total} acknowledged units lost"
        );
        assert!(total > 100, "the load ran: {total}");
        if wait_replicas > 0 {
            assert_eq!(lost, 0, "{lost} of {total} acknowledged units lost");
        }
    }
}
