//! Routes see the path after dot segments and unreserved escapes resolve: a path cannot borrow
//! a looser route's limit or reach an upstream path no route takes. Requests are written by
//! hand, since HTTP clients normalise paths themselves.

use std::net::SocketAddr;

use axum::Router;
use http::Uri;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::in_process::Service;

/// An upstream that answers every request with the path and query it received (and the
/// `Host`, on `/public/host`).
pub(crate) async fn echo_upstream() -> SocketAddr {
    let app = Router::new().fallback(|uri: Uri, headers: http::HeaderMap| async move {
        match uri.path() {
            "/public/host" => format!("upstream saw host {:?}", headers.get("host")),
            _ => format!("upstream saw {uri}"),
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    address
}

/// Sends `head` (a request line and headers, without the blank line) and returns the status
/// and body of the answer.
pub(crate) async fn raw(service: SocketAddr, head: &str) -> (u16, String) {
    raw_with_body(service, head, "").await
}

/// As [`raw`], with `body` after the blank line, written as given.
pub(crate) async fn raw_with_body(service: SocketAddr, head: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(service).await.unwrap();
    let request = format!("{head}\r\nConnection: close\r\n\r\n{body}");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer[9..12].parse().unwrap();
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

pub(crate) async fn service() -> Service {
    let up = echo_upstream().await;
    Service::start(&format!(
        r#"
[[policy]]
name = "loose"
algorithm = "fixed_window"
limit = 1000
period = "1h"

[[policy]]
name = "login"
algorithm = "fixed_window"
limit = 3
period = "1h"

[[route]]
match = "POST /login"
key = "ip"
policies = ["login"]
respond = {{ status = 200, json = {{ ok = true }} }}

[[route]]
match = "* /public/*"
key = "ip"
policies = ["loose"]
upstream = "http://{up}"

[[route]]
match = "GET /keyed"
key = "header:x-api-key"
policies = ["loose"]
upstream = "http://{up}"

[[route]]
match = "GET /by-query"
key = "query:k"
policies = ["loose"]
upstream = "http://{up}"
"#
    ))
    .await
}

#[tokio::test]
async fn a_path_climbing_out_of_a_route_is_matched_where_it_lands() {
    let service = service().await;
    let host = "Host: x";
    // Every spelling of /public/../admin lands on /admin, which no route takes: nothing is
    // forwarded.
    for path in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2e/admin",
        "/public/./../admin",
        "/public/.%2e/admin",
        "//public/../admin",
    ] {
        let (status, body) = raw(service.address, &format!("GET {path} HTTP/1.1\r\n{host}")).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(
            body.contains("no route matches GET /admin"),
            "{path}: {body}"
        );
    }
    // What a route forwards is the path it was matched on.
    let (status, body) = raw(
        service.address,
        &format!("GET /public/./a/../b%7e?x=1 HTTP/1.1\r\n{host}"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body, "upstream saw /public/b~?x=1");
    // Paths no route can be chosen for are refused as problems.
    for path in [
        "/public/..%2fadmin",
        "/public/..%2Fadmin",
        "/public/..%5cadmin",
        "/../admin",
        "/public/../../admin",
        "/public/a%00b",
    ] {
        let (status, body) = raw(service.address, &format!("GET {path} HTTP/1.1\r\n{host}")).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains("\"Bad path\""), "{path}: {body}");
    }
}

#[tokio::test]
async fn a_path_cannot_borrow_a_looser_routes_limit() {
    let service = service().await;
    let mut statuses = Vec::new();
    for path in [
        "/public/../login",
        "/login",
        "/public/%2e%2e/login",
        "/./login",
    ] {
        let (status, _) = raw(
            service.address,
            &format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0"),
        )
        .await;
        statuses.push(status);
    }
    // All four are POST /login, limited to three an hour.
    assert_eq!(statuses, [200, 200, 200, 429]);
}

#[tokio::test]
async fn an_ambiguous_identity_or_host_is_refused() {
    let service = service().await;
    let (status, body) = raw(
        service.address,
        "GET /keyed HTTP/1.1\r\nHost: x\r\nx-api-key: alice\r\nx-api-key: bob",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("x-api-key header must appear at most once"),
        "{body}"
    );
    let (status, body) = raw(service.address, "GET /by-query?k=a&k=b HTTP/1.1\r\nHost: x").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("query parameter k"), "{body}");
    let (status, body) = raw(
        service.address,
        "GET /public/x HTTP/1.1\r\nHost: a\r\nHost: b",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("Host header"), "{body}");
    // One of each is served.
    let (status, _) = raw(
        service.address,
        "GET /keyed HTTP/1.1\r\nHost: x\r\nx-api-key: alice",
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = raw(service.address, "GET /by-query?k=a HTTP/1.1\r\nHost: x").await;
    assert_eq!(status, 200);
}
