//! Shared test helpers: building requests, reading responses, parsing the RateLimit fields.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use http::{HeaderMap, Request, Response};
use http_body_util::BodyExt;
use serde_json::Value;
use sfv::{BareItem, List, ListEntry, Parser};

/// A GET of `uri` from `peer`, as axum records it with connect info.
pub(crate) fn get_from(uri: &str, peer: &str) -> Request<Body> {
    let mut request = Request::get(uri).body(Body::empty()).unwrap();
    let peer: SocketAddr = peer.parse().unwrap();
    request.extensions_mut().insert(ConnectInfo(peer));
    request
}

/// A request's cost from its `x-cost` header, 1 without one.
pub(crate) fn cost_from_header(request: &http::request::Parts) -> u64 {
    request
        .headers
        .get("x-cost")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(1)
}

/// The body as JSON.
pub(crate) async fn json_body<B>(response: Response<B>) -> Value
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

/// One item of a `RateLimit-Policy` or `RateLimit` list: the policy name, its integer
/// parameters and its quota unit, checked to be what the draft requires (a String, Integer
/// parameters, `qu` a String of the draft's units).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RateLimitItem {
    pub(crate) name: String,
    pub(crate) params: Vec<(String, i64)>,
    pub(crate) unit: Option<String>,
}

impl RateLimitItem {
    pub(crate) fn param(&self, key: &str) -> i64 {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("{self:?} has no {key}"))
    }
}

/// Parses a header as an RFC 9651 List of String items with Integer parameters.
pub(crate) fn parse_list(headers: &HeaderMap, name: &str) -> Vec<RateLimitItem> {
    let lines: Vec<&[u8]> = headers.get_all(name).iter().map(|v| v.as_bytes()).collect();
    assert_eq!(lines.len(), 1, "{name}: exactly one field line");
    let list: List = Parser::new(lines[0])
        .parse()
        .unwrap_or_else(|e| panic!("{name} is not an RFC 9651 List: {e:?}"));
    assert!(!list.is_empty());
    list.into_iter()
        .map(|entry| {
            let ListEntry::Item(item) = entry else {
                panic!("{name}: inner lists are not allowed");
            };
            let BareItem::String(policy) = &item.bare_item else {
                panic!(
                    "{name}: the item must be a String, got {:?}",
                    item.bare_item
                );
            };
            let mut unit = None;
            let params = item
                .params
                .iter()
                .filter_map(|(key, value)| {
                    if key.as_str() == "qu" {
                        let BareItem::String(text) = value else {
                            panic!("{name}: qu must be a String, got {value:?}");
                        };
                        let text = text.as_str();
                        assert!(
                            ["requests", "content-bytes", "concurrent-requests"].contains(&text),
                            "{name}: qu={text:?} is not a unit of the draft"
                        );
                        unit = Some(text.to_owned());
                        return None;
                    }
                    let BareItem::Integer(integer) = value else {
                        panic!("{name}: {key:?} must be an Integer, got {value:?}");
                    };
                    Some((key.as_str().to_owned(), i64::from(*integer)))
                })
                .collect();
            RateLimitItem {
                name: policy.as_str().to_owned(),
                params,
                unit,
            }
        })
        .collect()
}

/// Serves `router` on a free loopback port; the server lives as long as the test's runtime.
pub(crate) async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    address
}
