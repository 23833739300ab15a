//! Charges after the answer across instances (docs/testing.md: A21): many limiters, each with its
//! own connection, charging one key at once through real redis-server processes (one node and a
//! 3-master cluster) and the memory store. Every unit charged is counted exactly; a key charged
//! past its limit owes at most `max_debt`, is denied while it owes, and its next window starts
//! with the debt counted. Reservations settled at their actual costs charge exactly their sum.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use floodwall::redis::{RedisConfig, RedisStore};
use floodwall::{Algorithm, Limiter, ManualClock, MemoryStore, Policy, Storage};
use floodwall_testkit::{RedisCluster, RedisServer};

const INSTANCES: usize = 4;
const TASKS: usize = 16;
const CHARGES: u64 = 25;
/// A window boundary, so that the clock the stores share starts a window.
const START_US: u64 = 1_767_225_600_000_000;
const HOUR: Duration = Duration::from_secs(3_600);
/// Windows end on multiples of the period since the epoch: one of 366 days ends once a year, so
/// a test on Redis's own clock does not cross one.
const YEAR: Duration = Duration::from_secs(366 * 86_400);

/// `INSTANCES` limiters on the Redis at `url`, deciding by `clock`.
async fn limiters(url: &str, clock: &ManualClock) -> Vec<Limiter> {
    let mut limiters = Vec::new();
    for _ in 0..INSTANCES {
        let config = RedisConfig::new(url)
            .timeout(Duration::from_secs(5))
            .clock(clock.clone());
        limiters.push(Limiter::new(RedisStore::connect(config).await.unwrap()));
    }
    limiters
}

/// Every task charges `CHARGES` costs of 1 to 40 on one key; returns the sum charged.
async fn charge_at_once(limiters: &[Limiter], policy: &Policy, key: &'static str) -> u64 {
    let total = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (limiter, policy, total) = (
                limiters[t % limiters.len()].clone(),
                policy.clone(),
                Arc::clone(&total),
            );
            tokio::spawn(async move {
                for n in 0..CHARGES {
                    let cost = 1 + (t as u64 * 7 + n * 13) % 40;
                    let verdict = limiter.debit(&policy, key, cost).await.unwrap();
                    assert!(verdict.allowed(), "a charge is never denied");
                    total.fetch_add(cost, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    total.load(Ordering::Relaxed)
}

async fn every_unit_charged_counts_and_debt_is_capped(limiters: &[Limiter], clock: &ManualClock) {
    for algorithm in Algorithm::ALL
        .into_iter()
        .filter(|algorithm| algorithm.carries_debt())
    {
        // Far below what is charged: each key goes into debt, and past it.
        let policy = Policy::new("charged", algorithm, 1_000_000, HOUR).unwrap();
        let charged = charge_at_once(limiters, &policy, "under").await;
        let after = limiters[0].check(&policy, "under", 0).await.unwrap();
        assert_eq!(
            after.decisions()[0].remaining,
            1_000_000 - charged,
            "{algorithm}: every unit charged at once is counted"
        );
        let capped = Policy::new("capped", algorithm, 1_000, HOUR)
            .and_then(|policy| policy.with_max_debt(400))
            .unwrap();
        let charged = charge_at_once(limiters, &capped, "over").await;
        assert!(charged > 1_400, "the charges pass the limit and the debt");
        let owing = limiters[1].check(&capped, "over", 1).await.unwrap();
        assert!(!owing.allowed(), "{algorithm}: a key in debt is denied");
        assert_eq!(
            owing.decisions()[0].debt,
            400,
            "{algorithm}: at most max_debt"
        );
        assert_eq!(owing.decisions()[0].remaining, 0);
        // An hour on, the debt is paid: by refill for the buckets (an hour refills 1 000, of
        // which the debt takes 400), by the next window for the windows, which starts with the
        // 400 counted. A sliding window's previous window (the limit it counted) still weighs in
        // fully at the start; an hour later only the 400 does.
        clock.advance(HOUR);
        let paid = limiters[2].check(&capped, "over", 0).await.unwrap();
        assert_eq!(paid.decisions()[0].debt, 0, "{algorithm}");
        if algorithm == Algorithm::SlidingWindow {
            assert_eq!(paid.decisions()[0].remaining, 0, "{algorithm}");
            clock.advance(HOUR);
        }
        let paid = limiters[3 % limiters.len()]
            .check(&capped, "over", 0)
            .await
            .unwrap();
        assert_eq!(paid.decisions()[0].remaining, 600, "{algorithm}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charges_on_one_node_count_exactly_and_owe_at_most_max_debt() {
    let server = RedisServer::start().unwrap();
    let clock = ManualClock::new(START_US);
    let limiters = limiters(&server.url(), &clock).await;
    every_unit_charged_counts_and_debt_is_capped(&limiters, &clock).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charges_on_a_cluster_count_exactly_and_owe_at_most_max_debt() {
    let cluster = RedisCluster::start().unwrap();
    let clock = ManualClock::new(START_US);
    let limiters = limiters(&cluster.url(), &clock).await;
    every_unit_charged_counts_and_debt_is_capped(&limiters, &clock).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charges_in_memory_count_exactly_and_owe_at_most_max_debt() {
    let clock = ManualClock::new(START_US);
    let store = MemoryStore::builder().clock(clock.clone()).build();
    let limiter = Limiter::new(Storage::from(store));
    every_unit_charged_counts_and_debt_is_capped(
        &[limiter.clone(), limiter.clone(), limiter],
        &clock,
    )
    .await;
}

/// Every task reserves on an estimate of 1 to 40 and settles at an actual cost of 0 to 59,
/// `CHARGES` times, on `key`; returns the sum of actual costs. With `kept`, each reservation is
/// kept in the store and settled by its id through another limiter, twice (the second finds
/// nothing).
async fn reserve_and_settle_at_once(
    limiters: &[Limiter],
    policy: &Policy,
    key: &'static str,
    kept: bool,
) -> u64 {
    let total = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (limiter, settler, policies, total) = (
                limiters[t % limiters.len()].clone(),
                limiters[(t + 1) % limiters.len()].clone(),
                [policy.clone()],
                Arc::clone(&total),
            );
            tokio::spawn(async move {
                let named = |name: &str| (name == policies[0].name()).then(|| policies[0].clone());
                for n in 0..CHARGES {
                    let estimate = 1 + (t as u64 * 11 + n * 5) % 40;
                    let actual = (t as u64 * 3 + n * 17) % 60;
                    let reservation = limiter.reserve(&policies, key, estimate).await;
                    let reservation = reservation.unwrap();
                    assert!(reservation.allowed());
                    if kept {
                        let id = reservation.keep(HOUR).await.unwrap().unwrap();
                        assert_eq!(id.len(), floodwall::KEPT_ID_LEN);
                        let settled = settler.settle_kept(&id, actual, named).await.unwrap();
                        assert_eq!(settled.map(|s| s.estimate), Some(estimate));
                        let again = settler.settle_kept(&id, actual, named).await.unwrap();
                        assert!(again.is_none(), "a kept reservation settled twice");
                    } else {
                        reservation.settle(actual).await.unwrap();
                    }
                    total.fetch_add(actual, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    total.load(Ordering::Relaxed)
}

async fn settled_reservations_charge_their_actual_costs(limiters: &[Limiter]) {
    for algorithm in Algorithm::ALL
        .into_iter()
        .filter(|algorithm| algorithm.carries_debt())
    {
        let policy = Policy::new("reserved", algorithm, 1_000_000, HOUR)
            .and_then(|policy| policy.with_max_debt(1_000))
            .unwrap();
        for (key, kept) in [("settled", false), ("kept", true)] {
            let actual = reserve_and_settle_at_once(limiters, &policy, key, kept).await;
            let after = limiters[0].check(&policy, key, 0).await.unwrap();
            assert_eq!(
                after.decisions()[0].remaining,
                1_000_000 - actual,
                "{algorithm}, kept {kept}: the sum of actual costs, whatever the estimates"
            );
        }
        // A reservation its owner drops is settled at its estimate.
        let dropped = limiters[1]
            .reserve(std::slice::from_ref(&policy), "dropped", 30)
            .await
            .unwrap();
        drop(dropped);
        let after = limiters[2].check(&policy, "dropped", 0).await.unwrap();
        assert_eq!(
            after.decisions()[0].remaining,
            1_000_000 - 30,
            "{algorithm}"
        );
    }
    let held = Policy::new("held", Algorithm::Concurrency, 10, HOUR).unwrap();
    let refused = limiters[0].reserve(&[held], "k", 1).await.unwrap_err();
    assert!(refused.to_string().contains("hold a lease"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_on_one_node_and_a_cluster_charge_the_sum_of_actual_costs() {
    let clock = ManualClock::new(START_US);
    let server = RedisServer::start().unwrap();
    settled_reservations_charge_their_actual_costs(&limiters(&server.url(), &clock).await).await;
    let cluster = RedisCluster::start().unwrap();
    settled_reservations_charge_their_actual_costs(&limiters(&cluster.url(), &clock).await).await;
    let store = MemoryStore::builder().clock(clock.clone()).build();
    let limiter = Limiter::new(Storage::from(store));
    settled_reservations_charge_their_actual_costs(&[limiter.clone(), limiter.clone(), limiter])
        .await;
}

/// Callers who leave mid-call, on a healthy Redis and while it hangs (SIGSTOP): a settle whose
/// caller is gone still charges once Redis answers, and a reservation whose caller left before
/// its answer stays charged at its estimate. Nothing is lost and nothing counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_who_leave_a_settle_or_a_reservation_mid_call_leave_it_charged() {
    let server = RedisServer::start().unwrap();
    let config = RedisConfig::new(server.url()).timeout(Duration::from_secs(5));
    let limiter = Limiter::new(RedisStore::connect(config).await.unwrap());
    let policy = Policy::new("tokens", Algorithm::FixedWindow, 1_000, YEAR).unwrap();
    let policies = std::slice::from_ref(&policy);
    for stall in [false, true] {
        let key = format!("left-{stall}");
        let reservation = limiter.reserve(policies, &key, 10).await.unwrap();
        if stall {
            server.pause().unwrap();
        }
        let settle = tokio::time::timeout(Duration::from_millis(5), reservation.settle(110));
        let left = settle.await.is_err();
        assert!(left || !stall, "settled while Redis hung");
        let reserve = limiter.reserve(policies, "gone", 7);
        let gone = tokio::time::timeout(Duration::from_millis(5), reserve).await;
        assert!(gone.is_err() || !stall, "reserved while Redis hung");
        if stall {
            server.resume().unwrap();
        }
        assert!(limiter.quiesce(Duration::from_secs(5)).await);
        let after = limiter.check(&policy, &key, 0).await.unwrap();
        assert_eq!(
            after.decisions()[0].remaining,
            1_000 - 110,
            "stall: {stall}"
        );
    }
    // Two reservations of 7 whose callers left: each charged its estimate at most once (not at
    // all if its caller left before the call reached the store).
    let gone = limiter.check(&policy, "gone", 0).await.unwrap();
    assert!(gone.decisions()[0].remaining >= 1_000 - 14, "{gone:?}");
}

/// A kept reservation expires with its time to live (its estimate stays charged), an id that
/// was never given finds nothing, and a policy gone from the configuration is left alone.
#[tokio::test]
async fn kept_reservations_expire_and_unknown_ids_find_nothing() {
    let clock = ManualClock::new(START_US);
    let limiter = Limiter::new(MemoryStore::builder().clock(clock.clone()).build());
    let policy = Policy::new("tokens", Algorithm::TokenBucket, 1_000, HOUR).unwrap();
    let named = |name: &str| (name == "tokens").then(|| policy.clone());
    let reserve = || limiter.reserve(std::slice::from_ref(&policy), "org", 100);
    let expiring = reserve().await.unwrap();
    let id = expiring
        .keep(Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    clock.advance(Duration::from_secs(11));
    assert!(
        limiter
            .settle_kept(&id, 500, named)
            .await
            .unwrap()
            .is_none()
    );
    for never in ["", "0123", &"g".repeat(32), &id.to_uppercase()] {
        assert!(
            limiter
                .settle_kept(never, 5, named)
                .await
                .unwrap()
                .is_none(),
            "{never}"
        );
    }
    let orphan = reserve().await.unwrap().keep(HOUR).await.unwrap().unwrap();
    let settled = limiter.settle_kept(&orphan, 900, |_| None).await.unwrap();
    assert!(
        settled.is_some_and(|s| s.state.is_none()),
        "nothing left to charge"
    );
    // Both estimates stayed charged, and nothing more; refill of the 11 s aside.
    let after = limiter.check(&policy, "org", 0).await.unwrap();
    let refilled = 11 * 1_000 / 3_600;
    assert_eq!(after.decisions()[0].remaining, 1_000 - 200 + refilled);
}

/// A settle for less after the admission's `reset_after` gives nothing back: the window that
/// counted the estimate is gone, and a refund would hand the next one more than its limit. A
/// settle for more charges the current window all the same, in hand or kept.
#[tokio::test]
async fn a_settle_after_reset_after_charges_the_current_quota_and_refunds_nothing() {
    // 10 ms before a minute window ends.
    let clock = ManualClock::new(1_699_999_979_990_000);
    let limiter = Limiter::new(MemoryStore::builder().clock(clock.clone()).build());
    let policy = Policy::new(
        "tokens",
        Algorithm::FixedWindow,
        10,
        Duration::from_secs(60),
    )
    .unwrap();
    let policies = std::slice::from_ref(&policy);
    let named = |name: &str| (name == "tokens").then(|| policy.clone());
    let in_hand = limiter.reserve(policies, "in-hand", 8).await.unwrap();
    let kept = limiter.reserve(policies, "kept", 8).await.unwrap();
    let kept = kept.keep(HOUR).await.unwrap().unwrap();
    // Both time their service on the store's clock, the one `reset_after` counts on.
    clock.advance(Duration::from_secs(1));
    let settled = in_hand.settle(2).await.unwrap();
    assert_eq!(
        settled.decisions()[0].remaining,
        2,
        "answered the admission, refunded nothing"
    );
    let settled = limiter.settle_kept(&kept, 2, named).await.unwrap().unwrap();
    assert!(settled.state.is_none(), "nothing given back");
    for key in ["in-hand", "kept"] {
        let now = limiter.check(&policy, key, 0).await.unwrap();
        assert_eq!(
            now.decisions()[0].remaining,
            10,
            "{key}: the new window is whole"
        );
    }
    // More than the estimate, after the window turned: the difference lands in this one.
    let late = limiter.reserve(policies, "late", 4).await.unwrap();
    clock.advance(Duration::from_secs(60));
    let charged = late.settle(7).await.unwrap();
    assert_eq!(charged.decisions()[0].remaining, 7);
}

/// The refund rule times a reservation's service on the store's clock, the one its
/// `reset_after` counts on: under a clock that stands still, a settle 10 ms of real time later
/// still gives back what the estimate overstated (on the runtime's clock it would not: a unit of
/// a million an hour is back in 3.6 ms).
#[tokio::test]
async fn the_refund_rule_counts_on_the_stores_clock() {
    let clock = ManualClock::new(START_US);
    let limiter = Limiter::new(MemoryStore::builder().clock(clock).build());
    let policy = Policy::new("tokens", Algorithm::TokenBucket, 1_000_000, HOUR).unwrap();
    let policies = std::slice::from_ref(&policy);
    let named = |name: &str| (name == "tokens").then(|| policy.clone());
    let in_hand = limiter.reserve(policies, "in-hand", 1).await.unwrap();
    let kept = limiter.reserve(policies, "kept", 1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let kept = kept.keep(HOUR).await.unwrap().unwrap();
    in_hand.settle(0).await.unwrap();
    limiter.settle_kept(&kept, 0, named).await.unwrap().unwrap();
    for key in ["in-hand", "kept"] {
        let now = limiter.check(&policy, key, 0).await.unwrap();
        assert_eq!(now.decisions()[0].remaining, 1_000_000, "{key}");
    }
}
