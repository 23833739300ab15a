//! The Hello-API route with and without the rate-limit layer, for `bench/http.sh`: the layer's
//! cost per request when the limit is never reached.
//!
//! ```text
//! MODE=none|memory|redis [REDIS_URL=redis://…] LISTEN=127.0.0.1:3100 \
//!     cargo run --release -p floodwall-http --example overhead
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::Json;
use axum::routing::get;
use floodwall::{Algorithm, Limiter, Policy, Storage, StorageConfig};
use floodwall_http::RateLimitLayer;
use serde_json::{Value, json};

async fn hello() -> Json<Value> {
    Json(json!({ "message": "Hello, World!" }))
}

fn limited(limiter: Limiter) -> Result<Router, floodwall::PolicyError> {
    // Per client IP, far above what one machine can send: every request is allowed and counted.
    let policy = Policy::new(
        "per-ip",
        Algorithm::Gcra,
        1_000_000_000,
        Duration::from_secs(1),
    )?;
    Ok(Router::new()
        .route("/", get(hello))
        .route_layer(RateLimitLayer::new(limiter, policy)))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listen: SocketAddr = std::env::var("LISTEN")
        .unwrap_or_else(|_| "127.0.0.1:3100".into())
        .parse()?;
    let mode = std::env::var("MODE").unwrap_or_else(|_| "memory".into());
    let router = match mode.as_str() {
        "none" => Router::new().route("/", get(hello)),
        "memory" | "redis" => {
            let url = match mode.as_str() {
                "redis" => std::env::var("REDIS_URL")?,
                _ => StorageConfig::MEMORY_URL.to_owned(),
            };
            let store = Storage::connect(StorageConfig::from_url(&url)?).await?;
            limited(Limiter::new(store))?
        }
        other => return Err(format!("MODE must be none, memory or redis, not {other:?}").into()),
    };
    let listener = tokio::net::TcpListener::bind(listen).await?;
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
