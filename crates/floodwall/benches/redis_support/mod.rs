//! What the Redis benches share: the timed load of many callers, reading figures from `INFO`,
//! and the policy memory is measured under.

// Each bench includes this module and uses part of it.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use floodwall::{Algorithm, Policy};
use tokio::time::Instant;

/// `callers` tasks, each making decisions with `decide(caller, n)` (its `n`th) until `seconds`
/// pass: every decision's latency, sorted, and the seconds the load took.
pub(crate) async fn timed_callers<F, D>(
    callers: u64,
    seconds: f64,
    decide: F,
) -> (Vec<Duration>, f64)
where
    F: Fn(u64, u64) -> D + Send + Sync + 'static,
    D: Future<Output = ()> + Send,
{
    let decide = Arc::new(decide);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|caller| {
            let (decide, stop) = (Arc::clone(&decide), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    decide(caller, n).await;
                    latencies.push(t.elapsed());
                    n += 1;
                }
                latencies
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    (latencies, elapsed)
}

/// A spread of `n` over `0..keys` for `caller`'s `n`th decision (splitmix64 of both): keys at
/// random, the same in every run.
pub(crate) fn random_key(caller: u64, n: u64, keys: u64) -> u64 {
    let mut x = (caller << 40 ^ n).wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (x ^ (x >> 31)) % keys
}

/// A number from `INFO <section>`: the value of `field:<number>`, or with `sub` the
/// `sub=<number>` inside `field:a=…,b=…` (as in commandstats).
pub(crate) async fn info_number(
    connection: &mut redis::aio::MultiplexedConnection,
    section: &str,
    field: &str,
    sub: Option<&str>,
) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query_async(connection)
        .await
        .unwrap();
    info.lines()
        .find_map(|line| {
            let rest = line.strip_prefix(field)?.strip_prefix(':')?;
            let value = match sub {
                Some(sub) => rest
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(sub)?.strip_prefix('='))?,
                None => rest,
            };
            value.trim().parse().ok()
        })
        .unwrap_or(f64::NAN)
}

/// Script calls Redis ran since its last `CONFIG RESETSTAT` (`EVALSHA` and `EVAL`), and the
/// microseconds of Redis CPU they took.
pub(crate) async fn script_cost(connection: &mut redis::aio::MultiplexedConnection) -> (f64, f64) {
    let mut calls = 0.0;
    let mut usec = 0.0;
    for command in ["cmdstat_evalsha", "cmdstat_eval"] {
        let n = info_number(connection, "commandstats", command, Some("calls")).await;
        if n.is_finite() {
            calls += n;
            usec += info_number(connection, "commandstats", command, Some("usec")).await;
        }
    }
    (calls, usec)
}

/// The policy bytes per client are measured under: 100 per 360 days, so that a client's state
/// outlives the whole bench after one request (an hour-long GCRA of 1000 is back at rest, and
/// its key gone, 3.6 s after one), and the limit divides the period, as most do.
pub(crate) fn memory_policy(algorithm: Algorithm) -> Policy {
    Policy::new("ip", algorithm, 100, Duration::from_secs(360 * 86_400)).unwrap()
}
