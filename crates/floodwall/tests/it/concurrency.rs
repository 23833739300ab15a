//! Exactness under concurrency in memory (docs/testing.md: A10): many threads and tasks on one key
//! admit exactly the limit.

use crate::support::check_sync;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use floodwall::{Algorithm, Limiter, ManualClock, MemoryStore, Policy};

const NOW: u64 = 1_767_225_600_000_000;
const ATTEMPTS: u64 = 20_000;

fn store() -> MemoryStore {
    // Time stands still: no refill, no window roll, so "exactly the limit" is the only answer.
    MemoryStore::builder().clock(ManualClock::new(NOW)).build()
}

fn policy(algorithm: Algorithm) -> Policy {
    Policy::new("hot", algorithm, 100, Duration::from_secs(3600)).unwrap()
}

#[test]
fn sixty_four_threads_on_one_key_admit_exactly_the_limit() {
    for algorithm in Algorithm::ALL {
        let store = store();
        let policy = [policy(algorithm)];
        let admitted = AtomicU64::new(0);
        std::thread::scope(|scope| {
            for _ in 0..64 {
                scope.spawn(|| {
                    for _ in 0..ATTEMPTS / 64 + 1 {
                        if check_sync(&store, &policy, b"one-key", 1).allowed() {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.load(Ordering::Relaxed), 100, "{algorithm}");
        let peek = check_sync(&store, &policy, b"one-key", 0);
        assert_eq!(peek.decisions()[0].remaining, 0, "{algorithm}");
    }
}

// More worker threads than cores: the OS preempts workers in the middle of a decision, so tasks
// on different workers genuinely interleave inside the store (each decision itself never awaits).
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn sixty_four_tasks_through_several_limiters_admit_exactly_the_limit() {
    let workers = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    for algorithm in Algorithm::ALL {
        let store = store();
        // Several limiter instances over one shared store, as several app handlers would hold.
        let limiters: Vec<_> = (0..4).map(|_| Limiter::new(store.clone())).collect();
        let policy = Arc::new(policy(algorithm));
        let admitted = Arc::new(AtomicU64::new(0));
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let (limiter, policy, admitted) = (
                    limiters[i % 4].clone(),
                    Arc::clone(&policy),
                    Arc::clone(&admitted),
                );
                let workers = Arc::clone(&workers);
                tokio::spawn(async move {
                    for _ in 0..ATTEMPTS / 64 + 1 {
                        workers.lock().unwrap().insert(std::thread::current().id());
                        if limiter
                            .check(&policy, "one-key", 1)
                            .await
                            .unwrap()
                            .allowed()
                        {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(admitted.load(Ordering::Relaxed), 100, "{algorithm}");
    }
    let workers = workers.lock().unwrap().len();
    assert!(workers > 1, "every task ran on one worker thread");
}

#[test]
fn stacked_policies_under_contention_consume_together() {
    let store = store();
    let per_minute = Policy::new(
        "per-minute",
        Algorithm::FixedWindow,
        100,
        Duration::from_secs(60),
    )
    .unwrap();
    let per_hour = Policy::new(
        "per-hour",
        Algorithm::SlidingLog,
        150,
        Duration::from_secs(3600),
    )
    .unwrap();
    let policies = [per_minute, per_hour];
    let admitted = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for t in 0..16 {
            let (store, policies, admitted) = (&store, &policies, &admitted);
            scope.spawn(move || {
                for _ in 0..500 {
                    // Alternate the order of the keys' shards by alternating the policy order.
                    let reversed = [policies[1].clone(), policies[0].clone()];
                    let order = if t % 2 == 0 { policies } else { &reversed[..] };
                    let verdict = check_sync(store, order, b"k", 1);
                    if verdict.allowed() {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert_eq!(admitted.load(Ordering::Relaxed), 100);
    let hour = check_sync(&store, &policies[1..], b"k", 0);
    // A denial by the per-minute policy consumed nothing from the per-hour one.
    assert_eq!(hour.decisions()[0].remaining, 50);
}
