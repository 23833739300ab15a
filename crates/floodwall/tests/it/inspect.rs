//! Helpers that read what a test left in Redis.

use floodwall_testkit::RedisServer;

/// Parses `INFO keyspace` of db0 into (keys, expires).
pub(crate) fn keys_and_expires(server: &RedisServer) -> (u64, u64) {
    let info = server.cli(&["INFO", "keyspace"]).unwrap();
    let Some(line) = info.lines().find(|l| l.starts_with("db0:")) else {
        return (0, 0);
    };
    let field = |name: &str| {
        line.trim_start_matches("db0:")
            .split(',')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("keys"), field("expires"))
}

/// Every key the limiter wrote carries an expiry (docs/testing.md: C16).
pub(crate) fn assert_every_key_expires(server: &RedisServer) {
    let (keys, expires) = keys_and_expires(server);
    assert_eq!(
        keys, expires,
        "{keys} keys but only {expires} with an expiry"
    );
}

/// One integer field of `INFO <section>`, e.g. `info_u64(server, "memory", "number_of_cached_scripts")`.
pub(crate) fn info_u64(server: &RedisServer, section: &str, field: &str) -> u64 {
    let info = server.cli(&["INFO", section]).unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in INFO {section}"))
}

/// Script calls Redis has run so far (`EVALSHA` and `EVAL`).
pub(crate) fn script_calls(server: &RedisServer) -> u64 {
    let stats = server.cli(&["INFO", "commandstats"]).unwrap();
    stats
        .lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}
