//! Bearer tokens for the admin API and the check API.

use std::net::IpAddr;

use http::header::{AUTHORIZATION, HOST, ORIGIN};
use http::{HeaderMap, StatusCode};

use crate::error::ApiError;

/// Which API a token guards, for the answer that asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    /// `[admin] token_env`.
    Admin,
    /// `[check] token_env`.
    Check,
}

/// Compares without an early exit, so the time taken says nothing about the token.
fn same_token(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Whether `origin` (an `Origin` header) is the page of `authority` (the request's `Host`):
/// `http://` or `https://` and that authority, byte for byte, as browsers write both.
fn same_origin(origin: &[u8], authority: &[u8]) -> bool {
    origin
        .strip_prefix(b"http://")
        .or_else(|| origin.strip_prefix(b"https://"))
        .is_some_and(|origin| origin == authority)
}

/// The password of `Authorization: Basic …`: how a browser sends the admin token, which it
/// prompts for (any user name) and then sends with every request of the dashboard. Refused when
/// the request comes from another site's page (its `Origin` is not this host), so a page
/// elsewhere cannot act with the credentials the browser keeps.
fn basic_password(headers: &HeaderMap) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let value = headers
        .get(AUTHORIZATION)?
        .as_bytes()
        .strip_prefix(b"Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value)
        .ok()?;
    let at = decoded.iter().position(|b| *b == b':')?;
    if let Some(origin) = headers.get(ORIGIN) {
        let host = headers.get(HOST)?.as_bytes();
        if !same_origin(origin.as_bytes(), host) {
            return None;
        }
    }
    Some(decoded[at + 1..].to_vec())
}

/// The name of the admin token `headers` carry (as a bearer token, or as a browser's Basic
/// password): `admin` for `token_env`'s, a `[admin] tokens` name for one of those, `anonymous`
/// when no token is configured. 401 for any other.
pub(crate) fn admin_caller(
    headers: &HeaderMap,
    admin: Option<&crate::config::AdminConfig>,
) -> Result<String, ApiError> {
    let guarded = admin.filter(|admin| admin.guarded());
    let Some(admin) = guarded else {
        bearer(headers, None, Api::Admin)?;
        return Ok("anonymous".to_owned());
    };
    let main = admin.token.iter().map(|token| ("admin", token.as_str()));
    let named = admin
        .tokens
        .iter()
        .map(|(name, token)| (name.as_str(), token.as_str()));
    let password = basic_password(headers);
    // Every token is compared, so the time taken does not say which one came close.
    let mut caller = None;
    for (name, token) in main.chain(named) {
        let matched = match &password {
            Some(password) => same_token(password, token.as_bytes()),
            None => bearer(headers, Some(token), Api::Admin).is_ok(),
        };
        if matched && caller.is_none() {
            caller = Some(name.to_owned());
        }
    }
    match caller {
        Some(name) => Ok(name),
        None => {
            // A repeated Authorization header says so rather than 401.
            bearer(headers, None, Api::Admin)?;
            Err(ApiError::Unauthorized(Api::Admin))
        }
    }
}

/// Refuses a request without `Authorization: Bearer <token>` when a token is configured, and
/// one with more than one `Authorization` header whether or not one is (which would count is
/// ambiguous).
pub(crate) fn bearer(headers: &HeaderMap, token: Option<&str>, api: Api) -> Result<(), ApiError> {
    let mut given = headers.get_all(AUTHORIZATION).iter();
    let first = given.next();
    if given.next().is_some() {
        return Err(ApiError::Ambiguous("the Authorization header".to_owned()));
    }
    // No token configured: the API is open to whoever reaches its listener.
    let Some(token) = token else {
        return Ok(());
    };
    let given = first
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .unwrap_or_default();
    if same_token(given, token.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized(api))
    }
}

/// The host part of an authority (`host`, `host:port`, `[v6]:port`), without its port.
fn host_of(authority: &str) -> &str {
    if let Some(bracketed) = authority.strip_prefix('[') {
        return bracketed.split(']').next().unwrap_or_default();
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// Whether `host` names the admin listener bound to `listen`: `localhost`, or its address (any
/// address when it listens on all of them). A name another site controls is never one: that is
/// what DNS rebinding would send.
fn own_host(host: &str, listen: IpAddr) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<IpAddr>()
        .is_ok_and(|address| listen.is_unspecified() || address == listen)
}

/// Refuses what a page of another site could have made a browser send to a token-less admin
/// listener bound to `listen`: a `Host` that is not the listener's own (421), an `Origin` other
/// than the listener's own, or a `Sec-Fetch-Site` other than `same-origin` or `none` (403).
/// Programs (curl, Prometheus, `floodwall admin`) send neither header and a Host of the address
/// they connect to, so they pass.
pub(crate) fn tokenless_admin_request(
    headers: &HeaderMap,
    authority: Option<&str>,
    listen: IpAddr,
) -> Result<(), ApiError> {
    let mut hosts = headers.get_all(HOST).iter();
    let host_header = hosts.next();
    if hosts.next().is_some() {
        return Err(ApiError::Ambiguous("the Host header".to_owned()));
    }
    let authority = match host_header {
        Some(value) => Some(value.to_str().map_err(|_| foreign_host())?),
        None => authority,
    };
    if let Some(authority) = authority
        && !own_host(host_of(authority), listen)
    {
        return Err(foreign_host());
    }
    if let Some(origin) = headers.get(ORIGIN) {
        let same =
            authority.is_some_and(|authority| same_origin(origin.as_bytes(), authority.as_bytes()));
        if !same {
            return Err(cross_site());
        }
    }
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return Err(cross_site());
    }
    Ok(())
}

fn foreign_host() -> ApiError {
    ApiError::Status {
        status: StatusCode::MISDIRECTED_REQUEST,
        title: "Not this listener's host",
        detail: "without a token ([admin] token_env), the admin listener answers only requests for its own address or localhost: connect to it by address, or set a token",
    }
}

fn cross_site() -> ApiError {
    ApiError::Status {
        status: StatusCode::FORBIDDEN,
        title: "Cross-site request refused",
        detail: "without a token ([admin] token_env), the admin listener answers only its own pages and programs, never a page of another origin: set a token to use it from elsewhere",
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderValue};

    use super::tokenless_admin_request;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn a_tokenless_admin_answers_its_own_host_and_origin_only() {
        let loopback = "127.0.0.1".parse().unwrap();
        for allowed in [
            headers(&[("host", "127.0.0.1:9090")]),
            headers(&[("host", "localhost:9090")]),
            headers(&[]),
            headers(&[
                ("host", "127.0.0.1:9090"),
                ("origin", "http://127.0.0.1:9090"),
                ("sec-fetch-site", "same-origin"),
            ]),
            headers(&[("host", "LOCALHOST"), ("sec-fetch-site", "none")]),
        ] {
            assert!(
                tokenless_admin_request(&allowed, None, loopback).is_ok(),
                "{allowed:?}"
            );
        }
        for refused in [
            headers(&[("host", "evil.example")]),
            headers(&[("host", "evil.example:9090")]),
            headers(&[("host", "127.0.0.2:9090")]),
            headers(&[
                ("host", "127.0.0.1:9090"),
                ("origin", "http://127.0.0.1:8000"),
            ]),
            headers(&[("host", "127.0.0.1:9090"), ("origin", "null")]),
            headers(&[("host", "127.0.0.1:9090"), ("sec-fetch-site", "same-site")]),
            headers(&[("host", "127.0.0.1:9090"), ("sec-fetch-site", "cross-site")]),
            headers(&[("host", "127.0.0.1:9090"), ("host", "127.0.0.1:9090")]),
        ] {
            assert!(
                tokenless_admin_request(&refused, None, loopback).is_err(),
                "{refused:?}"
            );
        }
        assert!(tokenless_admin_request(&headers(&[]), Some("evil.example"), loopback).is_err());
        let everywhere = "0.0.0.0".parse().unwrap();
        assert!(
            tokenless_admin_request(&headers(&[("host", "10.1.2.3:9090")]), None, everywhere)
                .is_ok()
        );
        assert!(
            tokenless_admin_request(&headers(&[("host", "rebound.example")]), None, everywhere)
                .is_err()
        );
    }
}
