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
mod path;
mod pool;
mod proxy;
mod rls;
mod routes;
mod telemetry;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::Router;
use axum::routing::{delete, get, post};
use floodwall::{Limiter, Policy, Storage, StoreError};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::check::CheckState;
pub use crate::check::{DecisionBody, MAX_CHECK_BODY, single_decision_body};
use crate::config::{Config, StorageConfig};
use crate::connections::{ConnectionLimits, RouterSource};
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

/// How much longer than the main listener the admin, check and RLS listeners may drain.
const SIDE_GRACE: Duration = Duration::from_millis(100);

/// How long a stopping service waits for the units its unfinished requests held to reach the
/// store.
const SETTLE_WITHIN: Duration = Duration::from_secs(2);

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
    serve(configs, limiter, listeners, shutdown).await
}

/// The limiter `[storage]` describes: its store, connected (a single Redis node lazily), and
/// its `on_error`. The service and `floodwall check` both decide through it.
///
/// # Errors
///
/// [`ServeError::Store`] when the store cannot be set up (an unreachable cluster, say).
pub async fn limiter(storage: &StorageConfig) -> Result<Limiter, ServeError> {
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

/// The router of `current` that is live when each request arrives (a reload swaps it whole).
fn live(current: Arc<RwLock<Router>>) -> RouterSource {
    Arc::new(move || {
        current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    })
}

/// Logs what is being served, from where, on what, and warns of an exposed check API.
fn announce(config: &Config, main: &ConnectionLimits) {
    for warning in config.warnings() {
        tracing::warn!(config = %config.file.display(), "{warning}");
    }
    let policies: Vec<String> = config.policies.iter().map(Policy::to_string).collect();
    let check = match (config.check.enabled, config.check.listen) {
        (false, _) => "off".to_owned(),
        (true, None) => format!("on {}", config.server.listen),
        (true, Some(listen)) => format!("on {listen}"),
    };
    tracing::info!(
        config = %config.file.display(),
        store = %config.storage.url(),
        on_error = config.storage.on_error.as_str(),
        policies = %policies.join(", "),
        routes = config.routes.len(),
        check_api = %check,
        admin = %config.admin.as_ref().map_or("off".to_owned(), |a| a.listen.to_string()),
        max_connections = main.max_connections,
        "floodwall starting"
    );
    if config.check.enabled
        && config.check.listen.is_none()
        && config.check.token.is_none()
        && !config.routes.is_empty()
    {
        tracing::warn!(
            "the check API (POST /v1/check) shares the listener of {} routes and needs no token: any client that reaches a route can read and spend any key's quota; set [check] token_env, move it with [check] listen, or turn it off with [check] enabled = false",
            config.routes.len()
        );
    }
}

/// Serves until `shutdown` completes, then drains.
///
/// Who owns what: every task this function starts is in `tasks` and is aborted when it returns,
/// however it returns, so a service stopped in a test leaves nothing running:
/// - the shutdown watcher turns `shutdown` into the `stopped` signal every other part waits on;
/// - metrics upkeep folds histogram samples into buckets every few seconds;
/// - on Redis, the outage log records the store going down and coming back;
/// - the reloader swaps the live router (and the admin listener's configuration) whole on each
///   new configuration from `configs`;
/// - the admin server drains on `stopped` and gets a short grace period after the main one.
///
/// The main server runs on the caller's task. Connections are hyper's, one task each, with the
/// header, idle and body deadlines of `[server]`, told to finish on `stopped`; each listener
/// keeps at most `[server] max_connections` of them open, fewer if the file descriptor limit
/// (raised to its hard limit here) would not hold them.
async fn serve(
    mut configs: watch::Receiver<Config>,
    limiter: Limiter,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let config = Arc::new(configs.borrow_and_update().clone());
    let fd_limit = connections::raise_fd_limit();
    let proxies = config
        .routes
        .iter()
        .any(|route| matches!(route.action, config::RouteAction::Upstream { .. }));
    let limits = |share: (u64, u64), fds_per_connection: u64, listener: &str| {
        let server = &config.server;
        let fit =
            connections::fit_to_fds(server.max_connections, fd_limit, share, fds_per_connection);
        if fit < server.max_connections {
            tracing::warn!(
                listener,
                max_connections = fit,
                configured = server.max_connections,
                fd_limit = fd_limit.unwrap_or_default(),
                "max_connections lowered to fit the file descriptor limit; raise the limit (LimitNOFILE, ulimit -n) to allow more"
            );
        }
        ConnectionLimits {
            max_connections: fit,
            header_timeout: server.header_timeout,
            idle_timeout: server.idle_timeout,
            body_timeout: server.body_timeout,
            max_header_bytes: server.max_header_bytes,
        }
    };
    let main_limits = limits((3, 4), if proxies { 2 } else { 1 }, "main");
    let side_limits =
        match listeners.admin.is_some() || listeners.check.is_some() || listeners.rls.is_some() {
            true => limits((1, 8), 1, "admin and check"),
            false => main_limits,
        };
    announce(&config, &main_limits);

    let mut tasks: JoinSet<()> = JoinSet::new();
    let (stop, stopped) = watch::channel(false);
    tasks.spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let until_stopped = |mut stopped: watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };

    let upkeep = telemetry::upkeep(until_stopped(stopped.clone()));
    tasks.spawn(upkeep);
    if matches!(config.storage.store, floodwall::StorageConfig::Redis(_)) {
        let url: Arc<str> = config.storage.url().into();
        tasks.spawn(health::log_outages(
            limiter.clone(),
            url,
            until_stopped(stopped.clone()),
        ));
    }

    // Blocks and lists made on other instances arrive within a second.
    if matches!(config.storage.store, floodwall::StorageConfig::Redis(_)) {
        tasks.spawn(health::sync_controls(
            limiter.clone(),
            until_stopped(stopped.clone()),
        ));
    }

    // The live configuration: the main router is rebuilt and swapped whole on each reload.
    let current = Arc::new(RwLock::new(app(Arc::clone(&config), limiter.clone())));
    // The check API's own router exists only when it has a listener of its own.
    let current_check = listeners
        .check
        .as_ref()
        .map(|_| Arc::new(RwLock::new(check_app(Arc::clone(&config), limiter.clone()))));
    // The RLS router likewise, with one health service across reloads.
    let rls_health = match listeners.rls {
        Some(_) => Some(rls::health().await),
        None => None,
    };
    let current_rls = rls_health
        .as_ref()
        .map(|health| Arc::new(RwLock::new(rls::router(&config, limiter.clone(), health))));
    let (live_config, admin_config) = watch::channel(Arc::clone(&config));
    {
        let (current, limiter) = (Arc::clone(&current), limiter.clone());
        let current_check = current_check.clone();
        let current_rls = current_rls.clone().zip(rls_health.clone());
        tasks.spawn(async move {
            while configs.changed().await.is_ok() {
                let next = Arc::new(configs.borrow_and_update().clone());
                let admin_listen = |config: &Config| config.admin.as_ref().map(|a| a.listen);
                if next.storage != config.storage
                    || next.server.listen != config.server.listen
                    || next.server.max_connections != config.server.max_connections
                    || admin_listen(&next) != admin_listen(&config)
                    || next.check.listen != config.check.listen
                    || next.rls.as_ref().map(|r| r.listen) != config.rls.as_ref().map(|r| r.listen)
                    || next.log.format != config.log.format
                {
                    tracing::warn!(
                        "[storage], the listen addresses (main, admin, check, rls), max_connections and [log] format apply at restart only; the rest is reloaded"
                    );
                }
                let router = app(Arc::clone(&next), limiter.clone());
                *current.write().unwrap_or_else(PoisonError::into_inner) = router;
                if let Some(current_check) = &current_check {
                    let router = check_app(Arc::clone(&next), limiter.clone());
                    *current_check.write().unwrap_or_else(PoisonError::into_inner) = router;
                }
                if let Some((current_rls, health)) = &current_rls {
                    let router = rls::router(&next, limiter.clone(), health);
                    *current_rls.write().unwrap_or_else(PoisonError::into_inner) = router;
                }
                let _ = live_config.send(next);
                tracing::info!("configuration reloaded");
            }
        });
    }

    // Past the drain deadline each listener closes what is still open; the side listeners get a
    // short grace after the main one.
    let hard_stop = |grace: Duration| {
        let stopped = until_stopped(stopped.clone());
        async move {
            stopped.await;
            tokio::time::sleep(DRAIN_DEADLINE + grace).await;
        }
    };
    // The admin, check and RLS listeners, each where it is configured.
    let mut sides: Vec<(TcpListener, RouterSource, &str)> = Vec::new();
    if let Some(listener) = listeners.admin {
        let router = admin::app(admin_config, limiter.clone());
        sides.push((
            listener,
            Arc::new(move || router.clone()),
            "floodwall admin listening",
        ));
    }
    if let (Some(listener), Some(current_check)) = (listeners.check, current_check) {
        sides.push((
            listener,
            live(current_check),
            "floodwall check API listening",
        ));
    }
    if let (Some(listener), Some(current_rls)) = (listeners.rls, current_rls) {
        sides.push((listener, live(current_rls), "floodwall RLS listening"));
    }
    let mut side_listeners = Vec::new();
    for (listener, router, listening) in sides {
        tracing::info!(address = %listener.local_addr()?, "{listening}");
        let served = connections::serve(
            listener,
            side_limits,
            router,
            until_stopped(stopped.clone()),
            hard_stop(SIDE_GRACE),
        );
        let task = tasks.spawn(async move {
            let _ = served.await;
        });
        side_listeners.push(task.id());
    }
    tracing::info!(address = %listeners.main.local_addr()?, "floodwall listening");
    let main = connections::serve(
        listeners.main,
        main_limits,
        live(current),
        until_stopped(stopped.clone()),
        hard_stop(Duration::ZERO),
    );
    if !main.await {
        tracing::warn!("drain deadline passed; closed the remaining connections");
    }
    // The side listeners drain on the same signal and close by their own deadline.
    let finished = async {
        while !side_listeners.is_empty() {
            let id = match tasks.join_next_with_id().await {
                Some(Ok((id, ()))) => id,
                Some(Err(error)) => error.id(),
                None => break,
            };
            side_listeners.retain(|listener| *listener != id);
        }
    };
    let _ = tokio::time::timeout(SIDE_GRACE + Duration::from_millis(100), finished).await;
    // Requests that did not finish were dropped above, and what they held is on its way back
    // to the store: it gets there before the process exits, or times out by itself.
    if !limiter.settle(SETTLE_WITHIN).await {
        tracing::warn!(
            within = ?SETTLE_WITHIN,
            "in-flight units of unfinished requests could not be given back to the store before exit; they go back at their lease timeout"
        );
    }
    tracing::info!("floodwall stopped");
    Ok(())
}
