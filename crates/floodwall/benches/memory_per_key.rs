//! Resident memory per tracked key in `MemoryStore`, per algorithm, at 1 000 000 keys
//! (`PER_KEY_KEYS` sets another count).
//!
//! Measures the growth of the process's resident set (`/proc/self/statm`) while a fresh store
//! takes 1 000 000 distinct keys, each admitted once under a policy that keeps it away from rest.
//! Prints one JSON line per algorithm. Under `cargo test` (no `--bench`), it checks 10 000 keys
//! only, as a smoke test.
//!
//! `cargo bench -p floodwall --bench memory_per_key`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use floodwall::{Algorithm, Check, ManualClock, MemoryStore, Policy};

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bench = args.iter().any(|a| a == "--bench");
    let only = args.iter().skip(1).find(|a| !a.starts_with('-'));
    let Some(only) = only else {
        // Freed memory stays with the allocator, so each algorithm is measured in a fresh process.
        for algorithm in Algorithm::ALL {
            let mut child = std::process::Command::new(&args[0]);
            if bench {
                child.arg("--bench");
            }
            let status = child.arg(algorithm.as_str()).status().unwrap();
            assert!(status.success(), "{algorithm}: {status}");
        }
        return;
    };
    let algorithm: Algorithm = only.parse().unwrap();
    let keys: u64 = match std::env::var("PER_KEY_KEYS")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        Some(keys) if bench => keys,
        _ if bench => 1_000_000,
        _ => 10_000,
    };
    let policy = [Policy::new("p", algorithm, 100, Duration::from_secs(3600)).unwrap()];
    let before = resident_bytes();
    // Time stands still while the keys are made, so that none can come back to rest (and be
    // dropped) during the count: this measures bytes per key, not reclaiming, which the
    // boundedness tests cover. On the wall clock the count came up short once in a few dozen
    // CI runs, and the cause was not found.
    let store = MemoryStore::builder()
        .max_keys(keys as usize * 2)
        .clock(ManualClock::new(1_000_000))
        .build();
    for k in 0..keys {
        let key = k.to_le_bytes();
        let check = Check::new(&policy, &key, 1).unwrap();
        assert!(store.decide_sync(&check).allowed);
    }
    let after = resident_bytes();
    let stats = store.stats();
    assert_eq!(stats.keys as u64, keys, "{algorithm}: {stats:?}");
    let per_key = after.saturating_sub(before) as f64 / keys as f64;
    println!(
        "{{\"bench\": \"memory_per_key\", \"algorithm\": \"{algorithm}\", \"keys\": {keys}, \"bytes_per_key\": {per_key:.1}}}"
    );
}
