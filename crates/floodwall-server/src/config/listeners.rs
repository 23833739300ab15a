//! `[server]`, `[admin]` and `[check]`: the listeners, their bounds and their tokens; and
//! `[access]`, the lists those listeners screen clients against.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use floodwall::List;
use floodwall::controls::ListEntry;
use floodwall::controls::{MAX_CONTROL_KEY_BYTES, MAX_CONTROLS};
use floodwall_http::HeaderMode;
use ipnet::IpNet;
use toml::Spanned;

use super::error::Diagnostics;
use super::raw::RawConfig;
use super::resolve_listen;
use super::validate::{count, duration, parse_or};
use super::{AdminConfig, CheckConfig, RlsConfig, ServerConfig};

/// The bounds of `max_header_bytes`: below 8 KiB common browsers' cookies do not fit (and the
/// HTTP/1 parser needs that much); above 1 MiB a few thousand connections hold gigabytes.
const MIN_HEADER_BYTES: usize = 8 * 1024;
const MAX_HEADER_BYTES_BOUND: usize = 1024 * 1024;

/// The largest `max_connections` accepted.
const MAX_CONNECTIONS_BOUND: usize = 1_000_000;

pub(super) fn server(raw: &RawConfig, diagnostics: &mut Diagnostics<'_>) -> ServerConfig {
    let hint = Some("host:port, e.g. \"127.0.0.1:8080\", \"[::1]:8080\" or \"localhost:8080\"");
    let listen = raw
        .server
        .listen
        .as_ref()
        .and_then(|listen| parse_or(diagnostics, listen, |text| resolve_listen(text), hint));
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

pub(super) fn admin(raw: &RawConfig, diagnostics: &mut Diagnostics<'_>) -> Option<AdminConfig> {
    let admin = raw.admin.as_ref()?;
    let listen = parse_or(
        diagnostics,
        &admin.listen,
        |text| resolve_listen(text),
        Some("host:port, e.g. \"127.0.0.1:9090\"; keep it off public interfaces"),
    )?;
    let main_token = admin
        .token_env
        .as_ref()
        .and_then(|name| token(name, diagnostics));
    let mut tokens = Vec::new();
    for (name, variable) in admin.tokens.iter().flatten() {
        if !valid_token_name(name) {
            diagnostics.error(
                Some(variable.span()),
                format!("token name {name:?} must be 1 to 64 letters, digits, '-', '_' or '.'"),
                Some(
                    "name tokens after who holds them, e.g. ops = \"FLOODWALL_OPS_TOKEN\""
                        .to_owned(),
                ),
            );
        } else if let Some(value) = token(variable, diagnostics) {
            tokens.push((name.clone(), value));
        }
    }
    if main_token.is_none()
        && tokens.is_empty()
        && admin.tokens.as_ref().is_none_or(|t| t.is_empty())
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
    Some(AdminConfig {
        listen,
        token: main_token,
        tokens,
    })
}

/// A token's name, as logs and metrics carry it.
fn valid_token_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `[access]`: the allow and deny lists, each entry a key or an address or CIDR network.
pub(super) fn access(raw: &RawConfig, diagnostics: &mut Diagnostics<'_>) -> Vec<(List, ListEntry)> {
    let Some(access) = &raw.access else {
        return Vec::new();
    };
    let mut entries = Vec::new();
    for (list, raw_entries) in [(List::Allow, &access.allow), (List::Deny, &access.deny)] {
        for entry in raw_entries {
            let text = entry.get_ref();
            if text.is_empty() || text.len() > MAX_CONTROL_KEY_BYTES {
                diagnostics.error(
                    Some(entry.span()),
                    format!(
                        "a {} entry must be 1 to {MAX_CONTROL_KEY_BYTES} bytes",
                        list.as_str()
                    ),
                    Some(
                        "a client key, an address (203.0.113.7) or a network (203.0.113.0/24)"
                            .to_owned(),
                    ),
                );
                continue;
            }
            match ListEntry::parse(text) {
                Ok(parsed) => entries.push((list, parsed)),
                Err(error) => diagnostics.error(Some(entry.span()), error.to_string(), None),
            }
        }
    }
    if entries.len() > MAX_CONTROLS / 2 {
        diagnostics.error(
            None,
            format!(
                "[access] lists {} entries; at most {}",
                entries.len(),
                MAX_CONTROLS / 2
            ),
            Some("list networks rather than single addresses".to_owned()),
        );
    }
    entries
}

/// Refuses two listeners on one address: the second bind would fail at start, or worse, the
/// admin API would be served where the main listener's clients reach it.
pub(super) fn listeners_apart(
    raw: &RawConfig,
    server: &ServerConfig,
    admin: Option<&AdminConfig>,
    check: &CheckConfig,
    rls: Option<&RlsConfig>,
    diagnostics: &mut Diagnostics<'_>,
) {
    let same = |a: SocketAddr, b: SocketAddr| a == b && a.port() != 0;
    let hint = || Some("give each listener its own port".to_owned());
    if let (Some(admin), Some(raw_admin)) = (admin, &raw.admin)
        && same(admin.listen, server.listen)
    {
        diagnostics.error(
            Some(raw_admin.listen.span()),
            format!("[admin] listen {} is also [server] listen", admin.listen),
            hint(),
        );
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
    let raw_rls = raw.rls.as_ref().and_then(|r| r.listen.as_ref());
    if let (Some(raw_listen), Some(listen)) = (raw_rls, rls.map(|rls| rls.listen)) {
        let clash = if same(listen, server.listen) {
            Some("[server] listen")
        } else if admin.is_some_and(|admin| same(listen, admin.listen)) {
            Some("[admin] listen")
        } else if check.listen.is_some_and(|check| same(listen, check)) {
            Some("[check] listen")
        } else {
            None
        };
        if let Some(other) = clash {
            diagnostics.error(
                Some(raw_listen.span()),
                format!("[rls] listen {listen} is also {other}"),
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

pub(super) fn check(raw: &RawConfig, diagnostics: &mut Diagnostics<'_>) -> CheckConfig {
    let mut check = CheckConfig::default();
    let Some(section) = &raw.check else {
        return check;
    };
    let section = section.get_ref();
    check.enabled = section.enabled.unwrap_or(true);
    check.listen = section.listen.as_ref().and_then(|listen| {
        parse_or(
            diagnostics,
            listen,
            |text| resolve_listen(text),
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
    if let Some(ttl) = &section.reservation_ttl {
        check.reservation_ttl = parse_or(
            diagnostics,
            ttl,
            |text| super::validate::duration(text),
            Some("how long a reservation waits for its settle, e.g. \"15m\""),
        )
        .unwrap_or(check.reservation_ttl);
    }
    check
}
