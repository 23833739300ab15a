//! What the Redis benches share: reading figures from `INFO`, and the policy memory is
//! measured under.

// Each bench includes this module and uses part of it.
#![allow(dead_code)]

use std::time::Duration;

use floodwall::{Algorithm, Policy};

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
