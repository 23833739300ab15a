//! Where the Redis store connects, and how it behaves.

use std::time::Duration;

use floodgate_core::Clock;
use std::sync::Arc;

use crate::error::StoreError;

/// The default per-call deadline.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);

/// The default number of consecutive failures that open a circuit breaker.
pub const DEFAULT_BREAKER_THRESHOLD: u32 = 3;

/// The default time between probes of an open breaker.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "floodgate";

/// How to reach Redis and how to use it.
///
/// URL forms: `redis://[user:password@]host:port[/db]` (one node), `redis+unix:///path/to.sock`,
/// and `redis+cluster://[user:password@]host1:port1,host2:port2,…` (a cluster: any reachable
/// node lets the client discover the rest).
#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub(crate) url: String,
    pub(crate) prefix: String,
    pub(crate) timeout: Duration,
    pub(crate) clock: Option<Arc<dyn Clock>>,
    pub(crate) breaker_threshold: u32,
    pub(crate) probe_interval: Duration,
    pub(crate) deny_cache: usize,
}

impl RedisConfig {
    /// A configuration for `url` with the default prefix (`floodgate`) and deadline (50 ms).
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            prefix: DEFAULT_PREFIX.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            clock: None,
            breaker_threshold: DEFAULT_BREAKER_THRESHOLD,
            probe_interval: DEFAULT_PROBE_INTERVAL,
            deny_cache: super::deny_cache::DEFAULT_CAPACITY,
        }
    }

    /// The prefix of every key the store writes.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The deadline of one decision, including a script reload and redirections. A call that
    /// misses it fails with [`StoreError::Timeout`] and is never retried.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The circuit breaker: after `threshold` consecutive failed calls (timeouts, connection
    /// errors) to one node's slots, calls there fail at once with
    /// [`StoreError::CircuitOpen`] and one probe call goes through every `probe_interval`
    /// (defaults: 3, 250 ms).
    #[must_use]
    pub fn breaker(mut self, threshold: u32, probe_interval: Duration) -> Self {
        self.breaker_threshold = threshold.max(1);
        self.probe_interval = probe_interval;
        self
    }

    /// How many denied client keys this instance remembers, to answer their repeats without a
    /// round trip until Redis's `retry_after` passes (default 10 000; 0 switches it off). See the
    /// exactness argument on the store.
    #[must_use]
    pub fn deny_cache(mut self, capacity: usize) -> Self {
        self.deny_cache = capacity;
        self
    }

    /// **Tests only**: decide at this clock's time instead of Redis's `TIME`. Production stores
    /// leave it unset so that Redis is the clock of record and instances with skewed clocks
    /// still agree. With it set, keys expire no sooner than an hour, because the injected clock
    /// may run slower than Redis's.
    #[must_use]
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }
}

/// A parsed URL: one node or the nodes of a cluster, as redis-rs connection URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Node(String),
    Cluster(Vec<String>),
}

/// Parses the URL forms of [`RedisConfig`].
pub(crate) fn parse_url(url: &str) -> Result<Target, StoreError> {
    let invalid = |why: &str| StoreError::Config {
        detail: format!(
            "invalid redis URL {url:?}: {why}; expected redis://host:port[/db], redis+unix:///path, \
             or redis+cluster://host1:port1,host2:port2"
        ),
    };
    if let Some(rest) = url.strip_prefix("redis+cluster://") {
        let (auth, hosts) = match rest.rsplit_once('@') {
            Some((auth, hosts)) => (Some(auth), hosts),
            None => (None, rest),
        };
        let hosts = hosts.trim_end_matches('/');
        let nodes: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|host| match auth {
                Some(auth) => format!("redis://{auth}@{host}"),
                None => format!("redis://{host}"),
            })
            .collect();
        if nodes.is_empty() {
            return Err(invalid("no cluster node given"));
        }
        if hosts.split(',').any(|h| !h.trim().contains(':')) {
            return Err(invalid("every cluster node needs host:port"));
        }
        return Ok(Target::Cluster(nodes));
    }
    if url.starts_with("rediss://") {
        return Err(invalid(
            "TLS (rediss://) is not supported by this build yet; use redis:// behind a TLS tunnel",
        ));
    }
    if url.starts_with("redis://") || url.starts_with("redis+unix://") || url.starts_with("unix://")
    {
        return Ok(Target::Node(url.to_owned()));
    }
    Err(invalid("unknown scheme"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_url_form() {
        assert_eq!(
            parse_url("redis://127.0.0.1:6380/2").unwrap(),
            Target::Node("redis://127.0.0.1:6380/2".into())
        );
        assert_eq!(
            parse_url("redis+cluster://a:1, b:2").unwrap(),
            Target::Cluster(vec!["redis://a:1".into(), "redis://b:2".into()])
        );
        assert_eq!(
            parse_url("redis+cluster://u:p@a:1,b:2").unwrap(),
            Target::Cluster(vec!["redis://u:p@a:1".into(), "redis://u:p@b:2".into()])
        );
        for bad in [
            "http://x",
            "redis+cluster://",
            "redis+cluster://a",
            "rediss://x:1",
        ] {
            let error = parse_url(bad).unwrap_err().to_string();
            assert!(error.contains("redis+cluster://host1"), "{error}");
        }
    }
}
