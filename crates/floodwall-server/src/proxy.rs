//! Forwarding allowed requests to an upstream: pooled HTTP/1 connections, bodies streamed both
//! ways, hop-by-hop headers removed, `X-Forwarded-For`, `Forwarded` and `Via` added. An
//! unreachable upstream is a 502 problem, a slow one a 504.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::error::ApiError;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::{IntoResponse, Response};
use http::header::{CONNECTION, CONTENT_LENGTH, FORWARDED, HOST, TRANSFER_ENCODING, VIA};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use http_body_util::BodyExt;

use crate::decision_log::{Admission, PerSecond};
use crate::pool::{UpstreamError, UpstreamPool};

/// Upstream bodies up to this size (by `Content-Length`) are buffered; larger ones stream.
const BUFFERED_BODY: usize = 64 * 1024;

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// Removes hop-by-hop headers, including those the `Connection` header names.
/// `Transfer-Encoding` is left to hyper, which re-frames the body itself.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

fn via() -> HeaderValue {
    HeaderValue::from_static("1.1 floodwall")
}

/// One route's upstream: where requests go and how long it may take to answer.
#[derive(Clone, Debug)]
pub(crate) struct Upstream {
    /// The upstream's connections, shared by every route to it.
    pub(crate) pool: UpstreamPool,
    pub(crate) timeout: Duration,
    /// Where it forwards to, for warnings.
    pub(crate) target: Uri,
    /// The route's label, for the warnings of failed forwards.
    pub(crate) route: Arc<str>,
    /// At most one such warning per second per route; the rest are counted in the next one.
    pub(crate) warnings: Arc<PerSecond>,
}

impl Upstream {
    /// Warns that a forward failed and the client got `status`, saying why.
    fn failed(&self, status: u16, cause: &dyn std::fmt::Display) {
        if let Admission::Admitted { dropped } = self.warnings.admit() {
            tracing::warn!(
                route = %self.route,
                upstream = %self.target,
                status,
                dropped,
                "upstream failed: {cause}"
            );
        }
    }
}

/// Forwards `request` to `upstream` and streams the answer back.
pub(crate) async fn forward(upstream: Upstream, request: Request) -> Result<Response, Infallible> {
    let timeout = upstream.timeout;
    let (mut parts, body) = request.into_parts();
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip());
    // Origin form: the upstream sees the path and query the client asked for.
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    parts.uri = Uri::from(path);
    let headers = &mut parts.headers;
    strip_hop_by_hop(headers);
    if let Some(peer) = peer {
        // Appended: whatever the client sent stays to the left, where no one should trust it.
        let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(earlier) => format!("{earlier}, {peer}"),
            None => peer.to_string(),
        };
        if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
            headers.insert("x-forwarded-for", value);
        }
        let node = match peer {
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) => format!("\"[{v6}]\""),
        };
        let mut element = format!("for={node};proto=http");
        if let Some(host) = headers.get(HOST).and_then(|h| h.to_str().ok())
            && host
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        {
            element.push_str(&format!(";host=\"{host}\""));
        }
        let forwarded = match headers.get(FORWARDED).and_then(|v| v.to_str().ok()) {
            Some(earlier) => format!("{earlier}, {element}"),
            None => element,
        };
        if let Ok(value) = HeaderValue::from_str(&forwarded) {
            headers.insert(FORWARDED, value);
        }
    }
    headers.append(VIA, via());
    let request = Request::from_parts(parts, body);
    match tokio::time::timeout(timeout, upstream.pool.send(request)).await {
        Ok(Ok(response)) => {
            let (mut parts, body) = response.into_parts();
            if parts.headers.contains_key(CONTENT_LENGTH)
                && parts.headers.contains_key(TRANSFER_ENCODING)
            {
                // Which of the two frames the body is ambiguous (a smuggling vector): refuse it.
                let detail = "the upstream's answer had both Content-Length and Transfer-Encoding";
                upstream.failed(502, &detail);
                return Ok(ApiError::BadGateway(detail).into_response());
            }
            strip_hop_by_hop(&mut parts.headers);
            // Re-framed by this service's own connection to the client.
            parts.headers.remove(TRANSFER_ENCODING);
            parts.headers.append(VIA, via());
            let small = parts
                .headers
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
                .is_some_and(|length| length <= BUFFERED_BODY);
            if small {
                // A small body is read whole and sent with the headers in one write: streaming it
                // would cost the client a second write and wake-up for a few bytes.
                return match body.collect().await {
                    Ok(collected) => Ok(Response::from_parts(
                        parts,
                        Body::from(collected.to_bytes()),
                    )),
                    Err(error) => {
                        upstream.failed(502, &format_args!("its answer broke off: {error}"));
                        Ok(ApiError::BadGateway("the upstream's answer broke off").into_response())
                    }
                };
            }
            Ok(Response::from_parts(parts, Body::new(body)))
        }
        // The client's body failed (malformed chunks, a stall, cut off): the client's fault.
        Ok(Err(UpstreamError::Http(error))) if error.is_user() => {
            Ok(ApiError::reading_body(&error).into_response())
        }
        Ok(Err(error)) => {
            upstream.failed(502, &format_args!("unreachable: {}", error_chain(&error)));
            Ok(ApiError::BadGateway("the upstream could not be reached").into_response())
        }
        Err(_) => {
            upstream.failed(
                504,
                &format_args!("no answer within upstream_timeout ({timeout:?})"),
            );
            Ok(ApiError::UpstreamTimeout(timeout).into_response())
        }
    }
}

/// An error and its sources on one line: hyper's own message ("client error (Connect)") says
/// little without the cause beneath it ("Connection refused").
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}
