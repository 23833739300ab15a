//! The classic rate-limited "Hello, World!" API, as a Rust service.
//!
//! ```text
//! cargo run -p floodwall-http --example hello_api                    # memory store, 127.0.0.1:3000
//! REDIS_URL=redis://127.0.0.1:6379 cargo run -p floodwall-http --example hello_api
//! LISTEN=127.0.0.1:3001 REDIS_URL=redis://127.0.0.1:6379 cargo run -p floodwall-http --example hello_api
//! ```
//!
//! - `GET /`: `{"message": "Hello, World!"}`, 10 requests per minute per client IP, 429 after.
//! - `GET /api`: per API key (`X-API-Key` header), a token bucket of 10 refilled at 2 per second.
//! - `GET /status`: 100 requests per second for everyone together (one global fixed window).
//!
//! With `REDIS_URL`, every copy of this program pointed at the same Redis shares the limits.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::Json;
use axum::routing::get;
use floodwall::{Algorithm, Limiter, Policy, Storage, StorageConfig};
use floodwall_http::RateLimitLayer;
use floodwall_http::key::{Global, Header};
use http::HeaderName;
use serde_json::{Value, json};

/// The demo's routes, each behind its own limit, on `limiter`'s store.
pub(crate) fn app(limiter: Limiter) -> Result<Router, floodwall::PolicyError> {
    let per_ip = Policy::new(
        "per-ip",
        Algorithm::SlidingWindow,
        10,
        Duration::from_secs(60),
    )?;
    let per_key = Policy::new("per-key", Algorithm::TokenBucket, 2, Duration::from_secs(1))?
        .with_burst(10)?;
    let global = Policy::new(
        "global",
        Algorithm::FixedWindow,
        100,
        Duration::from_secs(1),
    )?;

    let home = Router::new()
        .route("/", get(hello))
        .route_layer(RateLimitLayer::new(limiter.clone(), per_ip));
    let api = Router::new().route("/api", get(hello)).route_layer(
        RateLimitLayer::builder(limiter.clone(), per_key)
            .key(Header::new(HeaderName::from_static("x-api-key")))
            .build(),
    );
    let status = Router::new()
        .route("/status", get(status))
        .route_layer(RateLimitLayer::builder(limiter, global).key(Global).build());
    Ok(home.merge(api).merge(status))
}

async fn hello() -> Json<Value> {
    Json(json!({ "message": "Hello, World!" }))
}

async fn status() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listen: SocketAddr = std::env::var("LISTEN")
        .unwrap_or_else(|_| "127.0.0.1:3000".into())
        .parse()?;
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| StorageConfig::MEMORY_URL.to_owned());
    match url.as_str() {
        StorageConfig::MEMORY_URL => {
            println!("hello_api: limits in this process (set REDIS_URL to share them)")
        }
        url => println!("hello_api: limits shared through {url}"),
    }
    let store = Storage::connect(StorageConfig::from_url(&url)?).await?;
    let router = app(Limiter::new(store))?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("hello_api: listening on http://{}", listener.local_addr()?);
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
