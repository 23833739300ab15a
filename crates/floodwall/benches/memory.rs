//! `MemoryStore` decision cost per algorithm, beside governor's keyed limiter on the same key
//! pattern, in one run: 1 key and 10 000 random keys, 1 thread and 2 threads sharing one store.
//!
//! Nothing is denied (a quota no request reaches), as in the anchors' `keyed-allow` case. Two-
//! thread cases report the time per decision of the *combined* throughput, so a figure below the
//! one-thread figure means the second thread added throughput.
//!
//! `cargo bench -p floodwall --bench memory`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use floodwall::{Algorithm, Check, MemoryStore};
use governor::RateLimiter;

#[path = "memory_support/mod.rs"]
mod memory_support;
use memory_support::{SEQUENCE, governor_never_reached, key_sequence, never_reached};

const KEYS: u64 = 10_000;
/// Runs `check` over the key sequence on `threads` threads, `iters` decisions in all.
fn run_threads(
    threads: usize,
    iters: u64,
    keys: u64,
    check: impl Fn(u64) -> bool + Sync,
) -> Duration {
    let barrier = Barrier::new(threads + 1);
    let per_thread = iters / threads as u64 + 1;
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (barrier, check) = (&barrier, &check);
            scope.spawn(move || {
                let sequence = key_sequence(t, keys);
                barrier.wait();
                for i in 0..per_thread as usize {
                    black_box(check(black_box(sequence[i & (SEQUENCE - 1)])));
                }
                barrier.wait();
            });
        }
        barrier.wait();
        #[allow(clippy::disallowed_methods)] // a benchmark measures wall time
        let start = Instant::now();
        barrier.wait();
        start.elapsed()
    })
}

fn bench(c: &mut Criterion) {
    for threads in [1usize, 2] {
        for (pattern, keys) in [("1-key", 1u64), ("10k-random", KEYS)] {
            let mut group = c.benchmark_group(format!("check/{threads}-thread/{pattern}"));
            group.throughput(Throughput::Elements(1));
            for algorithm in Algorithm::ALL {
                let store = MemoryStore::builder().max_keys(100_000).build();
                let policy = [never_reached(algorithm)];
                for k in 0..keys {
                    let key = k.to_le_bytes();
                    store.decide_sync(&Check::new(&policy, &key, 1).unwrap());
                }
                group.bench_function(BenchmarkId::new("floodwall", algorithm), |b| {
                    b.iter_custom(|iters| {
                        run_threads(threads, iters, keys, |k| {
                            let key = k.to_le_bytes();
                            let check = Check::new(&policy, &key, 1).unwrap();
                            store.decide_sync(&check).allowed
                        })
                    });
                });
            }
            let quota = governor_never_reached();
            let governor: Arc<governor::DefaultKeyedRateLimiter<u64>> =
                Arc::new(RateLimiter::keyed(quota));
            for k in 0..keys {
                let _ = governor.check_key(&k);
            }
            group.bench_function(BenchmarkId::new("governor", "keyed-gcra"), |b| {
                b.iter_custom(|iters| {
                    run_threads(threads, iters, keys, |k| governor.check_key(&k).is_ok())
                });
            });
            group.finish();
        }
    }
}

/// How the cost of a check grows with the keys tracked: gcra and governor on 1 thread, at
/// 10 000, 1 000 000 and 10 000 000 random keys (`scale/…`; `SCALE_KEYS` picks other counts,
/// comma-separated).
fn scale(c: &mut Criterion) {
    let counts: Vec<u64> = std::env::var("SCALE_KEYS")
        .ok()
        .map(|text| {
            text.split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect()
        })
        .unwrap_or_else(|| vec![10_000, 1_000_000, 10_000_000]);
    for keys in counts {
        let mut group = c.benchmark_group(format!("scale/{keys}-keys"));
        group.throughput(Throughput::Elements(1));
        let store = MemoryStore::builder()
            .max_keys(usize::try_from(keys).unwrap() * 2)
            .build();
        let policy = [never_reached(Algorithm::Gcra)];
        for k in 0..keys {
            let key = k.to_le_bytes();
            store.decide_sync(&Check::new(&policy, &key, 1).unwrap());
        }
        group.bench_function(BenchmarkId::new("floodwall", "gcra"), |b| {
            b.iter_custom(|iters| {
                run_threads(1, iters, keys, |k| {
                    let key = k.to_le_bytes();
                    store
                        .decide_sync(&Check::new(&policy, &key, 1).unwrap())
                        .allowed
                })
            });
        });
        drop(store);
        let quota = governor_never_reached();
        let governor: governor::DefaultKeyedRateLimiter<u64> = RateLimiter::keyed(quota);
        for k in 0..keys {
            let _ = governor.check_key(&k);
        }
        group.bench_function(BenchmarkId::new("governor", "keyed-gcra"), |b| {
            b.iter_custom(|iters| run_threads(1, iters, keys, |k| governor.check_key(&k).is_ok()));
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench, scale
}
criterion_main!(benches);
