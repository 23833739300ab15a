//! Boundedness under key floods (docs/testing.md: F1, F2 at test scale).

use crate::support::check_sync;
use std::time::Duration;

use floodwall::{Algorithm, Limiter, ManualClock, MemoryStore, Policy, Source};

const NOW: u64 = 1_767_225_600_000_000;

#[test]
fn two_million_keys_never_exceed_the_cap_and_a_denied_key_stays_denied() {
    let clock = ManualClock::new(NOW);
    let store = MemoryStore::builder()
        .max_keys(100_000)
        .clock(clock.clone())
        .build();
    let policy = [Policy::new("per-ip", Algorithm::Gcra, 5, Duration::from_secs(60)).unwrap()];

    // The attacker exhausts its own key first.
    for _ in 0..5 {
        assert!(check_sync(&store, &policy, b"attacker", 1).allowed());
    }
    assert!(!check_sync(&store, &policy, b"attacker", 1).allowed());

    // Then floods distinct keys, hoping to evict its own counter. Every new key gets its
    // exact quota: one request of five leaves four.
    for i in 0..2_000_000u64 {
        let verdict = check_sync(&store, &policy, &i.to_le_bytes(), 1);
        assert!(verdict.allowed());
        assert_eq!(verdict.decisions()[0].remaining, 4, "key {i}");
        if i % 50_000 == 0 {
            assert!(store.stats().keys <= 100_000);
            let verdict = check_sync(&store, &policy, b"attacker", 1);
            assert!(
                !verdict.allowed(),
                "the attacker's key was evicted after {i} keys"
            );
        }
        clock.advance_us(1);
    }
    let stats = store.stats();
    assert!(stats.keys <= 100_000, "{stats:?}");
    assert!(
        stats.keys >= 90_000,
        "shards should stay close to the cap: {stats:?}"
    );
    assert!(stats.evicted >= 1_900_000, "{stats:?}");
    // Only flood keys were evicted: each had one unit of five in use, so no eviction gave back
    // more than a fifth of a quota.
    assert!(stats.evicted_most_used <= 0.2 + 1e-4, "{stats:?}");
    assert!(!check_sync(&store, &policy, b"attacker", 1).allowed());
}

/// A full store (the flood of new `x-user` values that once made every new identity fail open)
/// still limits a brand-new user to exactly its limit, with the true `remaining` each time, and
/// keeps a denied attacker denied: neither flooding nor waiting buys quota.
#[tokio::test]
async fn a_full_store_limits_a_new_user_exactly_and_keeps_a_denied_one_denied() {
    let clock = ManualClock::new(NOW);
    let store = MemoryStore::builder()
        .max_keys(10_000)
        .clock(clock.clone())
        .build();
    // The default on_error (allow), as the service runs it.
    let limiter = Limiter::new(store.clone());
    let login = Policy::new(
        "login",
        Algorithm::SlidingWindow,
        5,
        Duration::from_secs(3600),
    )
    .unwrap();
    for _ in 0..6 {
        limiter.check(&login, "attacker", 1).await.unwrap();
    }
    // Twelve seconds of random users at test scale: five times the store's bound.
    for i in 0..50_000u64 {
        let verdict = limiter
            .check(&login, format!("flood-{i}"), 1)
            .await
            .unwrap();
        assert_eq!(verdict.source(), Source::Store);
        if i % 200 == 0 {
            clock.advance(Duration::from_millis(48));
        }
    }
    let stats = store.stats();
    assert!(stats.keys <= 10_000);
    assert!(stats.evicted > 0);
    assert!(stats.evicted_most_used <= 0.2 + 1e-4, "{stats:?}");

    let mut remaining = Vec::new();
    for _ in 0..20 {
        let verdict = limiter.check(&login, "brand-new-user", 1).await.unwrap();
        assert_eq!(verdict.source(), Source::Store);
        if verdict.allowed() {
            remaining.push(verdict.decisions()[0].remaining);
        }
    }
    assert_eq!(remaining, [4, 3, 2, 1, 0]);
    let attacker = limiter.check(&login, "attacker", 1).await.unwrap();
    assert!(!attacker.allowed());
    assert_eq!(limiter.stats().fail_open, 0);
}

#[test]
fn keys_at_rest_are_reclaimed_without_being_asked() {
    let clock = ManualClock::new(NOW);
    let store = MemoryStore::builder()
        .max_keys(10_000)
        .clock(clock.clone())
        .build();
    let policy = [Policy::new("p", Algorithm::FixedWindow, 1, Duration::from_secs(1)).unwrap()];
    for round in 0..20u64 {
        // Each round half fills the store with new keys, then time moves past their windows.
        for i in 0..5_000u64 {
            let key = (round * 1_000_000 + i).to_le_bytes();
            let verdict = check_sync(&store, &policy, &key, 1);
            assert!(verdict.allowed(), "round {round} key {i}: {verdict:?}");
        }
        assert!(store.stats().keys <= 10_000);
        clock.advance(Duration::from_secs(2));
    }
    let stats = store.stats();
    assert!(stats.reclaimed >= 19 * 5_000 - 10_000, "{stats:?}");
}

#[test]
fn a_key_back_at_rest_is_dropped_on_its_next_request() {
    let clock = ManualClock::new(NOW);
    let store = MemoryStore::builder().clock(clock.clone()).build();
    let policy = [Policy::new("p", Algorithm::TokenBucket, 2, Duration::from_secs(1)).unwrap()];
    check_sync(&store, &policy, b"k", 1);
    assert_eq!(store.stats().keys, 1);
    clock.advance(Duration::from_secs(1));
    let peek = check_sync(&store, &policy, b"k", 0);
    assert_eq!(peek.decisions()[0].remaining, 2);
    assert_eq!(store.stats().keys, 0);
}

#[test]
fn hostile_client_keys_cost_no_more_than_plain_ones() {
    let store = MemoryStore::builder().clock(ManualClock::new(NOW)).build();
    let policy = [Policy::new("p", Algorithm::SlidingWindow, 3, Duration::from_secs(1)).unwrap()];
    let huge = vec![b'{'; 1 << 20];
    for key in [
        &b""[..],
        b"{",
        b"}",
        b"a{b}c",
        b"\0\r\n",
        b"\xff\xfe",
        &huge,
    ] {
        assert!(check_sync(&store, &policy, key, 1).allowed());
    }
    assert_eq!(store.stats().keys, 7);

    // 10 000 distinct keys of 64 KB each: 625 MB if the store kept their bytes, a couple of
    // MB for the entries it does keep (a fixed-size hash per key). The bound leaves room for
    // whatever other tests allocate meanwhile.
    let Some(before) = resident_bytes() else {
        return;
    };
    let mut key = vec![b'{'; 64 * 1024];
    for i in 0..10_000u64 {
        key[..8].copy_from_slice(&i.to_le_bytes());
        assert!(check_sync(&store, &policy, &key, 1).allowed());
    }
    assert_eq!(store.stats().keys, 10_007);
    let grown = resident_bytes().unwrap_or(before).saturating_sub(before);
    assert!(
        grown < 128 << 20,
        "10 000 large keys grew the process by {} MB",
        grown >> 20
    );
}

/// This process's resident memory, from /proc (Linux; elsewhere the measurement is skipped).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A full store makes room only for a key it does not track yet: a request on a tracked key
/// evicts nothing, nor does a peek at a new one (it stores nothing); a new key's first
/// request evicts exactly one entry, and the count never passes the bound.
#[test]
fn a_full_store_evicts_exactly_once_per_new_key_and_never_for_a_peek() {
    let clock = ManualClock::new(NOW);
    let store = MemoryStore::builder()
        .max_keys(4)
        .shards(1)
        .clock(clock.clone())
        .build();
    let policy = [Policy::new("p", Algorithm::Gcra, 10, Duration::from_secs(3_600)).unwrap()];
    for key in [b"a", b"b", b"c", b"d"] {
        assert!(check_sync(&store, &policy, key, 1).allowed());
        clock.advance_us(1);
    }
    let counts = |store: &MemoryStore| {
        let stats = store.stats();
        (stats.keys, stats.evicted)
    };
    assert_eq!(counts(&store), (4, 0));
    // A tracked key: no room needed.
    let again = check_sync(&store, &policy, b"a", 1);
    assert_eq!(again.decisions()[0].remaining, 8);
    assert_eq!(counts(&store), (4, 0));
    // A peek at a new key stores nothing, so it evicts nothing.
    let peek = check_sync(&store, &policy, b"e", 0);
    assert_eq!(peek.decisions()[0].remaining, 10);
    assert_eq!(counts(&store), (4, 0));
    // A new key's request: one entry makes room for it.
    assert!(check_sync(&store, &policy, b"e", 1).allowed());
    assert_eq!(counts(&store), (4, 1));
    assert_eq!(store.stats().max_keys, 4);
}

/// More shards asked for than keys allowed: the store keeps at most one shard per key, so
/// every key still has room and its limit holds. It reads its own clock.
#[test]
fn a_store_asked_for_more_shards_than_keys_still_keeps_each_key() {
    let clock = ManualClock::new(NOW);
    let store = MemoryStore::builder()
        .max_keys(3)
        .shards(3)
        .clock(clock.clone())
        .build();
    assert_eq!(store.now_us(), NOW);
    let policy = [Policy::new("p", Algorithm::FixedWindow, 1, Duration::from_secs(3_600)).unwrap()];
    for key in [b"x", b"y"] {
        assert!(check_sync(&store, &policy, key, 1).allowed());
        assert!(
            !check_sync(&store, &policy, key, 1).allowed(),
            "a key of a store of 3 keys was not kept"
        );
    }
    assert_eq!(store.stats().max_keys, 3);
}

/// A refund keeps the key's state until it is truly at rest: a sweep of the full store right
/// after it does not drop the key, so the units still in use still count.
#[test]
fn a_refunded_key_survives_the_next_sweep() {
    let clock = ManualClock::new(NOW);
    let store = MemoryStore::builder()
        .max_keys(2)
        .shards(1)
        .clock(clock.clone())
        .build();
    let policy =
        [Policy::new("p", Algorithm::FixedWindow, 10, Duration::from_secs(3_600)).unwrap()];
    assert!(check_sync(&store, &policy, b"a", 3).allowed());
    let check = floodwall::Check::new(&policy, b"a", 1).unwrap();
    assert_eq!(store.refund_sync(&check).decisions[0].remaining, 8);
    clock.advance_us(1);
    // The store fills, and the next new key makes it sweep.
    assert!(check_sync(&store, &policy, b"b", 1).allowed());
    assert!(check_sync(&store, &policy, b"c", 1).allowed());
    let after = check_sync(&store, &policy, b"a", 1);
    assert_eq!(
        after.decisions()[0].remaining,
        7,
        "a's 2 units in use were forgotten"
    );
}
