//! The memory store's GCRA decision and governor's keyed check in a bare loop, one thread, for
//! profiling and for A/B runs (criterion's statistics hide nothing here but take longer):
//!
//! `cargo bench -p floodwall --bench memory_loop -- floodwall|governor [DECISIONS] [KEYS]`
//!
//! Prints the mean ns a decision. Each side pre-fills its keys, then decides for a fixed
//! pseudo-random sequence of them (the memory bench's first thread's), a limit never reached. Under
//! `valgrind --tool=callgrind`, a run of 0 decisions gives the setup's instructions to subtract.
//! Run without a side (as `cargo bench` does), it runs both briefly.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]
// A benchmark measures wall time.
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::time::Instant;

use floodwall::{Algorithm, Check, MemoryStore};
use governor::RateLimiter;

#[path = "memory_support/mod.rs"]
mod memory_support;
use memory_support::{SEQUENCE, governor_never_reached, key_sequence, never_reached};

fn floodwall(decisions: usize, keys: u64) -> f64 {
    let sequence = key_sequence(0, keys);
    let store = MemoryStore::builder().max_keys(100_000).build();
    let policy = [never_reached(Algorithm::Gcra)];
    for k in 0..keys {
        store.decide_sync(&Check::new(&policy, &k.to_le_bytes(), 1).unwrap());
    }
    let started = Instant::now();
    for i in 0..decisions {
        let key = black_box(sequence[i & (SEQUENCE - 1)]).to_le_bytes();
        black_box(
            store
                .decide_sync(&Check::new(&policy, &key, 1).unwrap())
                .allowed,
        );
    }
    started.elapsed().as_nanos() as f64 / decisions.max(1) as f64
}

fn governor(decisions: usize, keys: u64) -> f64 {
    let sequence = key_sequence(0, keys);
    let limiter: governor::DefaultKeyedRateLimiter<u64> =
        RateLimiter::keyed(governor_never_reached());
    for k in 0..keys {
        let _ = limiter.check_key(&k);
    }
    let started = Instant::now();
    for i in 0..decisions {
        black_box(
            limiter
                .check_key(&black_box(sequence[i & (SEQUENCE - 1)]))
                .is_ok(),
        );
    }
    started.elapsed().as_nanos() as f64 / decisions.max(1) as f64
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let decisions = args.get(1).map_or(20_000_000, |n| n.parse().unwrap());
    let keys = args.get(2).map_or(10_000, |n| n.parse().unwrap());
    match args.first().map(String::as_str) {
        Some("floodwall") => println!("{:.1} ns", floodwall(decisions, keys)),
        Some("governor") => println!("{:.1} ns", governor(decisions, keys)),
        _ => {
            let (ours, theirs) = (floodwall(1_000_000, keys), governor(1_000_000, keys));
            println!(
                "floodwall {ours:.1} ns, governor {theirs:.1} ns: {:.2}×",
                ours / theirs
            );
        }
    }
}
