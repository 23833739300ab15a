//! A hanging Redis behind the layer (G6): each request is answered within the store's deadline
//! (then at once, by the breaker), per the policy's `on_error`.

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use floodwall::{Algorithm, Limiter, OnError, Policy, RedisConfig, RedisStore};
use floodwall_http::{RateLimitLayer, TEMPORARY_REDUCED_CAPACITY};
use floodwall_testkit::RedisServer;
use http::StatusCode;
use tokio::time::Instant;
use tower::ServiceExt;

use crate::support::{get_from, json_body};

const DEADLINE: Duration = Duration::from_millis(50);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_store_is_answered_per_on_error_within_the_deadline() {
    let server = RedisServer::start().unwrap();
    let store = RedisStore::connect(RedisConfig::new(server.url()).timeout(DEADLINE))
        .await
        .unwrap();
    let limiter = Limiter::new(store);
    let policy = |name: &str, on_error| {
        Policy::new(name, Algorithm::Gcra, 100, Duration::from_secs(60))
            .unwrap()
            .with_on_error(on_error)
    };
    let app = Router::new()
        .route("/login", get(|| async { "in" }))
        .route_layer(RateLimitLayer::new(
            limiter.clone(),
            policy("login", OnError::Deny),
        ))
        .merge(
            Router::new()
                .route("/read", get(|| async { "data" }))
                .route_layer(RateLimitLayer::new(limiter, policy("read", OnError::Allow))),
        );
    // Warm: connected, script cached.
    let warm = app
        .clone()
        .oneshot(get_from("/read", "192.0.2.1:1"))
        .await
        .unwrap();
    assert_eq!(warm.status(), StatusCode::OK);

    server.pause().unwrap();
    let mut slowest = Duration::ZERO;
    for round in 0..20 {
        for (path, expected) in [
            ("/login", StatusCode::SERVICE_UNAVAILABLE),
            ("/read", StatusCode::OK),
        ] {
            let started = Instant::now();
            let response = app
                .clone()
                .oneshot(get_from(path, "192.0.2.1:1"))
                .await
                .unwrap();
            slowest = slowest.max(started.elapsed());
            assert_eq!(response.status(), expected, "{path} in round {round}");
            if expected == StatusCode::SERVICE_UNAVAILABLE {
                assert_eq!(response.headers()["retry-after"], "1");
                let body = json_body(response).await;
                assert_eq!(body["type"], TEMPORARY_REDUCED_CAPACITY);
                assert_eq!(body["violated-policies"], serde_json::json!(["login"]));
            }
        }
    }
    server.resume().unwrap();
    eprintln!("slowest answer while Redis hung: {slowest:?}");
    // Within the deadline plus scheduling slack on a loaded two-core machine (a debug build);
    // without a deadline the first request would hang for as long as Redis is stopped.
    assert!(
        slowest < DEADLINE + Duration::from_millis(25),
        "slowest {slowest:?}"
    );
}
