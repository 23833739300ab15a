//! What the HTTP glue of the package needs from `floodwall-http`, so that Flask and ASGI apps
//! answer exactly as the Rust layer does: the client-IP walk, the rate-limit headers, the 429 and
//! the 503.

use std::net::IpAddr;
use std::str::FromStr;

use bytes::Bytes;
use floodwall::Policy;
use floodwall_http::key::{ClientIp, ForwardedHeader};
use floodwall_http::{HeaderMode, RateLimitHeaders, problem};
use http::{HeaderMap, HeaderName, HeaderValue, Response};
use http_body_util::Full;
use ipnet::IpNet;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::decision::PyVerdict;
use crate::errors::ConfigError;
use crate::policy::PyPolicy;

/// (status, headers, body) of an HTTP answer.
pub(crate) type HttpAnswer = (u16, Vec<(String, String)>, Py<PyBytes>);

/// The client address of a request, as the Rust layer's `ClientIp` key finds it: the TCP peer,
/// unless the peer is a trusted proxy; then the rightmost untrusted entry of the forwarding
/// header. IPv6 clients are grouped by /64 unless told otherwise.
#[pyclass(frozen, name = "ClientIp", module = "floodwall._native")]
#[derive(Debug)]
pub(crate) struct PyClientIp {
    inner: ClientIp,
    header: &'static str,
}

#[pymethods]
impl PyClientIp {
    #[new]
    #[pyo3(signature = (trusted_proxies = Vec::new(), *, header = "x-forwarded-for", ipv6_prefix = 64, ipv4_prefix = 32))]
    fn new(
        trusted_proxies: Vec<String>,
        header: &str,
        ipv6_prefix: u8,
        ipv4_prefix: u8,
    ) -> PyResult<Self> {
        let mut networks = Vec::with_capacity(trusted_proxies.len());
        for proxy in &trusted_proxies {
            networks.push(network(proxy)?);
        }
        let (forwarded, header) = match header.to_ascii_lowercase().as_str() {
            "x-forwarded-for" => (ForwardedHeader::XForwardedFor, "x-forwarded-for"),
            "forwarded" => (ForwardedHeader::Forwarded, "forwarded"),
            other => {
                return Err(ConfigError::new_err(format!(
                    "unknown forwarding header {other:?}: expected \"x-forwarded-for\" or \"forwarded\""
                )));
            }
        };
        Ok(PyClientIp {
            inner: ClientIp::new()
                .trusted_proxies(networks)
                .header(forwarded)
                .ipv6_prefix(ipv6_prefix)
                .ipv4_prefix(ipv4_prefix),
            header,
        })
    }

    /// The name of the forwarding header read behind trusted proxies, lower case.
    #[getter]
    fn header(&self) -> &'static str {
        self.header
    }

    /// The client key of a request from `peer` carrying `forwarded` (the values of the
    /// forwarding header, in order). A peer that is not an IP address (a Unix socket, None) is
    /// keyed as "unknown"; a malformed header value ends the walk, as in the Rust layer.
    #[pyo3(signature = (peer, forwarded = Vec::new()))]
    fn key(&self, peer: Option<&str>, forwarded: Vec<Vec<u8>>) -> String {
        let Some(peer) = peer.and_then(|p| IpAddr::from_str(p).ok()) else {
            return "unknown".to_owned();
        };
        let mut headers = HeaderMap::new();
        let name = HeaderName::from_static(self.header);
        // The walk reads at most a bounded number of entries, so many lines cost no more.
        for value in forwarded.iter().take(64) {
            let value = HeaderValue::from_bytes(value)
                .unwrap_or_else(|_| HeaderValue::from_static("_malformed"));
            headers.append(name.clone(), value);
        }
        self.inner.key_for(self.inner.resolve(peer, &headers))
    }
}

/// A network or a single address, as `trusted_proxies` takes them.
fn network(text: &str) -> PyResult<IpNet> {
    if let Ok(network) = IpNet::from_str(text) {
        return Ok(network);
    }
    IpAddr::from_str(text).map(IpNet::from).map_err(|_| {
        ConfigError::new_err(format!(
            "trusted proxy {text:?} is neither an address nor a network: write e.g. \"10.0.0.0/8\" or \"192.0.2.7\""
        ))
    })
}

fn header_mode(mode: &str) -> PyResult<HeaderMode> {
    match mode {
        "draft" => Ok(HeaderMode::Draft),
        "legacy" => Ok(HeaderMode::Legacy),
        "both" => Ok(HeaderMode::Both),
        "none" => Ok(HeaderMode::None),
        other => Err(ConfigError::new_err(format!(
            "unknown headers mode {other:?}: expected \"draft\", \"legacy\", \"both\" or \"none\""
        ))),
    }
}

/// The rate-limit headers of one set of policies, prepared once (a Flask view's limits, an ASGI
/// middleware's defaults): for each verdict, exactly what `Verdict.headers` and
/// `Verdict.denial` give, at less cost per request. A verdict on other policies gets headers
/// of its own policies, as it would from `Verdict.headers`.
#[pyclass(frozen, name = "RateLimitHeaders", module = "floodwall._native")]
#[derive(Debug)]
pub(crate) struct PyRateLimitHeaders {
    headers: RateLimitHeaders,
}

#[pymethods]
impl PyRateLimitHeaders {
    #[new]
    #[pyo3(signature = (policies, mode = "draft"))]
    fn new(policies: Vec<PyRef<'_, PyPolicy>>, mode: &str) -> PyResult<Self> {
        let policies: Vec<Policy> = policies.iter().map(|p| p.inner.clone()).collect();
        Self::for_policies(&policies, mode)
    }

    /// The headers of `verdict` as (name, value) text pairs, for WSGI.
    fn of(&self, verdict: &PyVerdict) -> Vec<(String, String)> {
        pairs(&self.map(verdict))
    }

    /// The headers of `verdict` as (name, value) byte pairs, for ASGI.
    fn raw(&self, py: Python<'_>, verdict: &PyVerdict) -> Vec<(Py<PyBytes>, Py<PyBytes>)> {
        self.map(verdict)
            .iter()
            .map(|(name, value)| {
                (
                    PyBytes::new(py, name.as_str().as_bytes()).unbind(),
                    PyBytes::new(py, value.as_bytes()).unbind(),
                )
            })
            .collect()
    }

    /// The whole 429 answer to `verdict`: (status, headers, problem+json body).
    fn denial(&self, py: Python<'_>, verdict: &PyVerdict) -> HttpAnswer {
        http_answer(py, problem::denied(&verdict.verdict, &self.headers))
    }
}

impl PyRateLimitHeaders {
    /// Headers prepared for `policies`, in `mode`.
    fn for_policies(policies: &[Policy], mode: &str) -> PyResult<Self> {
        Ok(PyRateLimitHeaders {
            headers: RateLimitHeaders::new(header_mode(mode)?, policies),
        })
    }

    fn map(&self, verdict: &PyVerdict) -> HeaderMap {
        let mut map = HeaderMap::new();
        self.headers.write(&mut map, &verdict.verdict);
        map
    }
}

fn pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}

pub(crate) fn verdict_headers(verdict: &PyVerdict, mode: &str) -> PyResult<Vec<(String, String)>> {
    Ok(PyRateLimitHeaders::for_policies(verdict.verdict.policies(), mode)?.of(verdict))
}

pub(crate) fn denial(py: Python<'_>, verdict: &PyVerdict, mode: &str) -> PyResult<HttpAnswer> {
    Ok(PyRateLimitHeaders::for_policies(verdict.verdict.policies(), mode)?.denial(py, verdict))
}

/// The 503 problem answer of a store outage under policies that fail closed, as the Rust layer
/// sends it: (status, headers, body).
#[pyfunction]
pub(crate) fn store_unavailable(py: Python<'_>, policies: Vec<PyRef<'_, PyPolicy>>) -> HttpAnswer {
    let policies: Vec<&Policy> = policies.iter().map(|p| &p.inner).collect();
    http_answer(py, problem::store_unavailable(policies))
}

/// The 401 problem answer of a request that lacks the client key its limit is keyed by, as the
/// Rust layer sends it.
#[pyfunction]
pub(crate) fn missing_key(py: Python<'_>, detail: &str) -> HttpAnswer {
    http_answer(py, problem::missing_key(detail))
}

/// The 422 problem answer of a cost no policy can admit, as the Rust layer sends it.
#[pyfunction]
pub(crate) fn impossible_cost(py: Python<'_>, detail: &str) -> HttpAnswer {
    http_answer(py, problem::impossible_cost(detail))
}

fn http_answer(py: Python<'_>, response: Response<Full<Bytes>>) -> HttpAnswer {
    let (parts, body) = response.into_parts();
    let body = body_bytes(body);
    (
        parts.status.as_u16(),
        pairs(&parts.headers),
        PyBytes::new(py, &body).unbind(),
    )
}

/// The bytes of a complete body, which is ready at once.
fn body_bytes(body: Full<Bytes>) -> Bytes {
    use http_body_util::BodyExt;
    use std::task::{Context, Poll, Waker};
    let mut collect = std::pin::pin!(body.collect());
    match collect
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(Ok(collected)) => collected.to_bytes(),
        // `Full` is one frame, ready at once, and cannot fail.
        Poll::Ready(Err(never)) => match never {},
        Poll::Pending => Bytes::new(),
    }
}
