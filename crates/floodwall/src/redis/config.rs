//! Where the Redis store connects, and how it behaves.

use std::time::Duration;

use floodwall_core::Clock;
use floodwall_core::key::validate_prefix;
use std::sync::Arc;

use crate::error::StoreError;

/// The default per-call deadline.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);

/// The default number of consecutive failures that open a circuit breaker.
pub const DEFAULT_BREAKER_THRESHOLD: u32 = 3;

/// The default time between probes of an open breaker.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "floodwall";

/// How to reach Redis and how to use it.
///
/// URL forms: `redis://[user:password@]host:port[/db]` (one node), `redis+unix:///path/to.sock`,
/// and `redis+cluster://[user:password@]host1:port1,host2:port2,…` (a cluster: any reachable
/// node lets the client discover the rest). With the `tls` feature, `rediss://…` and
/// `rediss+cluster://…` connect over TLS, verifying the server against the system's roots or
/// [`RedisConfig::tls_root_certificate`].
#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub(crate) url: String,
    pub(crate) prefix: String,
    pub(crate) timeout: Duration,
    pub(crate) clock: Option<Arc<dyn Clock>>,
    pub(crate) breaker_threshold: u32,
    pub(crate) probe_interval: Duration,
    pub(crate) deny_cache: usize,
    #[cfg(feature = "tls")]
    pub(crate) tls: TlsFiles,
}

impl PartialEq for RedisConfig {
    /// Equal settings; an injected clock is equal only to itself.
    fn eq(&self, other: &Self) -> bool {
        let same_clock = match (&self.clock, &other.clock) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        #[cfg(feature = "tls")]
        let same_tls = self.tls == other.tls;
        #[cfg(not(feature = "tls"))]
        let same_tls = true;
        same_clock
            && same_tls
            && self.url == other.url
            && self.prefix == other.prefix
            && self.timeout == other.timeout
            && self.breaker_threshold == other.breaker_threshold
            && self.probe_interval == other.probe_interval
            && self.deny_cache == other.deny_cache
    }
}

/// PEM certificates for TLS connections (feature `tls`).
#[cfg(feature = "tls")]
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct TlsFiles {
    pub(crate) root: Option<Vec<u8>>,
    pub(crate) client: Option<(Vec<u8>, Vec<u8>)>,
}

#[cfg(feature = "tls")]
impl TlsFiles {
    /// The certificates as redis-rs takes them, or `None` to use the system's roots.
    pub(crate) fn certificates(&self) -> Option<::redis::TlsCertificates> {
        if self.root.is_none() && self.client.is_none() {
            return None;
        }
        Some(::redis::TlsCertificates {
            client_tls: self.client.clone().map(|(client_cert, client_key)| {
                ::redis::ClientTlsConfig {
                    client_cert,
                    client_key,
                }
            }),
            root_cert: self.root.clone(),
        })
    }
}

#[cfg(feature = "tls")]
impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key material itself.
        f.debug_struct("TlsFiles")
            .field("root", &self.root.is_some())
            .field("client", &self.client.is_some())
            .finish()
    }
}

impl RedisConfig {
    /// A configuration for `url` with the default prefix (`floodwall`) and deadline (50 ms).
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            prefix: DEFAULT_PREFIX.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            clock: None,
            breaker_threshold: DEFAULT_BREAKER_THRESHOLD,
            probe_interval: DEFAULT_PROBE_INTERVAL,
            deny_cache: super::deny_cache::DEFAULT_CAPACITY,
            #[cfg(feature = "tls")]
            tls: TlsFiles::default(),
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

    /// The deadline of one decision, as [`RedisConfig::timeout`] set it.
    pub fn deadline(&self) -> Duration {
        self.timeout
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

    /// Trusts the certificate authorities in `pem` (instead of the system's roots) for
    /// `rediss://` and `rediss+cluster://` connections.
    #[cfg(feature = "tls")]
    #[must_use]
    pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls.root = Some(pem.into());
        self
    }

    /// Presents this client certificate and private key (PEM) to servers that require one
    /// (`tls-auth-clients yes`).
    #[cfg(feature = "tls")]
    #[must_use]
    pub fn tls_client_identity(
        mut self,
        certificate_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.tls.client = Some((certificate_pem.into(), key_pem.into()));
        self
    }

    /// Checks what [`RedisStore::connect`](super::RedisStore::connect) refuses before it
    /// connects: the URL's form and the key prefix.
    ///
    /// # Errors
    ///
    /// [`StoreError::Config`] naming what is wrong and the accepted forms.
    pub fn validate(&self) -> Result<(), StoreError> {
        validate_prefix(&self.prefix).map_err(|e| StoreError::Config {
            detail: e.to_string(),
        })?;
        parse_url(&self.url).map(|_| ())
    }

    /// The URL.
    pub fn url(&self) -> &str {
        &self.url
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

#[cfg(any(feature = "tls", test))]
impl Target {
    /// Whether the connection is TLS.
    pub(crate) fn is_tls(&self) -> bool {
        match self {
            Target::Node(url) => url.starts_with("rediss://"),
            Target::Cluster(nodes) => nodes.iter().any(|url| url.starts_with("rediss://")),
        }
    }
}

/// Parses the URL forms of [`RedisConfig`].
pub(crate) fn parse_url(url: &str) -> Result<Target, StoreError> {
    let invalid = |why: &str| StoreError::Config {
        detail: format!(
            "invalid redis URL {url:?}: {why}; expected redis://host:port[/db], redis+unix:///path, \
             or redis+cluster://host1:port1,host2:port2 (rediss:// and rediss+cluster:// for TLS)"
        ),
    };
    let tls = url.starts_with("rediss://") || url.starts_with("rediss+cluster://");
    if tls && !cfg!(feature = "tls") {
        return Err(invalid(
            "TLS needs floodwall built with the `tls` feature (features = [\"tls\"] in Cargo.toml)",
        ));
    }
    let cluster = url
        .strip_prefix("redis+cluster://")
        .map(|rest| ("redis", rest))
        .or_else(|| {
            url.strip_prefix("rediss+cluster://")
                .map(|rest| ("rediss", rest))
        });
    if let Some((scheme, rest)) = cluster {
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
                Some(auth) => format!("{scheme}://{auth}@{host}"),
                None => format!("{scheme}://{host}"),
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
    if url.starts_with("redis://")
        || url.starts_with("rediss://")
        || url.starts_with("redis+unix://")
        || url.starts_with("unix://")
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
        for bad in ["http://x", "redis+cluster://", "redis+cluster://a"] {
            let error = parse_url(bad).unwrap_err().to_string();
            assert!(error.contains("redis+cluster://host1"), "{error}");
        }
    }

    #[test]
    fn tls_urls_need_the_tls_feature() {
        for url in ["rediss://x:1", "rediss+cluster://a:1,b:2"] {
            let parsed = parse_url(url);
            if cfg!(feature = "tls") {
                assert!(parsed.unwrap().is_tls(), "{url}");
            } else {
                let error = parsed.unwrap_err().to_string();
                assert!(error.contains("`tls` feature"), "{error}");
            }
        }
        assert!(!parse_url("redis://x:1").unwrap().is_tls());
    }
}
