//! The floodwall service: `POST /v1/check` for any language or proxy, configured routes answered
//! behind rate limits, and an admin listener with `/metrics` and the limits API, on the memory
//! store or Redis.
//!
//! [`run`] is the one entry point: the binary calls it with its listeners and a shutdown signal,
//! and tests call it with listeners on port 0.

pub mod config;

mod admin;
mod auth;
mod check;
mod connections;
mod decision_log;
mod error;
mod framing;
mod health;
mod leases;
pub mod otlp;
mod path;
mod pool;
mod proxy;
mod rlqs;
mod rls;
mod routes;
mod serving;
mod settle;
mod telemetry;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{delete, get, post};
use floodwall::{Limiter, Storage, StoreError};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::check::CheckState;
pub use crate::check::{DecisionBody, MAX_CHECK_BODY, single_decision_body};
use crate::config::{Config, StorageSection};
use crate::error::ApiError;
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
    /// The store refused the credentials or their permissions (a wrong password, an ACL):
    /// retrying cannot help.
    #[error(
        "storage {url} refused access: {source}; check the password and the ACL user in [storage] url"
    )]
    StoreAccess {
        /// The configured URL, without its password.
        url: String,
        /// What the store answered.
        #[source]
        source: StoreError,
    },
    /// Serving failed.
    #[error("serving failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The sockets the service answers on.
#[derive(Debug)]
pub struct Listeners {
    /// Routes, `/v1/check`, `/healthz`, `/readyz`.
    pub main: TcpListener,
    /// `/metrics` and the limits API; never served on `main`.
    pub admin: Option<TcpListener>,
    /// The check API, when `[check] listen` moves it off `main`.
    pub check: Option<TcpListener>,
    /// Envoy's RateLimitService (gRPC), when `[rls]` is configured.
    pub rls: Option<TcpListener>,
    /// Envoy's RateLimitQuotaService (gRPC), when `[rlqs]` is configured.
    pub rlqs: Option<TcpListener>,
}

/// How many connections the kernel may queue on a listener before the service accepts them
/// (further capped by the system's `net.core.somaxconn`).
///
/// A burst of new connections larger than the queue is not refused: the kernel drops the last
/// handshake packets and the client, already connected on its side, waits for a retransmission
/// that can land after a shutdown has closed the listener, and is reset. A deep queue keeps
/// such bursts, and with them the requests sent before a stop, inside what the service drains.
pub const LISTEN_BACKLOG: u32 = 4096;

/// A listener on `address`, with address reuse (a restart need not wait out `TIME_WAIT`) and a
/// queue of [`LISTEN_BACKLOG`] connections.
///
/// # Errors
///
/// When the address cannot be bound (in use, not local, not permitted).
pub fn listen(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Counters per policy and minute for the top offenders (`GET /v1/offenders/{policy}` on the
/// admin listener): a key denied more than 1/64 of a minute's denials is always listed.
pub const OFFENDER_COUNTERS: usize = 64;

/// How long in-flight requests may take to finish after shutdown is asked for.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(4);

/// Serves `config` until `shutdown` completes, then lets in-flight requests finish (for at most
/// [`DRAIN_DEADLINE`]).
///
/// # Errors
///
/// [`ServeError`] when the store cannot be set up or a listener fails.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let (_unchanging, configs) = watch::channel(config);
    run_reloadable(configs, listeners, shutdown).await
}

/// As [`run`], applying each configuration sent on `configs` atomically: requests see either the
/// old routes and policies or the new ones. The store is kept, so counters of unchanged policies
/// carry over and a changed limit applies to the counts so far. `[storage]` and the listeners
/// are read once; changing them needs a restart (a reload says so in the log).
///
/// # Errors
///
/// As [`run`].
pub async fn run_reloadable(
    configs: watch::Receiver<Config>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    // The recorder must exist before layers register their counters.
    let _ = telemetry::prometheus();
    let storage = configs.borrow().storage.clone();
    let limiter = limiter(&storage).await?;
    health::check_at_start(&limiter, &storage.url())
        .await
        .map_err(|source| ServeError::StoreAccess {
            url: storage.url(),
            source,
        })?;
    serving::serve(configs, limiter, listeners, shutdown).await
}

/// The limiter `[storage]` describes: its store, connected (a single Redis node lazily), and
/// its `on_error`. The service and `floodwall check` both decide through it.
///
/// # Errors
///
/// [`ServeError::Store`] when the store cannot be set up (an unreachable cluster, say).
pub async fn limiter(storage: &StorageSection) -> Result<Limiter, ServeError> {
    let store = Storage::connect(storage.store.clone())
        .await
        .map_err(|source| ServeError::Store {
            url: storage.url(),
            source,
        })?;
    Ok(Limiter::builder(store)
        .on_error(storage.on_error)
        .track_offenders(OFFENDER_COUNTERS)
        .build())
}

/// The main listener's router for `config`, deciding with `limiter`: routes, `/v1/check`,
/// `/healthz` and `/readyz`. Requests must carry the peer's address as axum's
/// `ConnectInfo<SocketAddr>` extension (the service's connections add it), which `ip` keys read.
///
/// `/v1/check` is on it unless `[check]` disables it or moves it to [`check_app`].
///
/// The configuration's `[access]` lists replace the limiter's configured ones.
pub fn app(config: Arc<Config>, limiter: Limiter) -> Router {
    limiter.configure_lists(config.access.clone());
    let check_state = Arc::new(CheckState::new(limiter.clone(), Arc::clone(&config)));
    let ready_state = Arc::clone(&check_state);
    let table = RouteTable::new(&config, &limiter);
    let mut router = Router::new();
    if config.check.enabled && config.check.listen.is_none() {
        router = router.merge(check_routes(check_state));
    }
    router
        .route("/healthz", get(healthz).fallback(only("GET, HEAD")))
        .route(
            "/readyz",
            get(move || ready(Arc::clone(&ready_state))).fallback(only("GET, HEAD")),
        )
        .fallback(routes::dispatch)
        .with_state(table)
}

/// The router of `[check] listen`: `/v1/check` and `/healthz`.
pub fn check_app(config: Arc<Config>, limiter: Limiter) -> Router {
    let check_state = Arc::new(CheckState::new(limiter, config));
    check_routes(check_state)
        .route("/healthz", get(healthz).fallback(only("GET, HEAD")))
        .fallback(no_route)
}

/// The check API: `POST /v1/check`, `POST /v1/leases` and `DELETE /v1/leases/{id}`.
fn check_routes<S: Clone + Send + Sync + 'static>(state: Arc<CheckState>) -> Router<S> {
    Router::new()
        .route(
            "/v1/check",
            post(check::check)
                .with_state(Arc::clone(&state))
                .fallback(only("POST")),
        )
        .route(
            "/v1/settle",
            post(settle::settle)
                .with_state(Arc::clone(&state))
                .fallback(only("POST")),
        )
        .route(
            "/v1/leases",
            post(leases::acquire)
                .with_state(Arc::clone(&state))
                .fallback(only("POST")),
        )
        .route(
            "/v1/leases/{id}",
            delete(leases::release)
                .with_state(state)
                .fallback(only("DELETE")),
        )
}

/// A 405 problem naming the methods `allow`ed, for the methods a route does not serve.
pub(crate) fn only(
    allow: &'static str,
) -> impl Fn(http::Method) -> std::future::Ready<ApiError> + Clone + Send + Sync + 'static {
    move |method| std::future::ready(ApiError::MethodNotAllowed { method, allow })
}

/// The 404 problem of a router with nothing at the path.
pub(crate) async fn no_route(method: http::Method, uri: http::Uri) -> ApiError {
    ApiError::NoRoute {
        method,
        path: uri.path().to_owned(),
    }
}

async fn healthz() -> axum::Json<serde_json::Value> {
    axum::Json(json!({ "status": "ok" }))
}

/// Ready when a decision can be made: the store answers, or every policy absorbs its failure
/// by `on_error`. A store down while some policy fails closed is not ready (503).
async fn ready(state: Arc<CheckState>) -> axum::response::Response {
    health::ready(&state.limiter, &state.config).await
}
