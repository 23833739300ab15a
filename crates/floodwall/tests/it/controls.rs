//! Operator controls through the [`Limiter`]: a block denies its pair with the block's wait and
//! ends on time or on unblock; allow-listed keys are never counted and deny-listed ones always
//! refused; penalties and rewards move the quota; all of it agreed by instances sharing one
//! Redis node or a 3-master cluster, and bounded.

use crate::support::LimiterExt;
use std::time::Duration;

use floodwall::controls::ListEntry;
use floodwall::controls::{MAX_CONTROL_BYTES, MAX_CONTROL_KEY_BYTES, MAX_CONTROLS};
use floodwall::redis::{RedisConfig, RedisStore};
use floodwall::{Algorithm, ControlError, Limiter, List, MemoryStore, Policy, Source};
use floodwall_testkit::{RedisCluster, RedisServer};

fn per_minute(limit: u64) -> Policy {
    Policy::new(
        "per-ip",
        Algorithm::SlidingWindow,
        limit,
        Duration::from_secs(60),
    )
    .unwrap()
}

async fn redis_pair(url: &str) -> (Limiter, Limiter) {
    let connect = || async {
        let config = RedisConfig::new(url).timeout(Duration::from_secs(5));
        Limiter::new(RedisStore::connect(config).await.unwrap())
    };
    (connect().await, connect().await)
}

/// How many of `n` checks of `key` are admitted.
async fn admitted(limiter: &Limiter, policy: &Policy, key: &str, n: usize) -> usize {
    let mut admitted = 0;
    for _ in 0..n {
        if limiter.check(policy, key, 1).await.unwrap().allowed() {
            admitted += 1;
        }
    }
    admitted
}

/// `made` blocks, lists and unlists; `seen` must agree after one sync.
async fn controls_are_shared(made: &Limiter, seen: &Limiter) {
    let policy = per_minute(5);
    let other = Policy::new("per-user", Algorithm::Gcra, 5, Duration::from_secs(60)).unwrap();

    // A block denies its own pair, with the block's end as the wait, and nothing else.
    let block = made
        .block(&policy, "10.0.0.7", Duration::from_secs(30), "ops")
        .await
        .unwrap();
    assert_eq!(block.made.by, "ops");
    seen.sync_controls().await.unwrap();
    for limiter in [made, seen] {
        let verdict = limiter.check(&policy, "10.0.0.7", 1).await.unwrap();
        assert!(!verdict.allowed());
        assert_eq!(verdict.source(), Source::Blocked);
        let wait = verdict.retry_after().unwrap();
        assert!(
            wait > Duration::from_secs(28) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        assert!(
            limiter
                .check(&other, "10.0.0.7", 1)
                .await
                .unwrap()
                .allowed()
        );
        assert!(
            limiter
                .check(&policy, "10.0.0.8", 1)
                .await
                .unwrap()
                .allowed()
        );
    }
    assert_eq!(seen.blocks().len(), 1);
    // Nothing was counted while blocked: the key has its whole quota once unblocked.
    assert!(made.unblock(&policy, "10.0.0.7").await.unwrap());
    seen.sync_controls().await.unwrap();
    assert!(seen.blocks().is_empty());
    assert_eq!(admitted(seen, &policy, "10.0.0.7", 8).await, 5);

    // Allow-listed: never counted, under any policy, by key or by network.
    made.list(List::Allow, ListEntry::parse("monitor").unwrap(), "ops")
        .await
        .unwrap();
    made.list(
        List::Allow,
        ListEntry::parse("192.168.0.0/16").unwrap(),
        "ops",
    )
    .await
    .unwrap();
    seen.sync_controls().await.unwrap();
    for key in ["monitor", "192.168.4.4"] {
        assert_eq!(admitted(seen, &policy, key, 20).await, 20, "{key}");
        let verdict = seen.check(&policy, key, 1).await.unwrap();
        assert_eq!(verdict.source(), Source::AllowList);
    }
    // An allow-listed pair is left out; the other pairs of the check still count.
    let pairs = [(&policy, "monitor"), (&other, "monitor-global")];
    for _ in 0..5 {
        assert!(seen.check_each(&pairs, 1).await.unwrap().allowed());
    }
    let verdict = seen.check_each(&pairs, 1).await.unwrap();
    assert!(!verdict.allowed());
    assert!(verdict.decisions()[0].allowed && !verdict.decisions()[1].allowed);

    // Deny-listed: refused whatever the quota, deny over allow; and back once taken off.
    made.list(List::Deny, ListEntry::parse("192.168.9.9").unwrap(), "ops")
        .await
        .unwrap();
    seen.sync_controls().await.unwrap();
    let verdict = seen.check(&policy, "192.168.9.9", 1).await.unwrap();
    assert!(!verdict.allowed());
    assert_eq!(verdict.source(), Source::DenyList);
    assert_eq!(
        seen.screen_client("192.168.9.9".parse().unwrap()),
        Some(List::Deny)
    );
    assert_eq!(
        seen.screen_client("192.168.9.8".parse().unwrap()),
        Some(List::Allow)
    );
    assert_eq!(seen.screen_client("10.9.9.8".parse().unwrap()), None);
    assert_eq!(seen.lists().len(), 3);
    for entry in ["192.168.9.9", "192.168.0.0/16", "monitor"] {
        let list = if entry == "192.168.9.9" {
            List::Deny
        } else {
            List::Allow
        };
        assert!(
            made.unlist(list, &ListEntry::parse(entry).unwrap())
                .await
                .unwrap(),
            "{entry}"
        );
    }
    seen.sync_controls().await.unwrap();
    assert!(seen.lists().is_empty());
    assert!(
        seen.check(&policy, "192.168.9.9", 1)
            .await
            .unwrap()
            .allowed()
    );
    assert!(
        !made
            .unlist(List::Deny, &ListEntry::parse("nothing").unwrap())
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn controls_apply_in_memory() {
    let limiter = Limiter::new(MemoryStore::new());
    controls_are_shared(&limiter, &limiter).await;
}

#[tokio::test]
async fn controls_are_shared_through_one_redis_node() {
    let redis = RedisServer::start().unwrap();
    let (made, seen) = redis_pair(&redis.url()).await;
    controls_are_shared(&made, &seen).await;
}

#[tokio::test]
async fn controls_are_shared_through_a_cluster() {
    let cluster = RedisCluster::start().unwrap();
    let (made, seen) = redis_pair(&cluster.url()).await;
    controls_are_shared(&made, &seen).await;
}

#[tokio::test]
async fn a_block_ends_by_itself_and_leaves_the_store() {
    let redis = RedisServer::start().unwrap();
    // Both limiters on one injected clock: the block's end is the clock's, not a sleep's.
    let clock = floodwall::ManualClock::new(1_700_000_000_000_000);
    let connect = || async {
        let config = RedisConfig::new(redis.url())
            .timeout(Duration::from_secs(5))
            .clock(clock.clone());
        Limiter::new(RedisStore::connect(config).await.unwrap())
    };
    let (made, seen) = (connect().await, connect().await);
    let policy = per_minute(5);
    made.block(&policy, "k", Duration::from_millis(300), "ops")
        .await
        .unwrap();
    seen.sync_controls().await.unwrap();
    assert_eq!(
        seen.check(&policy, "k", 1).await.unwrap().source(),
        Source::Blocked
    );
    clock.advance(Duration::from_millis(400));
    assert!(seen.check(&policy, "k", 1).await.unwrap().allowed());
    // The next sync after a change drops the ended block from the store.
    made.block(&policy, "other", Duration::from_secs(60), "ops")
        .await
        .unwrap();
    seen.sync_controls().await.unwrap();
    let fields = redis.cli(&["HLEN", "floodwall:controls"]).unwrap();
    assert_eq!(fields.trim(), "2", "the version and the live block");
}

#[tokio::test]
async fn penalties_take_what_is_left_and_rewards_give_back_to_the_full_quota() {
    let limiter = Limiter::new(MemoryStore::new());
    let policy = per_minute(10);
    let remaining = |verdict: floodwall::Verdict| verdict.decision().unwrap().remaining;
    assert_eq!(
        remaining(limiter.penalise(&policy, "k", 4).await.unwrap()),
        6
    );
    assert_eq!(
        remaining(limiter.penalise(&policy, "k", 100).await.unwrap()),
        0
    );
    assert!(!limiter.check(&policy, "k", 1).await.unwrap().allowed());
    assert_eq!(remaining(limiter.reward(&policy, "k", 3).await.unwrap()), 3);
    assert_eq!(
        remaining(limiter.reward(&policy, "k", 100).await.unwrap()),
        10
    );
    assert_eq!(admitted(&limiter, &policy, "k", 12).await, 10);
}

#[tokio::test]
async fn controls_are_bounded_and_refuse_what_they_cannot_keep() {
    let limiter = Limiter::new(MemoryStore::new());
    let policy = per_minute(5);
    for n in 0..MAX_CONTROLS {
        limiter
            .block(&policy, format!("key-{n}"), Duration::from_secs(60), "ops")
            .await
            .unwrap();
    }
    let full = limiter
        .list(List::Deny, ListEntry::parse("10.0.0.0/8").unwrap(), "ops")
        .await;
    assert!(matches!(full, Err(ControlError::Full { .. })), "{full:?}");
    let long = limiter
        .block(
            &policy,
            vec![b'k'; MAX_CONTROL_KEY_BYTES + 1],
            Duration::from_secs(1),
            "ops",
        )
        .await;
    assert!(
        matches!(long, Err(ControlError::KeyTooLong { .. })),
        "{long:?}"
    );
    // Long keys fill the byte budget before the count.
    let limiter = Limiter::new(MemoryStore::new());
    let mut refused = None;
    for n in 0..MAX_CONTROL_BYTES / MAX_CONTROL_KEY_BYTES + 1 {
        let mut key = vec![b'k'; MAX_CONTROL_KEY_BYTES - 8];
        key.extend_from_slice(&n.to_le_bytes());
        if let Err(error) = limiter
            .block(&policy, key, Duration::from_secs(60), "ops")
            .await
        {
            refused = Some((n, error));
            break;
        }
    }
    assert!(
        matches!(
            refused,
            Some((n, ControlError::FullOfBytes { .. })) if n == MAX_CONTROL_BYTES / MAX_CONTROL_KEY_BYTES
        ),
        "{refused:?}"
    );
    let zero = limiter.block(&policy, "k", Duration::ZERO, "ops").await;
    assert!(matches!(zero, Err(ControlError::ZeroDuration)), "{zero:?}");

    // A configured entry stays until the configuration changes.
    let limiter = Limiter::new(MemoryStore::new());
    limiter.configure_lists(vec![(List::Deny, ListEntry::parse("bad").unwrap())]);
    let refused = limiter
        .unlist(List::Deny, &ListEntry::parse("bad").unwrap())
        .await;
    assert!(
        matches!(refused, Err(ControlError::FromConfig { .. })),
        "{refused:?}"
    );
    assert_eq!(
        limiter.check(&policy, "bad", 1).await.unwrap().source(),
        Source::DenyList
    );
    // Waiting does not help a deny-listed key: acquire answers at once.
    let waited = tokio::time::Instant::now();
    let verdict = limiter
        .acquire(&policy, "bad", 1, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(verdict.source(), Source::DenyList);
    assert!(waited.elapsed() < Duration::from_secs(5));
    limiter.configure_lists(Vec::new());
    assert!(limiter.check(&policy, "bad", 1).await.unwrap().allowed());
}
