//! The service's configuration: parsed from TOML once, validated into floodwall's own types, with
//! every error naming the file, line, column and a fix.

mod erl;
mod error;
mod listeners;
mod log;
mod raw;
mod rlqs;
mod rls;
mod routes;
mod schema;
mod telemetry;
mod validate;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use floodwall::controls::ListEntry;
use floodwall::{List, OnError, Policy};
use floodwall_http::HeaderMode;
use http::{Method, StatusCode, Uri};
use ipnet::IpNet;

pub use self::erl::{ErlDomain, ErlLimit, ErlNode};
pub use self::error::{ConfigError, ConfigErrors};
pub use self::log::{DEFAULT_DECISIONS_PER_SECOND, DecisionLogMode, LogConfig, LogFormat};
pub use self::rlqs::{DEFAULT_ASSIGNMENT_TTL, RlqsBucket, RlqsConfig};
pub use self::rls::{DEFAULT_MAX_OVERRIDES, EntryMatch, RlsConfig, RlsRule};
pub use self::telemetry::{DEFAULT_METRICS_INTERVAL, DEFAULT_SAMPLING_RATIO, TelemetryConfig};

/// The default main listener.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it was read from (`<embedded default>` for the built-in one).
    pub file: std::path::PathBuf,
    /// The main listener and how clients are identified.
    pub server: ServerConfig,
    /// The admin listener, if any.
    pub admin: Option<AdminConfig>,
    /// The allow and deny lists of the configuration file.
    pub access: Vec<(List, ListEntry)>,
    /// The JSON check API: whether, where and behind which token it is served.
    pub check: CheckConfig,
    /// The log's format and the decision log.
    pub log: LogConfig,
    /// OpenTelemetry export, if on. Fixed at start.
    pub telemetry: Option<TelemetryConfig>,
    /// Envoy's RateLimitService, if served.
    pub rls: Option<RlsConfig>,
    /// Envoy's RateLimitQuotaService, if served.
    pub rlqs: Option<RlqsConfig>,
    /// Where limits are kept.
    pub storage: StorageSection,
    /// The policies, by unique name, in file order.
    pub policies: Vec<Policy>,
    /// The routes, matched in file order.
    pub routes: Vec<RouteConfig>,
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where routes, `/v1/check`, `/healthz` and `/readyz` are served.
    pub listen: SocketAddr,
    /// Peers allowed to set `X-Forwarded-For`.
    pub trusted_proxies: Vec<IpNet>,
    /// IPv6 clients are keyed by this prefix.
    pub ipv6_prefix: u8,
    /// Which rate-limit headers responses carry.
    pub headers: HeaderMode,
    /// The most connections each listener (main and admin) keeps open; past it, the one that
    /// has waited longest without a request in flight is closed, and new ones wait.
    pub max_connections: usize,
    /// A request's headers must arrive within this of its first byte (or of the connection's
    /// start), or the connection is closed.
    pub header_timeout: Duration,
    /// A keep-alive connection with no request in flight is closed after this.
    pub idle_timeout: Duration,
    /// A request body that stops arriving for this long ends the request (408).
    pub body_timeout: Duration,
    /// The most bytes a request's line and headers may take (431 past it).
    pub max_header_bytes: usize,
}

/// The default `max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// The default `header_timeout`.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The default `idle_timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The default `body_timeout`.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// The default `max_header_bytes`: nginx's default of four 8 KiB buffers.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;

/// `[admin]`.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Where `/metrics` and the admin API are served.
    pub listen: SocketAddr,
    /// The bearer token the admin API requires, read from the configured environment variable.
    pub token: Option<String>,
    /// Named tokens (`[admin] tokens`), each accepted too; an action is logged with the name of
    /// the token that made it (`admin` for `token_env`'s).
    pub tokens: Vec<(String, String)>,
}

impl AdminConfig {
    /// Whether any token guards the admin API.
    pub fn guarded(&self) -> bool {
        self.token.is_some() || !self.tokens.is_empty()
    }
}

/// `[check]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckConfig {
    /// Whether `POST /v1/check` is served at all.
    pub enabled: bool,
    /// Its own listener; `None` serves it on `[server] listen`.
    pub listen: Option<SocketAddr>,
    /// The bearer token calls need, read from the configured environment variable.
    pub token: Option<String>,
    /// The most policies one check may name.
    pub max_policies: usize,
    /// How long a reservation (`"reserve": true`) waits for its settle before it is settled
    /// at its estimate.
    pub reservation_ttl: std::time::Duration,
}

/// The default `max_policies`.
pub const DEFAULT_MAX_POLICIES: usize = 16;

/// The default `reservation_ttl`: long enough for a slow streamed answer.
pub const DEFAULT_RESERVATION_TTL: std::time::Duration = std::time::Duration::from_secs(15 * 60);

impl Default for CheckConfig {
    fn default() -> Self {
        CheckConfig {
            enabled: true,
            listen: None,
            token: None,
            max_policies: DEFAULT_MAX_POLICIES,
            reservation_ttl: DEFAULT_RESERVATION_TTL,
        }
    }
}

/// `[storage]`: the store the limiter decides on, and what it answers when that store fails.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageSection {
    /// The store: the memory store with its bound, or Redis with its URL, prefix and deadline.
    pub store: floodwall::StorageConfig,
    /// What checks answer when the store fails (policies may override).
    pub on_error: OnError,
}

/// How a route keys its requests: one or more parts, joined into a composite key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    /// The client IP (per `[server]` trusted proxies and IPv6 prefix).
    Ip,
    /// A request header.
    Header(http::HeaderName),
    /// A query parameter.
    Query(String),
    /// One key for everyone.
    Global,
}

/// Which requests a route takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    /// `None` matches every method (`*`).
    pub method: Option<Method>,
    /// The path, exact or (ending in `/*`) a prefix.
    pub path: PathMatch,
}

/// A route's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// This path only.
    Exact(String),
    /// This path and everything below it (written `/api/*`; stored as `/api/`).
    Prefix(String),
}

/// What a route does with an allowed request.
#[derive(Debug, Clone)]
pub enum RouteAction {
    /// Answers with a fixed status and JSON body.
    Respond {
        /// The status.
        status: StatusCode,
        /// The JSON body.
        body: Bytes,
    },
    /// Forwards to an upstream, path and query unchanged.
    Upstream {
        /// `http://host:port` of the upstream.
        uri: Uri,
        /// How long the upstream may take to start answering before the client gets 504.
        timeout: Duration,
    },
}

/// The default `upstream_timeout`.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// `[[route]]`.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Which requests.
    pub matcher: RouteMatch,
    /// Who they count against.
    pub key: Vec<KeyPart>,
    /// The names of the policies checked together, all-or-nothing.
    pub policies: Vec<String>,
    /// The units each request is admitted for (default 1): with `settle_from`, the estimate.
    pub cost: u64,
    /// The upstream's response header that reports what a request actually cost: the request
    /// is settled at it, into debt past what is left.
    pub settle_from: Option<http::HeaderName>,
    /// What an allowed request gets.
    pub action: RouteAction,
}

impl StorageSection {
    /// The store's URL, for messages and logs: `memory://` or the Redis URL with any password
    /// replaced by `***`.
    pub fn url(&self) -> String {
        match &self.store {
            floodwall::StorageConfig::Redis(redis) => redis.redacted_url(),
            _ => floodwall::StorageConfig::MEMORY_URL.to_owned(),
        }
    }
}

/// A listen address: `IP:PORT` (`[::1]:8080` for IPv6), or `NAME:PORT` with the name resolved
/// now (`localhost:8080`); a name with several addresses listens on the first IPv4 one, else
/// the first.
///
/// # Errors
///
/// A message saying what to write, or that the name did not resolve.
pub fn resolve_listen(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs as _;
    if let Ok(address) = text.parse() {
        return Ok(address);
    }
    let shape = || {
        format!(
            "invalid listen address {text:?}: write HOST:PORT, e.g. 127.0.0.1:8080, [::1]:8080 or localhost:8080"
        )
    };
    let (host, port) = text.rsplit_once(':').ok_or_else(shape)?;
    let port: u16 = port.parse().map_err(|_| shape())?;
    if host.is_empty() || host.contains([':', '/', ' ']) {
        return Err(shape());
    }
    let addresses: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|error| format!("listen address {text:?}: cannot resolve {host:?}: {error}"))?
        .collect();
    addresses
        .iter()
        .find(|a| a.is_ipv4())
        .or(addresses.first())
        .copied()
        .ok_or_else(|| format!("listen address {text:?}: {host:?} has no address"))
}

impl Config {
    /// The embedded default: memory store on 127.0.0.1:8080, and the classic demo, `GET /`
    /// answering `{"message": "Hello, World!"}` 10 times a minute per client IP.
    pub fn embedded_default() -> Config {
        // The same text as floodwall.example.toml's essentials, so the default is no special case.
        const DEFAULT: &str = r#"
[[policy]]
name = "per-ip"
algorithm = "sliding_window"
limit = 10
period = "1m"

[[route]]
match = "GET /"
key = "ip"
policies = ["per-ip"]
respond = { status = 200, json = { message = "Hello, World!" } }
"#;
        match Config::parse(DEFAULT, Path::new("<embedded default>")) {
            Ok(config) => config,
            // The text is constant and covered by a test; this arm is never taken.
            Err(errors) => unreachable!("the embedded default is invalid: {errors}"),
        }
    }

    /// Reads and validates `path`.
    ///
    /// # Errors
    ///
    /// Every problem found, each with the file, line, column and a hint.
    pub fn from_file(path: &Path) -> Result<Config, ConfigErrors> {
        let source = std::fs::read_to_string(path).map_err(|error| {
            ConfigErrors(vec![ConfigError {
                file: path.to_owned(),
                line: 0,
                column: 0,
                message: format!("cannot read the file: {error}"),
                hint: None,
            }])
        })?;
        Config::parse(&source, path)
    }

    /// Validates `source`, naming `file` in errors.
    ///
    /// # Errors
    ///
    /// As [`Config::from_file`].
    pub fn parse(source: &str, file: &Path) -> Result<Config, ConfigErrors> {
        validate::parse(source, file)
    }

    /// The policy named `name`.
    pub fn policy(&self, name: &str) -> Option<&Policy> {
        self.policies.iter().find(|p| p.name() == name)
    }

    /// What is valid but likely not what the operator wants, each with its fix: `config check`
    /// prints these, and the service logs them at start.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if let (Some(_), floodwall::StorageConfig::Redis(redis)) = (&self.rls, &self.storage.store)
            && redis.deadline() > ENVOY_RLS_TIMEOUT
        {
            warnings.push(format!(
                "[storage] timeout is {:?}, longer than Envoy's default rate-limit timeout ({ENVOY_RLS_TIMEOUT:?}): [rls] answers by each call's grpc-timeout anyway, but a hung Redis then costs every Envoy request its full timeout until the breaker opens; set [storage] timeout = \"15ms\" (or raise the filter's `timeout` in Envoy)",
                redis.deadline()
            ));
        }
        if let Some(admin) = self.admin.as_ref().filter(|admin| !admin.guarded()) {
            warnings.push(format!(
                "[admin] has no token_env: the admin API on {} acts for anyone who can reach it; it answers only requests for its own address or localhost and never a page of another origin, but set [admin] token_env unless only trusted users reach that address",
                admin.listen
            ));
        }
        warnings
    }
}

/// Envoy's rate-limit filter gives the service this long unless its `timeout` says otherwise.
pub const ENVOY_RLS_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(20);
