//! Shares of a rate among proxies in the memory store: the same shares as `Quota::report` on
//! the store's clock, and a bounded number of reporters' shares in all, reclaimed when they
//! lapse.

use std::time::Duration;

use floodwall::core::quota::{Capacity, Quota, Usage};
use floodwall::{Algorithm, Clock, ManualClock, MemoryStore, Policy};

const EPOCH_US: u64 = 1_767_225_600_000_000;
const TTL: Duration = Duration::from_secs(10);

fn busy() -> Usage {
    Usage {
        requests: 10_000,
        elapsed_us: 60_000_000,
    }
}

#[tokio::test]
async fn the_memory_store_grants_the_shares_quota_computes() {
    let clock = ManualClock::new(EPOCH_US);
    let store = MemoryStore::builder().clock(clock.clone()).build();
    let policy = Policy::new("api", Algorithm::TokenBucket, 120, Duration::from_secs(60))
        .unwrap()
        .with_burst(30)
        .unwrap();
    let capacity = Capacity::of(&policy).unwrap();
    let mut quota = Quota::new();
    for round in 0..20_u64 {
        let reporter = round % 3;
        clock.advance(Duration::from_millis(700 * (round % 4)));
        let usage = Usage {
            requests: round * 37 % 200,
            elapsed_us: 5_000_000,
        };
        let expected = quota.report(reporter, usage, clock.now_us(), capacity, 10_000_000);
        let granted = store
            .report_quota(&policy, b"acme", reporter, usage, TTL)
            .await
            .unwrap();
        assert_eq!(granted, expected, "round {round}");
    }
}

#[tokio::test]
async fn reporters_past_the_bound_get_nothing_until_shares_lapse() {
    let clock = ManualClock::new(EPOCH_US);
    // A quarter of max_keys: 4 reporters' shares in all, whatever the pairs.
    let store = MemoryStore::builder()
        .max_keys(16)
        .clock(clock.clone())
        .build();
    let policy = Policy::new("api", Algorithm::Gcra, 80, Duration::from_secs(60)).unwrap();
    for (tenant, reporter) in [(0, 1), (1, 1), (1, 2), (2, 1)] {
        let key = format!("tenant-{tenant}");
        let share = store
            .report_quota(&policy, key.as_bytes(), reporter, busy(), TTL)
            .await
            .unwrap();
        assert!(share.per_period > 0);
    }
    // A fifth reporter, on a new pair or on a known one, gets nothing.
    for (tenant, reporter) in [(3, 1), (0, 2)] {
        let key = format!("tenant-{tenant}");
        let refused = store
            .report_quota(&policy, key.as_bytes(), reporter, busy(), TTL)
            .await
            .unwrap();
        assert_eq!(
            refused.per_period, 0,
            "tenant {tenant}, reporter {reporter}"
        );
    }
    // A known reporter still reports.
    let known = store
        .report_quota(&policy, b"tenant-0", 1, busy(), TTL)
        .await
        .unwrap();
    assert!(known.per_period > 0);
    clock.advance(TTL);
    let later = store
        .report_quota(&policy, b"tenant-4", 1, busy(), TTL)
        .await
        .unwrap();
    assert_eq!(
        later.per_period, 70,
        "the others lapsed: the pool is its own"
    );
}
