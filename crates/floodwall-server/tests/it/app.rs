//! The main router in process, one request at a time with `oneshot` (no socket), and `run` on
//! port 0: its connection bound and its clean stop.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use floodwall::{Limiter, MemoryStore};
use floodwall_server::app;
use floodwall_server::config::Config;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use crate::in_process::Service;

const CONFIG: &str = r#"
[[policy]]
name = "two"
algorithm = "gcra"
limit = 2
period = "1h"

[[policy]]
name = "daily"
algorithm = "fixed_window"
limit = 100
period = "1d"

[[route]]
match = "GET /hello"
key = "ip"
policies = ["two"]
respond = { status = 200, json = { message = "Hello, World!" } }
"#;

fn router() -> axum::Router {
    let config = Config::parse(CONFIG, Path::new("app.toml")).unwrap();
    app(Arc::new(config), Limiter::new(MemoryStore::new()))
}

/// One request through `router`, from 192.0.2.1; the status and the body as JSON (null when it
/// is not JSON).
async fn ask(router: &axum::Router, method: &str, path: &str, body: &str) -> (StatusCode, Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .body(Body::from(body.to_owned()))
        .unwrap();
    let peer: SocketAddr = "192.0.2.1:4000".parse().unwrap();
    request.extensions_mut().insert(ConnectInfo(peer));
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response.headers().get("content-type").cloned();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    // Every error is a problem; a check API denial is a decision, in the check API's own body.
    let decision = path == "/v1/check" && status == StatusCode::TOO_MANY_REQUESTS;
    if (status.is_client_error() || status.is_server_error()) && !decision {
        assert_eq!(
            content_type.unwrap(),
            "application/problem+json",
            "{status}"
        );
    }
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn the_router_answers_checks_routes_and_problems_in_process() {
    let router = router();
    let check = |body: &'static str| {
        let router = router.clone();
        async move { ask(&router, "POST", "/v1/check", body).await }
    };
    let (status, body) = check(r#"{"policy": "two", "key": "a"}"#).await;
    assert_eq!(
        (status, body["remaining"].clone()),
        (StatusCode::OK, 1.into())
    );

    let (status, body) = check(r#"{"policies": ["two", "daily"], "key": "a", "cost": 1}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["decisions"][1]["policy"], "daily");
    let (status, body) = check(r#"{"policy": "two", "key": "a"}"#).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(body["retry_after_ms"].as_u64().unwrap() > 0);

    // A mistake is a problem here too; the whole matrix of mistakes is the check API test's.
    let (status, problem) = check(r#"{"policy": "nope", "key": "a"}"#).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("defined: two, daily")
    );

    // Routes: keyed by the peer address the connection recorded.
    for expected in [
        StatusCode::OK,
        StatusCode::OK,
        StatusCode::TOO_MANY_REQUESTS,
    ] {
        assert_eq!(ask(&router, "GET", "/hello", "").await.0, expected);
    }
    let (status, problem) = ask(&router, "GET", "/elsewhere?secret=1", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(problem["detail"], "no route matches GET /elsewhere");
    assert_eq!(ask(&router, "GET", "/healthz", "").await.0, StatusCode::OK);
    assert_eq!(ask(&router, "GET", "/readyz", "").await.0, StatusCode::OK);
}

/// `[server] max_connections` bounds the open connections of a listener: past it, a new
/// connection waits while every open one has a request in flight, takes the place of one that
/// has none, and the service stops cleanly all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_keeps_at_most_max_connections_open() {
    use tokio::io::AsyncWriteExt;

    let service = Service::start(&format!("[server]\nmax_connections = 3\n{CONFIG}")).await;
    // Three requests in flight: each check's body is announced and never finished.
    let mut busy = Vec::new();
    for _ in 0..3 {
        let mut stream = tokio::net::TcpStream::connect(service.address)
            .await
            .unwrap();
        stream
            .write_all(b"POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{")
            .await
            .unwrap();
        busy.push(stream);
    }
    // Give the listener the moment it needs to take all three.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let waiting = client.get(service.url("/healthz")).send().await;
    assert!(
        waiting.as_ref().is_err_and(reqwest::Error::is_timeout),
        "a fourth connection was served: {waiting:?}"
    );
    drop(busy.pop());
    let served = client.get(service.url("/healthz")).send().await.unwrap();
    assert_eq!(served.status(), StatusCode::OK);
    // The client's keep-alive connection now waits with no request; a new client takes its
    // place instead of waiting.
    let other = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let served = other.get(service.url("/healthz")).send().await.unwrap();
    assert_eq!(served.status(), StatusCode::OK);
    drop(busy);
    service.stop().await.unwrap();
}
