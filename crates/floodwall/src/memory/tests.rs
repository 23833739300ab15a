//! Tests that need to know which shard a key lands in, which the store keeps secret from
//! everyone outside it.

use super::*;
use floodwall_core::{Algorithm, ManualClock};
use std::time::Duration;

/// A decision over keys in two shards makes room in each shard for that shard's own new keys:
/// a full shard receiving two of them evicts exactly two entries, not one (room too small)
/// and not three (room for a key that lives elsewhere).
#[test]
fn a_multi_shard_decision_evicts_per_shard_for_that_shards_new_keys() {
    let clock = ManualClock::new(1_700_000_000_000_000);
    let store = MemoryStore::builder()
        .max_keys(16)
        .shards(2)
        .clock(clock.clone())
        .build();
    assert_eq!(store.inner.per_shard_max, 8);
    let policy = Policy::new("p", Algorithm::FixedWindow, 10, Duration::from_secs(60)).unwrap();
    let keys: Vec<Vec<u8>> = (0..200).map(|n| format!("k{n}").into_bytes()).collect();
    let in_shard = |shard: usize| {
        let (store, policy) = (&store, &policy);
        keys.iter()
            .filter(move |key| store.shard_of(store.key_id(policy, key)) == shard)
            .cloned()
    };
    let shard_zero: Vec<Vec<u8>> = in_shard(0).take(10).collect();
    let hot = in_shard(1).next().expect("a key in shard 1");
    assert_eq!(
        shard_zero.len(),
        10,
        "200 keys, and fewer than 10 in shard 0"
    );

    let hit = |key: &[u8], cost: u64| {
        let check = Check::new(std::slice::from_ref(&policy), key, cost).unwrap();
        assert!(store.decide_sync(&check).allowed);
    };
    // Shard 0 full, each entry with its own share in use so that eviction ranks have no ties.
    for (n, key) in shard_zero[..8].iter().enumerate() {
        hit(key, n as u64 + 1);
    }
    hit(&hot, 1);
    let counts = || {
        let stats = store.stats();
        (stats.keys, stats.evicted)
    };
    assert_eq!(counts(), (9, 0));

    let pairs = [
        (&policy, shard_zero[8].as_slice()),
        (&policy, shard_zero[9].as_slice()),
        (&policy, hot.as_slice()),
    ];
    let check = Check::each(pairs, 1).unwrap();
    assert!(store.decide_sync(&check).allowed);
    // Shard 0: 8 - 2 evicted + 2 new; shard 1: the hot key only.
    assert_eq!(counts(), (9, 2));
}

/// A store of 16 keys in two shards whose shard 0 is full (eight keys, each with its own share
/// in use), with one more key tracked in shard 1; and the keys of each shard not yet used.
struct FullShard {
    store: MemoryStore,
    policy: Policy,
    tracked_in_zero: Vec<u8>,
    new_in_zero: Vec<u8>,
    tracked_in_one: Vec<u8>,
}

impl FullShard {
    fn new() -> Self {
        let store = MemoryStore::builder()
            .max_keys(16)
            .shards(2)
            .clock(ManualClock::new(1_700_000_000_000_000))
            .build();
        let policy = Policy::new("p", Algorithm::FixedWindow, 10, Duration::from_secs(60)).unwrap();
        let keys: Vec<Vec<u8>> = (0..200).map(|n| format!("k{n}").into_bytes()).collect();
        let in_shard = |shard: usize| -> Vec<Vec<u8>> {
            keys.iter()
                .filter(|key| store.shard_of(store.key_id(&policy, key)) == shard)
                .cloned()
                .collect()
        };
        let (zero, one) = (in_shard(0), in_shard(1));
        let full = FullShard {
            tracked_in_zero: zero[0].clone(),
            new_in_zero: zero[8].clone(),
            tracked_in_one: one[0].clone(),
            store,
            policy,
        };
        for (n, key) in zero[..8].iter().enumerate() {
            full.hit(&[key], n as u64 + 1);
        }
        full.hit(&[&one[0]], 1);
        assert_eq!(full.counts(), (9, 0));
        full
    }

    fn hit(&self, keys: &[&[u8]], cost: u64) {
        let pairs = keys.iter().map(|key| (&self.policy, *key));
        let check = Check::each(pairs, cost).unwrap();
        assert!(self.store.decide_sync(&check).allowed);
    }

    /// (keys tracked, keys evicted).
    fn counts(&self) -> (usize, u64) {
        let stats = self.store.stats();
        (stats.keys, stats.evicted)
    }
}

/// A decision over two shards whose keys in the full one are all tracked already brings that
/// shard nothing new: nothing is evicted.
#[test]
fn a_full_shard_evicts_nothing_for_keys_it_already_tracks() {
    let full = FullShard::new();
    full.hit(&[&full.tracked_in_zero, &full.tracked_in_one], 1);
    assert_eq!(full.counts(), (9, 0));
}

/// One new key for a full shard, in a decision over two shards, evicts one entry there.
#[test]
fn a_full_shard_evicts_one_entry_for_one_new_key() {
    let full = FullShard::new();
    full.hit(&[&full.new_in_zero, &full.tracked_in_one], 1);
    assert_eq!(full.counts(), (9, 1));
}

/// A shard count that is not a power of two is rounded down to one.
#[test]
fn shard_counts_round_down_to_a_power_of_two() {
    for (asked, per_shard) in [(1, 64), (2, 32), (3, 32), (5, 16), (8, 8), (9, 8)] {
        let store = MemoryStore::builder().max_keys(64).shards(asked).build();
        assert_eq!(store.inner.per_shard_max, per_shard, "{asked} shards asked");
    }
}

/// An attacker who knows the hash family but not the store's seed can at best make keys
/// collide in the hash; even when every key collides, each keeps its own state: short keys are
/// compared whole, and long ones by a digest under a secret the attacker does not know. Keys
/// built to look alike (one byte apart, a shared 15-byte start, one a prefix of another, the
/// same key under another policy) each get exactly their own limit.
#[test]
fn keys_whose_hashes_all_collide_still_never_share_state() {
    let clock = ManualClock::new(1_700_000_000_000_000);
    let store = MemoryStore::builder()
        .max_keys(10_000)
        .shards(1)
        .clock(clock.clone())
        .colliding()
        .build();
    let limit = 3;
    let policies = [
        Policy::new("p", Algorithm::Gcra, limit, Duration::from_secs(60)).unwrap(),
        Policy::new("q", Algorithm::Gcra, limit, Duration::from_secs(60)).unwrap(),
    ];
    let mut keys: Vec<Vec<u8>> = Vec::new();
    for n in 0_u8..=255 {
        keys.push(vec![n]);
        keys.push(vec![b'x'; usize::from(n % 40)]);
        let mut long = b"fifteen bytes..".to_vec();
        long.push(n);
        keys.push(long);
    }
    keys.sort();
    keys.dedup();
    for round in 0..=limit {
        for policy in &policies {
            for key in &keys {
                let check = Check::new(std::slice::from_ref(policy), key, 1).unwrap();
                let allowed = store.decide_sync(&check).allowed;
                assert_eq!(
                    allowed,
                    round < limit,
                    "{key:?} of {} in round {round}",
                    policy.name()
                );
            }
        }
    }
    let stats = store.stats();
    assert_eq!((stats.keys, stats.evicted), (2 * keys.len(), 0));
}

/// Two policy objects of one name (a policy reloaded from the configuration, say) count one
/// state per key, whichever object a decision comes with.
#[test]
fn policies_of_one_name_share_their_keys_state() {
    let store = MemoryStore::new();
    let first = Policy::new("p", Algorithm::FixedWindow, 3, Duration::from_secs(60)).unwrap();
    let reloaded = Policy::new("p", Algorithm::FixedWindow, 3, Duration::from_secs(60)).unwrap();
    assert!(!Arc::ptr_eq(first.shared_name(), reloaded.shared_name()));
    let admitted = (0..6)
        .filter(|n| {
            let policy = if n % 2 == 0 { &first } else { &reloaded };
            let check = Check::new(std::slice::from_ref(policy), b"k", 1).unwrap();
            store.decide_sync(&check).allowed
        })
        .count();
    assert_eq!(admitted, 3);
}

/// A decision whose first key is new and whose second is tracked, on a policy table so full
/// that inserting the first grows it: the second key's position from judging is stale by the
/// time it is concluded, and its own entry must still be the one found (never the entry now
/// at that position, never none). Table growth moves entries by hash, which is seeded per
/// store, so this is tried on many stores.
#[test]
fn a_position_moved_by_an_earlier_insert_still_finds_its_own_entry() {
    let policy = Policy::new("p", Algorithm::FixedWindow, 100, Duration::from_secs(60)).unwrap();
    // A table of 32 buckets holds 28 entries; the 29th grows it to 64.
    let tracked: Vec<Vec<u8>> = (0..28)
        .map(|n| format!("tracked-{n}").into_bytes())
        .collect();
    for round in 0..32 {
        let store = MemoryStore::builder().max_keys(10_000).shards(1).build();
        let remaining = |key: &[u8]| {
            let check = Check::new(std::slice::from_ref(&policy), key, 0).unwrap();
            store.decide_sync(&check).decisions[0].remaining
        };
        for key in &tracked {
            let check = Check::new(std::slice::from_ref(&policy), key, 1).unwrap();
            assert!(store.decide_sync(&check).allowed);
        }
        let target = &tracked[round % tracked.len()];
        let pairs = [(&policy, b"new".as_slice()), (&policy, target.as_slice())];
        let answer = store.decide_sync(&Check::each(pairs, 1).unwrap());
        assert!(answer.allowed);
        assert_eq!(answer.decisions[1].remaining, 98, "round {round}");
        for key in &tracked {
            let expected = if key == target { 98 } else { 99 };
            assert_eq!(remaining(key), expected, "round {round}");
        }
        assert_eq!(store.stats().keys, 29);
    }
}
