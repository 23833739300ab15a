//! Where the Redis store connects, and how it behaves.

use std::fmt;
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
/// node lets the client discover the rest), and
/// `redis+sentinel://[user:password@]s1:26379,s2:26379/MASTER_NAME[/db]` (a master the sentinels
/// name: asked of them at start and again after an error that suggests a failover; the URL's
/// credentials are the master's, and the sentinels' too unless `FLOODWALL_SENTINEL_USERNAME` /
/// `FLOODWALL_SENTINEL_PASSWORD` name theirs, an empty password meaning none). With the `tls`
/// feature, `rediss://…`, `rediss+cluster://…` and `rediss+sentinel://…` connect over TLS,
/// verifying the server against the system's roots or [`RedisConfig::tls_root_certificate`].
#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub(crate) url: String,
    pub(crate) prefix: String,
    pub(crate) timeout: Duration,
    pub(crate) clock: Option<Arc<dyn Clock>>,
    pub(crate) breaker_threshold: u32,
    pub(crate) probe_interval: Duration,
    pub(crate) deny_cache: usize,
    pub(crate) wait_replicas: u32,
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
            && self.wait_replicas == other.wait_replicas
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
            wait_replicas: 0,
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

    /// Waits, after each call that may take units, until `replicas` replicas have confirmed its
    /// write (Redis `WAIT`, in the same round trip, within the call's deadline); a call they do
    /// not confirm in time fails with [`StoreError::NotReplicated`] and is answered per
    /// `on_error`, its units still counted on the master. Replication is asynchronous: without
    /// this, a master that fails over after answering can lose units it admitted, and the new
    /// master admits them again. With it, an admission the store answered survives the loss of
    /// the master as long as a confirming replica is promoted (Sentinel and Cluster promote the
    /// most up-to-date one). Default 0: no waiting. Costs a round trip from the master to its
    /// replicas per call (per batch of coalesced decisions).
    #[must_use]
    pub fn wait_replicas(mut self, replicas: u32) -> Self {
        self.wait_replicas = replicas;
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

    /// The URL with its password replaced by `***`, to log or show.
    pub fn redacted_url(&self) -> String {
        redacted(&self.url)
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

/// A parsed URL: one node, the nodes of a cluster (as redis-rs connection URLs), or the
/// sentinels that name a master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Node(String),
    Cluster(Vec<String>),
    Sentinel(SentinelTarget),
}

/// A `redis+sentinel://` URL, parsed.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SentinelTarget {
    /// `host:port` of each sentinel, in the URL's order (26379 where no port is given).
    pub(crate) sentinels: Vec<(String, u16)>,
    /// The name the sentinels monitor the master under.
    pub(crate) master_name: String,
    pub(crate) db: i64,
    /// TLS to the master and to the sentinels (`rediss+sentinel://`).
    pub(crate) tls: bool,
    /// The URL's credentials, for the master (and the sentinels unless the environment names
    /// theirs).
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
}

impl fmt::Debug for SentinelTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the password.
        f.debug_struct("SentinelTarget")
            .field("sentinels", &self.sentinels)
            .field("master_name", &self.master_name)
            .field("db", &self.db)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// The port sentinels listen on unless the URL names another.
const DEFAULT_SENTINEL_PORT: u16 = 26379;

#[cfg(any(feature = "tls", test))]
impl Target {
    /// Whether the connection is TLS.
    pub(crate) fn is_tls(&self) -> bool {
        match self {
            Target::Node(url) => url.starts_with("rediss://"),
            Target::Cluster(nodes) => nodes.iter().any(|url| url.starts_with("rediss://")),
            Target::Sentinel(sentinel) => sentinel.tls,
        }
    }
}

/// Parses the URL forms of [`RedisConfig`].
pub(crate) fn parse_url(url: &str) -> Result<Target, StoreError> {
    let invalid = |why: &str| StoreError::Config {
        detail: format!(
            "invalid redis URL {:?}: {why}; expected redis://host:port[/db], redis+unix:///path, \
             redis+cluster://host1:port1,host2:port2, or \
             redis+sentinel://sentinel1:26379,sentinel2:26379/MASTER_NAME[/db] \
             (rediss:// and rediss+… for TLS)",
            redacted(url)
        ),
    };
    let tls = url.starts_with("rediss://")
        || url.starts_with("rediss+cluster://")
        || url.starts_with("rediss+sentinel://");
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
    let sentinel = url
        .strip_prefix("redis+sentinel://")
        .map(|rest| (false, rest))
        .or_else(|| {
            url.strip_prefix("rediss+sentinel://")
                .map(|rest| (true, rest))
        });
    if let Some((tls, rest)) = sentinel {
        return parse_sentinel(tls, rest)
            .map(Target::Sentinel)
            .map_err(|why| invalid(&why));
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

/// The part of a `redis+sentinel://` URL after the scheme:
/// `[user:password@]host[:port],…/MASTER_NAME[/db]`.
fn parse_sentinel(tls: bool, rest: &str) -> Result<SentinelTarget, String> {
    let (auth, rest) = match rest.rsplit_once('@') {
        Some((auth, rest)) => (Some(auth), rest),
        None => (None, rest),
    };
    let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut sentinels = Vec::new();
    for host in hosts.split(',').map(str::trim).filter(|h| !h.is_empty()) {
        let (name, port) = match host.rsplit_once(':') {
            Some((name, port)) => {
                let port = port
                    .parse::<u16>()
                    .ok()
                    .filter(|&p| p != 0)
                    .ok_or_else(|| format!("sentinel {host:?} has no valid port"))?;
                (name, port)
            }
            None => (host, DEFAULT_SENTINEL_PORT),
        };
        if name.is_empty() {
            return Err(format!("sentinel {host:?} has no host"));
        }
        sentinels.push((name.to_owned(), port));
    }
    if sentinels.is_empty() {
        return Err("no sentinel given".to_owned());
    }
    let mut segments = path.trim_end_matches('/').split('/');
    let master_name = segments.next().unwrap_or_default();
    if master_name.is_empty() {
        return Err("no master name given (the path's first segment)".to_owned());
    }
    let db = match segments.next() {
        None => 0,
        Some(db) => db
            .parse::<i64>()
            .ok()
            .filter(|&db| db >= 0)
            .ok_or_else(|| format!("the database {db:?} is not a number"))?,
    };
    if segments.next().is_some() {
        return Err("the path has more than a master name and a database".to_owned());
    }
    let (username, password) = match auth {
        None => (None, None),
        Some(auth) => credentials(auth)?,
    };
    Ok(SentinelTarget {
        sentinels,
        master_name: master_name.to_owned(),
        db,
        tls,
        username,
        password,
    })
}

/// The user and password of a URL's userinfo, percent-decoded as redis-rs decodes its own URLs.
fn credentials(auth: &str) -> Result<(Option<String>, Option<String>), String> {
    use ::redis::IntoConnectionInfo;
    let info = format!("redis://{auth}@localhost/")
        .into_connection_info()
        .map_err(|_| {
            "the credentials are not valid URL userinfo (percent-encode them)".to_owned()
        })?;
    let settings = info.redis_settings();
    Ok((
        settings.username().map(str::to_owned),
        settings.password().map(str::to_owned),
    ))
}

/// `url` with the password of its user information (`scheme://user:password@host…`) replaced
/// by `***`, for messages and logs.
pub(crate) fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***{}", &rest[at..]),
        None => url.to_owned(),
    }
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
    fn parses_sentinel_urls() {
        let Target::Sentinel(parsed) =
            parse_url("redis+sentinel://u:p%40ss@s1:26380, s2/mymaster/3").unwrap()
        else {
            panic!("not a sentinel target");
        };
        assert_eq!(
            parsed.sentinels,
            vec![("s1".to_owned(), 26380), ("s2".to_owned(), 26379)]
        );
        assert_eq!(parsed.master_name, "mymaster");
        assert_eq!(parsed.db, 3);
        assert!(!parsed.tls);
        assert_eq!(parsed.username.as_deref(), Some("u"));
        assert_eq!(parsed.password.as_deref(), Some("p@ss"));
        assert!(!format!("{parsed:?}").contains("p@ss"));
        let Target::Sentinel(plain) = parse_url("redis+sentinel://s1:1/m").unwrap() else {
            panic!("not a sentinel target");
        };
        assert_eq!((plain.db, plain.username, plain.password), (0, None, None));
        for (bad, why) in [
            ("redis+sentinel:///m", "no sentinel"),
            ("redis+sentinel://s1:26379", "no master name"),
            ("redis+sentinel://s1:26379/", "no master name"),
            ("redis+sentinel://s1:x/m", "no valid port"),
            ("redis+sentinel://s1:0/m", "no valid port"),
            ("redis+sentinel://:1/m", "no host"),
            ("redis+sentinel://s1/m/zero", "not a number"),
            ("redis+sentinel://s1/m/-1", "not a number"),
            ("redis+sentinel://s1/m/0/x", "more than"),
        ] {
            let error = parse_url(bad).unwrap_err().to_string();
            assert!(error.contains(why), "{bad}: {error}");
            assert!(error.contains("redis+sentinel://sentinel1"), "{error}");
        }
    }

    #[test]
    fn messages_never_show_a_password() {
        let error = parse_url("redis+sentinel://u:secret@s1:x/m")
            .unwrap_err()
            .to_string();
        assert!(!error.contains("secret"), "{error}");
        assert!(error.contains("u:***@"), "{error}");
        for (url, shown) in [
            ("memory://", "memory://"),
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            ("redis://:s3cret@h:6379", "redis://:***@h:6379"),
            (
                "rediss://app:p@ss:w@rd@h:6380/1",
                "rediss://app:***@h:6380/1",
            ),
            (
                "redis+cluster://u:pw@a:1,b:2",
                "redis+cluster://u:***@a:1,b:2",
            ),
            (
                "redis+sentinel://u:pw@a:1,b:2/m/0",
                "redis+sentinel://u:***@a:1,b:2/m/0",
            ),
            ("redis://user@h:6379", "redis://user@h:6379"),
        ] {
            assert_eq!(redacted(url), shown, "{url}");
        }
    }

    #[test]
    fn tls_urls_need_the_tls_feature() {
        for url in [
            "rediss://x:1",
            "rediss+cluster://a:1,b:2",
            "rediss+sentinel://a:1/m",
        ] {
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
