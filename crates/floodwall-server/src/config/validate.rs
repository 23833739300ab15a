//! From the raw file to a [`Config`]: every value checked, every error collected.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use floodwall::core::key::validate_prefix;
use floodwall::core::parse_period;
use floodwall::memory::DEFAULT_MAX_KEYS;
use floodwall::redis::{DEFAULT_PREFIX, DEFAULT_TIMEOUT, RedisConfig};
use floodwall::{Algorithm, MEMORY_URL, Mode, OnError, Policy};
use floodwall_http::HeaderMode;
use http::{HeaderName, Method, StatusCode, Uri};
use ipnet::IpNet;
use toml::Spanned;

use super::error::Diagnostics;
use super::raw::{RawConfig, RawPolicy, RawRoute};
use super::{
    AdminConfig, Config, ConfigErrors, KeyPart, PathMatch, RouteAction, RouteConfig, RouteMatch,
    ServerConfig, StorageConfig,
};

/// The largest `max_connections` accepted.
const MAX_CONNECTIONS_BOUND: usize = 1_000_000;
/// The bounds of `max_header_bytes`: below 8 KiB common browsers' cookies do not fit (and the
/// HTTP/1 parser needs that much); above 1 MiB a few thousand connections hold gigabytes.
const MIN_HEADER_BYTES: usize = 8 * 1024;
const MAX_HEADER_BYTES_BOUND: usize = 1024 * 1024;

const STORAGE_SCHEMES: &str =
    "memory://, redis://, rediss://, redis+unix://, redis+cluster://, rediss+cluster://";

pub(super) fn parse(source: &str, file: &Path) -> Result<Config, ConfigErrors> {
    let mut diagnostics = Diagnostics::new(file, source);
    if source.trim().is_empty() {
        diagnostics.error(
            None,
            "the file is empty",
            Some("start from floodwall.example.toml, or run floodwall serve without --config for the embedded demo".to_owned()),
        );
        return Err(ConfigErrors(diagnostics.errors));
    }
    if !super::schema::check(source, &mut diagnostics) {
        let mut errors = diagnostics.errors;
        errors.sort_by_key(|e| (e.line, e.column));
        return Err(ConfigErrors(errors));
    }
    let raw: RawConfig = match toml::from_str(source) {
        Ok(raw) => raw,
        Err(error) => {
            let hint = error
                .message()
                .contains("unknown field")
                .then(|| "see floodwall.example.toml for every key".to_owned());
            diagnostics.error(error.span(), error.message().trim().to_owned(), hint);
            return Err(ConfigErrors(diagnostics.errors));
        }
    };
    let server = server(&raw, &mut diagnostics);
    let admin = admin(&raw, &mut diagnostics);
    let check = check(&raw, &mut diagnostics);
    listeners_apart(&raw, &server, admin.as_ref(), &check, &mut diagnostics);
    let storage = storage(&raw, &mut diagnostics);
    let policies = policies(&raw.policies, &mut diagnostics);
    // Names of every [[policy]], valid or not: a route naming an invalid one is not reported again.
    let mut defined: Vec<&str> = Vec::new();
    for policy in &raw.policies {
        if !defined.contains(&policy.name.get_ref().as_str()) {
            defined.push(policy.name.get_ref());
        }
    }
    let routes = raw
        .routes
        .iter()
        .filter_map(|route| self::route(route, &defined, &mut diagnostics))
        .collect();
    if !diagnostics.errors.is_empty() {
        let mut errors = diagnostics.errors;
        errors.sort_by_key(|e| (e.line, e.column));
        return Err(ConfigErrors(errors));
    }
    Ok(Config {
        file: file.to_owned(),
        server,
        admin,
        check,
        storage,
        policies: policies.into_iter().map(|(policy, _)| policy).collect(),
        routes,
    })
}

/// Parses a spanned value with `parse`, recording `hint` at its span on failure.
fn parse_or<T, R>(
    diagnostics: &mut Diagnostics<'_>,
    value: &Spanned<R>,
    parse: impl FnOnce(&R) -> Result<T, String>,
    hint: Option<&str>,
) -> Option<T> {
    match parse(value.get_ref()) {
        Ok(parsed) => Some(parsed),
        Err(message) => {
            diagnostics.error(Some(value.span()), message, hint.map(str::to_owned));
            None
        }
    }
}

fn socket_addr(text: &String) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| format!("invalid listen address {text:?}"))
}

fn server(raw: &RawConfig, diagnostics: &mut Diagnostics<'_>) -> ServerConfig {
    let hint = Some("host:port, e.g. \"127.0.0.1:8080\" or \"[::1]:8080\"");
    let listen = raw
        .server
        .listen
        .as_ref()
        .and_then(|listen| parse_or(diagnostics, listen, socket_addr, hint));
    let trusted_proxies = raw
        .server
        .trusted_proxies
        .iter()
        .filter_map(|network| {
            parse_or(
                diagnostics,
                network,
                |text| {
                    IpNet::from_str(text)
                        .or_else(|_| IpAddr::from_str(text).map(IpNet::from))
                        .map_err(|_| format!("invalid trusted proxy network {text:?}"))
                },
                Some("a CIDR such as \"10.0.0.0/8\" or \"fd00::/8\", or a single address"),
            )
        })
        .collect();
    let ipv6_prefix = raw.server.ipv6_prefix.as_ref().and_then(|bits| {
        parse_or(
            diagnostics,
            bits,
            |bits| u8::try_from(*bits).ok().filter(|b| *b <= 128).ok_or(format!("ipv6_prefix {bits} is out of range")),
            Some("a prefix length from 0 to 128; 64 groups each subscriber's block, 128 keys every address"),
        )
    });
    let headers = raw.server.headers.as_ref().and_then(|headers| {
        parse_or(
            diagnostics,
            headers,
            |text| match text.as_str() {
                "draft" => Ok(HeaderMode::Draft),
                "legacy" => Ok(HeaderMode::Legacy),
                "both" => Ok(HeaderMode::Both),
                "none" => Ok(HeaderMode::None),
                other => Err(format!("unknown headers mode {other:?}")),
            },
            Some("one of draft, legacy, both, none"),
        )
    });
    let max_connections = raw.server.max_connections.as_ref().and_then(|max| {
        parse_or(
            diagnostics,
            max,
            |max| count("max_connections", *max, MAX_CONNECTIONS_BOUND),
            Some("open connections per listener, e.g. 10000; keep it below the process's file descriptor limit"),
        )
    });
    let timeout =
        |value: &Option<Spanned<String>>, default: Duration, diagnostics: &mut Diagnostics<'_>| {
            value
                .as_ref()
                .map_or(Some(default), |text| {
                    parse_or(diagnostics, text, |text| duration(text), None)
                })
                .unwrap_or(default)
        };
    let header_timeout = timeout(
        &raw.server.header_timeout,
        super::DEFAULT_HEADER_TIMEOUT,
        diagnostics,
    );
    let idle_timeout = timeout(
        &raw.server.idle_timeout,
        super::DEFAULT_IDLE_TIMEOUT,
        diagnostics,
    );
    let body_timeout = timeout(
        &raw.server.body_timeout,
        super::DEFAULT_BODY_TIMEOUT,
        diagnostics,
    );
    let max_header_bytes = raw.server.max_header_bytes.as_ref().and_then(|max| {
        parse_or(
            diagnostics,
            max,
            |max| match count("max_header_bytes", *max, MAX_HEADER_BYTES_BOUND) {
                Ok(bytes) if bytes >= MIN_HEADER_BYTES => Ok(bytes),
                Ok(_) => Err(format!(
                    "max_header_bytes {max} must be at least {MIN_HEADER_BYTES}"
                )),
                Err(message) => Err(message),
            },
            Some("bytes for a request's line and headers, e.g. 32768"),
        )
    });
    ServerConfig {
        header_timeout,
        idle_timeout,
        body_timeout,
        max_header_bytes: max_header_bytes.unwrap_or(super::DEFAULT_MAX_HEADER_BYTES),
        listen: listen.unwrap_or(super::DEFAULT_LISTEN),
        trusted_proxies,
        ipv6_prefix: ipv6_prefix.unwrap_or(64),
        headers: headers.unwrap_or_default(),
        max_connections: max_connections.unwrap_or(super::DEFAULT_MAX_CONNECTIONS),
    }
}

fn admin(raw: &RawConfig, diagnostics: &mut Diagnostics<'_>) -> Option<AdminConfig> {
    let admin = raw.admin.as_ref()?;
    let listen = parse_or(
        diagnostics,
        &admin.listen,
        socket_addr,
        Some("host:port, e.g. \"127.0.0.1:9090\"; keep it off public interfaces"),
    )?;
    let token = admin
        .token_env
        .as_ref()
        .and_then(|name| token(name, diagnostics));
    if token.is_none()
        && admin.token_env.is_none()
        && !listen.ip().is_loopback()
        && admin.allow_unauthenticated != Some(true)
    {
        diagnostics.error(
            Some(admin.listen.span()),
            format!("the admin API on {listen} (beyond loopback) would answer anyone: it can reset any key's limit"),
            Some("set token_env = \"FLOODWALL_ADMIN_TOKEN\" (and that variable), listen on 127.0.0.1, or set allow_unauthenticated = true".to_owned()),
        );
    }
    Some(AdminConfig { listen, token })
}

/// Refuses two listeners on one address: the second bind would fail at start, or worse, the
/// admin API would be served where the main listener's clients reach it.
fn listeners_apart(
    raw: &RawConfig,
    server: &ServerConfig,
    admin: Option<&AdminConfig>,
    check: &super::CheckConfig,
    diagnostics: &mut Diagnostics<'_>,
) {
    let same = |a: SocketAddr, b: SocketAddr| a == b && a.port() != 0;
    let hint = || Some("give each listener its own port".to_owned());
    if let (Some(admin), Some(raw_admin)) = (admin, &raw.admin) {
        if same(admin.listen, server.listen) {
            diagnostics.error(
                Some(raw_admin.listen.span()),
                format!("[admin] listen {} is also [server] listen", admin.listen),
                hint(),
            );
        }
    }
    let raw_listen = raw.check.as_ref().and_then(|c| c.get_ref().listen.as_ref());
    if let (Some(listen), Some(raw_listen)) = (check.listen, raw_listen) {
        let clash = if same(listen, server.listen) {
            Some("[server] listen")
        } else if admin.is_some_and(|admin| same(listen, admin.listen)) {
            Some("[admin] listen")
        } else {
            None
        };
        if let Some(other) = clash {
            diagnostics.error(
                Some(raw_listen.span()),
                format!("[check] listen {listen} is also {other}"),
                hint(),
            );
        }
    }
}

/// The token in the environment variable `name`: a variable that is missing or empty is an
/// error, never an open API.
fn token(name: &Spanned<String>, diagnostics: &mut Diagnostics<'_>) -> Option<String> {
    parse_or(
        diagnostics,
        name,
        |name| match std::env::var(name) {
            Ok(token) if !token.trim().is_empty() => Ok(token),
            Ok(_) => Err(format!("environment variable {name} (token_env) is empty")),
            Err(std::env::VarError::NotPresent) => Err(format!(
                "environment variable {name} (token_env) is not set"
            )),
            Err(_) => Err(format!("environment variable {name} is not valid UTF-8")),
        },
        Some(
            "set the variable to the token before starting, or remove token_env to serve without one",
        ),
    )
}

/// The most policies a check may be allowed to name.
const MAX_POLICIES_BOUND: usize = 1024;

fn check(raw: &RawConfig, diagnostics: &mut Diagnostics<'_>) -> super::CheckConfig {
    let mut check = super::CheckConfig::default();
    let Some(section) = &raw.check else {
        return check;
    };
    let section = section.get_ref();
    check.enabled = section.enabled.unwrap_or(true);
    check.listen = section.listen.as_ref().and_then(|listen| {
        parse_or(
            diagnostics,
            listen,
            socket_addr,
            Some("host:port, e.g. \"127.0.0.1:8082\"; omit it to serve the check API on [server] listen"),
        )
    });
    check.token = section
        .token_env
        .as_ref()
        .and_then(|name| token(name, diagnostics));
    if let Some(max) = &section.max_policies {
        check.max_policies = parse_or(
            diagnostics,
            max,
            |max| count("max_policies", *max, MAX_POLICIES_BOUND),
            Some("the most policies one check may name, e.g. 16"),
        )
        .unwrap_or(check.max_policies);
    }
    check
}

fn on_error(text: &String) -> Result<OnError, String> {
    OnError::from_str(text).map_err(|_| format!("unknown on_error {text:?}"))
}

const ON_ERROR_HINT: &str = "one of allow (fail open), deny (fail closed: 503), local (an in-process limiter until the store is back)";

/// `[storage]`, checked with the store's own URL and prefix rules, so that what connecting
/// would refuse is reported here with its line.
fn storage(raw: &RawConfig, diagnostics: &mut Diagnostics<'_>) -> StorageConfig {
    let storage = &raw.storage;
    let url = storage.url.as_ref().and_then(|url| {
        parse_or(
            diagnostics,
            url,
            |text| match floodwall::StorageConfig::from_url(text) {
                Ok(_) => Ok(text.clone()),
                Err(_) if !STORAGE_SCHEMES.split(", ").any(|s| text.starts_with(s)) => {
                    Err(format!("unknown storage URL {text:?}"))
                }
                Err(error) => Err(error.to_string()),
            },
            Some(&format!("a URL starting with one of {STORAGE_SCHEMES}")),
        )
    });
    let prefix = storage.prefix.as_ref().and_then(|prefix| {
        parse_or(
            diagnostics,
            prefix,
            |text| {
                validate_prefix(text)
                    .map(|()| text.clone())
                    .map_err(|e| e.to_string())
            },
            Some("letters, digits and '_', '-', '.', ':', e.g. \"floodwall\""),
        )
    });
    let timeout = storage
        .timeout
        .as_ref()
        .and_then(|timeout| parse_or(diagnostics, timeout, |text| duration(text), None));
    let on_error = storage
        .on_error
        .as_ref()
        .and_then(|value| parse_or(diagnostics, value, on_error, Some(ON_ERROR_HINT)));
    let max_keys = storage.max_keys.as_ref().and_then(|max| {
        parse_or(
            diagnostics,
            max,
            |max| count("max_keys", *max, usize::MAX),
            Some("the memory store's bound on tracked keys, e.g. 1000000"),
        )
    });
    let store = match url {
        Some(url) if url != MEMORY_URL => floodwall::StorageConfig::Redis(
            RedisConfig::new(url)
                .prefix(prefix.unwrap_or_else(|| DEFAULT_PREFIX.to_owned()))
                .timeout(timeout.unwrap_or(DEFAULT_TIMEOUT)),
        ),
        _ => floodwall::StorageConfig::Memory {
            max_keys: max_keys.unwrap_or(DEFAULT_MAX_KEYS),
        },
    };
    StorageConfig {
        store,
        on_error: on_error.unwrap_or(OnError::Allow),
    }
}

/// A bound of `name`: a whole number from 1 to `most`.
fn count(name: &str, value: i64, most: usize) -> Result<usize, String> {
    usize::try_from(value)
        .ok()
        .filter(|n| (1..=most).contains(n))
        .ok_or_else(|| match most {
            usize::MAX => format!("{name} {value} must be at least 1"),
            _ => format!("{name} {value} must be from 1 to {most}"),
        })
}

fn duration(text: &str) -> Result<Duration, String> {
    match parse_period(text) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        Ok(_) => Err(format!(
            "duration {text:?} must be more than zero (e.g. 50ms, 1s)"
        )),
        Err(error) => Err(error.to_string()),
    }
}

/// The valid policies, with the line each is defined on. A name used twice is an error at the
/// second use, whether or not the first is valid.
fn policies(raw: &[RawPolicy], diagnostics: &mut Diagnostics<'_>) -> Vec<(Policy, usize)> {
    let mut seen: Vec<(&str, usize)> = Vec::new();
    let mut valid = Vec::new();
    for raw in raw {
        let name = raw.name.get_ref().as_str();
        let line = diagnostics.line_of(raw.name.span().start);
        if let Some((_, first)) = seen.iter().find(|(seen, _)| *seen == name) {
            diagnostics.error(
                Some(raw.name.span()),
                format!("duplicate policy name {name:?}"),
                Some(format!(
                    "it is first defined on line {first}; give each policy its own name"
                )),
            );
            continue;
        }
        seen.push((name, line));
        if let Some(policy) = policy(raw, diagnostics) {
            valid.push((policy, line));
        }
    }
    valid
}

fn policy(raw: &RawPolicy, diagnostics: &mut Diagnostics<'_>) -> Option<Policy> {
    let algorithm = parse_or(
        diagnostics,
        &raw.algorithm,
        |text| Algorithm::from_str(text).map_err(|e| e.to_string()),
        None,
    );
    let period = parse_or(diagnostics, &raw.period, |text| duration(text), None);
    let limit = parse_or(
        diagnostics,
        &raw.limit,
        |limit| {
            u64::try_from(*limit)
                .ok()
                .filter(|l| *l > 0)
                .ok_or(format!("limit {limit} must be at least 1"))
        },
        Some("the number of requests (units) allowed per period"),
    );
    let mode = raw.mode.as_ref().and_then(|mode| {
        parse_or(
            diagnostics,
            mode,
            |text| match text.as_str() {
                "enforce" => Ok(Mode::Enforce),
                "shadow" => Ok(Mode::Shadow),
                other => Err(format!("unknown mode {other:?}")),
            },
            Some("enforce (the default) or shadow (count and report, never deny)"),
        )
    });
    let policy_on_error = raw
        .on_error
        .as_ref()
        .and_then(|value| parse_or(diagnostics, value, on_error, Some(ON_ERROR_HINT)));
    let (algorithm, period, limit) = (algorithm?, period?, limit?);
    let mut policy = match Policy::new(raw.name.get_ref(), algorithm, limit, period) {
        Ok(policy) => policy,
        Err(error) => {
            let span = match error {
                floodwall::PolicyError::InvalidName { .. } => raw.name.span(),
                floodwall::PolicyError::PeriodTooShort { .. }
                | floodwall::PolicyError::PeriodTooLong { .. } => raw.period.span(),
                _ => raw.limit.span(),
            };
            diagnostics.error(Some(span), error.to_string(), None);
            return None;
        }
    };
    if let Some(burst) = &raw.burst {
        let Ok(value) = u64::try_from(*burst.get_ref()) else {
            diagnostics.error(
                Some(burst.span()),
                format!("burst {} must be at least 1", burst.get_ref()),
                None,
            );
            return None;
        };
        policy = match policy.with_burst(value) {
            Ok(policy) => policy,
            Err(error) => {
                diagnostics.error(Some(burst.span()), error.to_string(), None);
                return None;
            }
        };
    }
    if let Some(mode) = mode {
        policy = policy.with_mode(mode);
    }
    if let Some(on_error) = policy_on_error {
        policy = policy.with_on_error(on_error);
    }
    Some(policy)
}

const KEY_HINT: &str =
    "ip, global, header:NAME, query:NAME, or parts joined by + (e.g. ip+header:x-api-key)";

fn key(text: &String) -> Result<Vec<KeyPart>, String> {
    text.split('+')
        .map(|part| {
            let part = part.trim();
            match part.split_once(':') {
                None if part == "ip" => Ok(KeyPart::Ip),
                None if part == "global" => Ok(KeyPart::Global),
                Some(("header", name)) => HeaderName::from_str(name.trim())
                    .map(KeyPart::Header)
                    .map_err(|_| format!("invalid header name {name:?} in key {text:?}")),
                Some(("query", name)) if !name.trim().is_empty() => {
                    Ok(KeyPart::Query(name.trim().to_owned()))
                }
                _ => Err(format!("unknown key {part:?} in {text:?}")),
            }
        })
        .collect()
}

/// The methods a route may name (CONNECT is never served).
const ROUTE_METHODS: [Method; 8] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
    Method::TRACE,
];

fn route_match(text: &String) -> Result<RouteMatch, String> {
    let Some((method, path)) = text.trim().split_once(' ') else {
        return Err(format!("route match {text:?} needs a method and a path"));
    };
    let method = match method {
        "*" => None,
        method => Some(
            ROUTE_METHODS
                .iter()
                .find(|known| known.as_str() == method)
                .cloned()
                .ok_or_else(|| format!("unknown method {method:?} in {text:?}"))?,
        ),
    };
    let path = path.trim();
    if !path.starts_with('/') {
        return Err(format!("route path {path:?} must start with /"));
    }
    let path = match path.strip_suffix('*') {
        Some(prefix) if prefix.ends_with('/') => PathMatch::Prefix(prefix.to_owned()),
        Some(_) => {
            return Err(format!(
                "a wildcard must follow a slash: write {:?}",
                format!("{}/*", path.trim_end_matches('*').trim_end_matches('/'))
            ));
        }
        None => PathMatch::Exact(path.to_owned()),
    };
    Ok(RouteMatch { method, path })
}

fn route(
    raw: &RawRoute,
    defined: &[&str],
    diagnostics: &mut Diagnostics<'_>,
) -> Option<RouteConfig> {
    let matcher = parse_or(
        diagnostics,
        &raw.matcher,
        route_match,
        Some(
            "\"METHOD PATH\": e.g. \"GET /\", \"POST /api/*\" (a prefix), \"* /health\" (any method); methods: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE",
        ),
    );
    let key = match &raw.key {
        Some(text) => parse_or(diagnostics, text, key, Some(KEY_HINT)),
        None => Some(vec![KeyPart::Ip]),
    };
    let mut names = Vec::new();
    if let Some(listed) = raw.policies.as_ref().filter(|p| p.get_ref().is_empty()) {
        diagnostics.error(
            Some(listed.span()),
            "policies = [] limits nothing",
            Some(
                "name at least one policy, or leave policies out for a route without limits"
                    .to_owned(),
            ),
        );
    }
    for name in raw.policies.iter().flat_map(|p| p.get_ref()) {
        if defined.contains(&name.get_ref().as_str()) {
            names.push(name.get_ref().clone());
        } else {
            let hint = if defined.is_empty() {
                "define it in a [[policy]] section".to_owned()
            } else {
                format!("defined policies: {}", defined.join(", "))
            };
            diagnostics.error(
                Some(name.span()),
                format!("route uses undefined policy {:?}", name.get_ref()),
                Some(hint),
            );
        }
    }
    if let (Some(timeout), None) = (&raw.upstream_timeout, &raw.upstream) {
        diagnostics.error(
            Some(timeout.span()),
            "upstream_timeout without upstream",
            Some("set upstream = \"http://host:port\" or remove upstream_timeout".to_owned()),
        );
    }
    let action = match (&raw.respond, &raw.upstream) {
        (Some(respond), None) => {
            let status = parse_or(
                diagnostics,
                &respond.get_ref().status,
                |status| {
                    u16::try_from(*status)
                        .ok()
                        .filter(|s| (200..=599).contains(s))
                        .and_then(|s| StatusCode::from_u16(s).ok())
                        .ok_or(format!("status {status} cannot answer a request"))
                },
                Some("a final HTTP status from 200 to 599, e.g. 200"),
            );
            let bodiless = status
                .is_some_and(|s| s == StatusCode::NO_CONTENT || s == StatusCode::NOT_MODIFIED);
            if bodiless && respond.get_ref().json.is_some() {
                diagnostics.error(
                    Some(respond.span()),
                    format!(
                        "status {} has no body, but json is set",
                        status.map_or(0, |s| s.as_u16())
                    ),
                    Some("remove json, or answer with a status that has a body (200)".to_owned()),
                );
                return None;
            }
            let body = match &respond.get_ref().json {
                Some(json) => match serde_json::to_vec(json) {
                    Ok(body) => Bytes::from(body),
                    Err(error) => {
                        diagnostics.error(
                            Some(respond.span()),
                            format!("respond.json cannot be written as JSON: {error}"),
                            None,
                        );
                        return None;
                    }
                },
                None => Bytes::new(),
            };
            status.map(|status| RouteAction::Respond { status, body })
        }
        (None, Some(upstream)) => {
            let uri = parse_or(
                diagnostics,
                upstream,
                |text| {
                    let uri = Uri::from_str(text)
                        .map_err(|_| format!("invalid upstream URL {text:?}"))?;
                    let bare_path = uri.path_and_query().is_none_or(|p| p.as_str() == "/");
                    if uri.scheme_str() != Some("http") || uri.authority().is_none() || !bare_path {
                        return Err(format!("upstream {text:?} must be http://host:port"));
                    }
                    Ok(uri)
                },
                Some(
                    "http://host:port, e.g. \"http://127.0.0.1:9000\"; requests keep their path and query",
                ),
            );
            let timeout = match &raw.upstream_timeout {
                Some(timeout) => parse_or(diagnostics, timeout, |text| duration(text), None),
                None => Some(super::DEFAULT_UPSTREAM_TIMEOUT),
            };
            uri.zip(timeout)
                .map(|(uri, timeout)| RouteAction::Upstream { uri, timeout })
        }
        (Some(_), Some(_)) | (None, None) => {
            diagnostics.error(
                Some(raw.matcher.span()),
                "a route needs exactly one of respond or upstream",
                Some("respond = { status = 200, json = { … } } answers here; upstream = \"http://…\" forwards".to_owned()),
            );
            None
        }
    };
    Some(RouteConfig {
        matcher: matcher?,
        key: key?,
        policies: names,
        action: action?,
    })
}
