//! `[[route]]`: which requests, keyed how, limited by which policies, answered how.

use std::str::FromStr;

use bytes::Bytes;
use http::{HeaderName, Method, StatusCode, Uri};

use super::error::Diagnostics;
use super::raw::RawRoute;
use super::validate::{duration, parse_or};
use super::{KeyPart, PathMatch, RouteAction, RouteConfig, RouteMatch};

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

pub(super) fn route(
    raw: &RawRoute,
    defined: &[&str],
    valid: &[floodwall::Policy],
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
    let cost = match &raw.cost {
        Some(cost) => parse_or(
            diagnostics,
            cost,
            |cost| {
                let cost = u64::try_from(*cost).map_err(|_| format!("cost {cost} is negative"))?;
                let named = valid
                    .iter()
                    .filter(|p| names.contains(&p.name().to_owned()));
                match named.into_iter().find(|p| cost > p.capacity()) {
                    Some(p) => Err(format!(
                        "cost {cost} can never be admitted by policy {:?}, whose capacity is {}",
                        p.name(),
                        p.capacity()
                    )),
                    None => Ok(cost),
                }
            },
            Some(
                "the units each request is admitted for (1 by default, 0 to only look), at most each policy's capacity",
            ),
        ),
        None => Some(1),
    };
    let settle_from = match &raw.settle_from {
        Some(text) => settle_from(raw, text, &names, diagnostics),
        None => Some(None),
    };
    Some(RouteConfig {
        matcher: matcher?,
        key: key?,
        policies: names,
        cost: cost?,
        settle_from: settle_from?,
        action: action?,
    })
}

/// `settle_from = "header:NAME"` on a route that forwards and is limited: the upstream's
/// response reports the cost there.
fn settle_from(
    raw: &RawRoute,
    text: &toml::Spanned<String>,
    policies: &[String],
    diagnostics: &mut Diagnostics<'_>,
) -> Option<Option<HeaderName>> {
    let header = parse_or(
        diagnostics,
        text,
        |text| match text.trim().split_once(':') {
            Some(("header", name)) => HeaderName::from_str(name.trim())
                .map_err(|_| format!("invalid header name {name:?} in settle_from {text:?}")),
            _ => Err(format!("settle_from {text:?} names no response header")),
        },
        Some(
            "\"header:NAME\", the upstream's response header with the actual cost, e.g. \"header:x-usage\"",
        ),
    )?;
    if raw.upstream.is_none() {
        diagnostics.error(
            Some(text.span()),
            "settle_from on a route that answers itself: no upstream reports a cost",
            Some("set upstream = \"http://host:port\", or remove settle_from".to_owned()),
        );
        return None;
    }
    if policies.is_empty() {
        diagnostics.error(
            Some(text.span()),
            "settle_from on a route without policies settles nothing",
            Some("name the policies the cost counts against in policies".to_owned()),
        );
        return None;
    }
    Some(Some(header))
}
