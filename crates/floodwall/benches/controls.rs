//! What a deny list costs each check, by its size: 0, 1 000 and 10 000 networks (a third each
//! /24, /28 and /32, none holding the client). `screen_client` is the screen a route runs on
//! every request's address; `check` is a whole memory-store decision of a key that is an
//! address, screened against the list first. The 10 000 case should cost what the 0 case does.
//!
//! `cargo bench -p floodwall --bench controls`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::IpAddr;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use floodwall::controls::ListEntry;
use floodwall::{Algorithm, Limiter, List, MemoryStore, Policy};

/// `count` distinct networks in 10.0.0.0/8, as `bench/deny_list.sh` lists them.
fn networks(count: usize) -> Vec<(List, ListEntry)> {
    (0..count)
        .map(|i| {
            let (high, low) = (i / 256, i % 256);
            let text = match i % 3 {
                0 => format!("10.{}.{low}.0/24", 1 + high),
                1 => format!("10.{}.{low}.7", 100 + high),
                _ => format!("10.{}.{low}.16/28", 150 + high),
            };
            (List::Deny, ListEntry::parse(&text).unwrap())
        })
        .collect()
}

fn deny_list(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let policy = Policy::new(
        "bench",
        Algorithm::Gcra,
        1_000_000_000,
        Duration::from_secs(1),
    )
    .unwrap();
    let client: IpAddr = "203.0.113.7".parse().unwrap();
    let mut screen = c.benchmark_group("deny_list/screen_client");
    for count in [0, 1_000, 10_000] {
        let limiter = Limiter::new(MemoryStore::new());
        limiter.configure_lists(networks(count));
        screen.bench_with_input(BenchmarkId::from_parameter(count), &count, |b, _| {
            b.iter(|| black_box(limiter.screen_client(black_box(client))));
        });
    }
    screen.finish();
    let mut check = c.benchmark_group("deny_list/check");
    for count in [0, 1_000, 10_000] {
        let limiter = Limiter::new(MemoryStore::new());
        limiter.configure_lists(networks(count));
        check.bench_with_input(BenchmarkId::from_parameter(count), &count, |b, _| {
            b.iter(|| {
                let verdict = runtime.block_on(limiter.check(&policy, "203.0.113.7", 1));
                black_box(verdict.unwrap().allowed())
            });
        });
    }
    check.finish();
}

criterion_group!(benches, deny_list);
criterion_main!(benches);
