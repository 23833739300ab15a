//! The floodgate service: `POST /v1/check` for any language or proxy, configured routes answered
//! behind rate limits, on the memory store or Redis.
//!
//! [`run`] is the one entry point: the binary calls it with its listener and a shutdown signal,
//! and tests call it with a listener on port 0.

pub mod config;

mod check;
mod routes;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use floodgate::{Limiter, MemoryStore, OnError, RedisConfig, RedisStore, Store, StoreError};
use serde_json::json;
use tokio::net::TcpListener;

use crate::check::CheckState;
pub use crate::check::MAX_CHECK_BODY;
use crate::config::Config;
use crate::routes::RouteTable;

/// Why the service could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The store could not be set up (an invalid or unreachable cluster URL, say).
    #[error("storage {url}: {source}")]
    Store {
        /// The configured URL.
        url: String,
        /// What failed.
        #[source]
        source: StoreError,
    },
    /// Serving failed.
    #[error("serving failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves `config` on `listener` until `shutdown` completes, then lets in-flight requests finish.
///
/// # Errors
///
/// [`ServeError`] when the store cannot be set up or the listener fails.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let config = Arc::new(config);
    if config.storage.url.starts_with("memory://") {
        let store = MemoryStore::builder()
            .max_keys(config.storage.max_keys)
            .build();
        let limiter = limiter(store, &config_on_error(&config));
        serve(config, limiter, listener, shutdown).await
    } else {
        let redis = RedisConfig::new(&config.storage.url)
            .prefix(&config.storage.prefix)
            .timeout(config.storage.timeout);
        let store = RedisStore::connect(redis)
            .await
            .map_err(|source| ServeError::Store {
                url: config.storage.url.clone(),
                source,
            })?;
        let limiter = limiter(store, &config_on_error(&config));
        serve(config, limiter, listener, shutdown).await
    }
}

fn config_on_error(config: &Config) -> OnError {
    config.storage.on_error
}

fn limiter<St: Store>(store: St, on_error: &OnError) -> Limiter<St> {
    Limiter::builder(store).on_error(*on_error).build()
}

/// The main listener's router on `limiter`.
pub(crate) fn app<St: Store>(config: Arc<Config>, limiter: Limiter<St>) -> Router {
    let check_state = Arc::new(CheckState {
        limiter: limiter.clone(),
        config: Arc::clone(&config),
        headers: config.server.headers,
    });
    let ready_state = Arc::clone(&check_state);
    let table = RouteTable::new(&config, &limiter);
    Router::new()
        .route(
            "/v1/check",
            post(check::check::<St>).with_state(check_state),
        )
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(move || ready(Arc::clone(&ready_state))))
        .fallback(routes::dispatch)
        .with_state(table)
}

/// Ready when a decision can be made: the store answers, or its failure is absorbed by
/// `on_error`. A store down under `deny` is not ready (503).
async fn ready<St: Store>(state: Arc<CheckState<St>>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Some(policy) = state.config.policies.first() else {
        return axum::Json(json!({ "status": "ready" })).into_response();
    };
    match state.limiter.peek(policy, b"floodgate:readyz").await {
        Ok(_) => axum::Json(json!({ "status": "ready" })).into_response(),
        Err(_) => {
            floodgate_http::problem::store_unavailable(std::slice::from_ref(policy)).into_response()
        }
    }
}

async fn serve<St: Store>(
    config: Arc<Config>,
    limiter: Limiter<St>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let app = app(config, limiter);
    tracing::info!(address = %listener.local_addr()?, "floodgate listening");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await?;
    Ok(())
}
