//! One running service: what it owns while it serves, and the order in which it starts, reloads
//! and stops.
//!
//! A [`Service`] owns every task it starts (in a `JoinSet` aborted when the service is dropped,
//! however [`serve`] returns, so a service stopped in a test leaves nothing running) and the
//! [`Stop`] signal each of them waits on. Its [`LiveRouters`] are what each new request is
//! answered by; a reload swaps them whole. The main listener is served on the caller's task;
//! the admin, check and RLS listeners on tasks of their own, with a short grace after the main
//! one when stopping.

use std::future::Future;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::Router;
use floodwall::{Limiter, Policy};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{Id, JoinSet};

use crate::config::{self, Config};
use crate::connections::{self, ConnectionLimits, RouterSource};
use crate::{
    DRAIN_DEADLINE, Listeners, ServeError, admin, app, check_app, health, rlqs, rls, telemetry,
};

/// How much longer than the main listener the admin, check and RLS listeners may drain.
const SIDE_GRACE: Duration = Duration::from_millis(100);

/// How often the blocks and lists other instances changed are loaded from a shared store.
const CONTROLS_SYNC_EVERY: Duration = Duration::from_secs(1);

/// How long a stopping service waits for the units its unfinished requests held to reach the
/// store.
const QUIESCE_WITHIN: Duration = Duration::from_secs(2);

/// The signal every part of a service waits on: set once, when shutdown begins.
#[derive(Debug, Clone)]
struct Stop(watch::Receiver<bool>);

impl Stop {
    /// Completes once shutdown has begun.
    fn begun(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stopped = self.0.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    }

    /// Completes `DRAIN_DEADLINE + grace` after shutdown began: when a listener closes what is
    /// still open.
    fn hard(&self, grace: Duration) -> impl Future<Output = ()> + Send + 'static {
        let begun = self.begun();
        async move {
            begun.await;
            tokio::time::sleep(DRAIN_DEADLINE + grace).await;
        }
    }
}

/// The routers requests are answered by, each swapped whole when the configuration changes.
struct LiveRouters {
    /// Routes, `/v1/check` (unless moved), `/healthz`, `/readyz`.
    main: Arc<RwLock<Router>>,
    /// The check API's own, when it has a listener of its own.
    check: Option<Arc<RwLock<Router>>>,
    /// The RLS router, with its one health service across reloads.
    rls: Option<(Arc<RwLock<Router>>, rls::Health)>,
    /// The RLQS router, with what it keeps across reloads (its health service, the rules open
    /// streams read).
    rlqs: Option<(Arc<RwLock<Router>>, rlqs::Live)>,
    /// The live configuration, as the admin listener reads it.
    admin_config: watch::Sender<Arc<Config>>,
}

impl LiveRouters {
    async fn new(config: &Arc<Config>, limiter: &Limiter, listeners: &Listeners) -> Self {
        let main = Arc::new(RwLock::new(app(Arc::clone(config), limiter.clone())));
        let check = listeners
            .check
            .as_ref()
            .map(|_| Arc::new(RwLock::new(check_app(Arc::clone(config), limiter.clone()))));
        let rls = match listeners.rls {
            Some(_) => {
                let health = rls::health().await;
                let router = rls::router(config, limiter.clone(), &health);
                Some((Arc::new(RwLock::new(router)), health))
            }
            None => None,
        };
        let rlqs = match listeners.rlqs {
            Some(_) => {
                let live = rlqs::Live::new(config).await;
                let router = rlqs::router(limiter.clone(), &live);
                Some((Arc::new(RwLock::new(router)), live))
            }
            None => None,
        };
        LiveRouters {
            main,
            check,
            rls,
            rlqs,
            admin_config: watch::Sender::new(Arc::clone(config)),
        }
    }

    /// Rebuilds every router for `next` and swaps each in whole.
    fn swap(&self, next: &Arc<Config>, limiter: &Limiter) {
        let router = app(Arc::clone(next), limiter.clone());
        *self.main.write().unwrap_or_else(PoisonError::into_inner) = router;
        if let Some(check) = &self.check {
            let router = check_app(Arc::clone(next), limiter.clone());
            *check.write().unwrap_or_else(PoisonError::into_inner) = router;
        }
        if let Some((rls, health)) = &self.rls {
            let router = rls::router(next, limiter.clone(), health);
            *rls.write().unwrap_or_else(PoisonError::into_inner) = router;
        }
        // Open streams and new ones alike decide by the new rules; buckets they unmatch are
        // abandoned on the streams that were assigned them.
        if let Some((_, live)) = &self.rlqs {
            live.reload(next);
        }
        self.admin_config.send_replace(Arc::clone(next));
    }
}

/// The router of `current` that is live when each request arrives.
fn live(current: Arc<RwLock<Router>>) -> RouterSource {
    Arc::new(move || {
        current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    })
}

/// A running service.
struct Service {
    /// The configuration it started with; `[storage]` and the listeners stay as they were.
    config: Arc<Config>,
    limiter: Limiter,
    /// Every task it started; aborted when it is dropped.
    tasks: JoinSet<()>,
    stop: Stop,
    routers: Arc<LiveRouters>,
}

impl Service {
    /// Starts the background tasks of `config`: the shutdown watcher, metrics upkeep, and on
    /// Redis the outage log and the controls sync.
    async fn start(
        config: Arc<Config>,
        limiter: Limiter,
        listeners: &Listeners,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        let mut tasks = JoinSet::new();
        let (stopping, stopped) = watch::channel(false);
        tasks.spawn(async move {
            shutdown.await;
            let _ = stopping.send(true);
        });
        let stop = Stop(stopped);
        tasks.spawn(telemetry::upkeep(limiter.clone(), stop.begun()));
        if matches!(config.storage.store, floodwall::StorageConfig::Redis(_)) {
            let url: Arc<str> = config.storage.url().into();
            tasks.spawn(health::log_outages(limiter.clone(), url, stop.begun()));
            // Blocks and lists made on other instances arrive within a second; a failed load
            // keeps the controls already loaded (the outage itself is logged above).
            let (synced, stopped) = (limiter.clone(), stop.begun());
            tasks.spawn(async move {
                tokio::select! {
                    () = synced.keep_controls_synced(CONTROLS_SYNC_EVERY) => {}
                    () = stopped => {}
                }
            });
        }
        let routers = Arc::new(LiveRouters::new(&config, &limiter, listeners).await);
        Service {
            config,
            limiter,
            tasks,
            stop,
            routers,
        }
    }

    /// Swaps in each new configuration from `configs` until the channel closes; says which
    /// changes wait for a restart.
    fn reload_from(&mut self, mut configs: watch::Receiver<Config>) {
        let (config, limiter) = (Arc::clone(&self.config), self.limiter.clone());
        let routers = Arc::clone(&self.routers);
        self.tasks.spawn(async move {
            while configs.changed().await.is_ok() {
                let next = Arc::new(configs.borrow_and_update().clone());
                if needs_restart(&config, &next) {
                    tracing::warn!(
                        "[storage], the listen addresses (main, admin, check, rls, rlqs), max_connections, [log] format and [telemetry] apply at restart only; the rest is reloaded"
                    );
                }
                routers.swap(&next, &limiter);
                tracing::info!("configuration reloaded");
            }
        });
    }

    /// Serves the admin, check and RLS listeners, each where it is configured, on tasks of
    /// their own; answers their task ids.
    fn serve_sides(
        &mut self,
        listeners: &mut Listeners,
        limits: ConnectionLimits,
    ) -> Result<Vec<Id>, ServeError> {
        let mut sides: Vec<(TcpListener, RouterSource, &str)> = Vec::new();
        if let Some(listener) = listeners.admin.take() {
            let router = admin::app(self.routers.admin_config.subscribe(), self.limiter.clone());
            sides.push((
                listener,
                Arc::new(move || router.clone()),
                "floodwall admin listening",
            ));
        }
        if let (Some(listener), Some(check)) = (listeners.check.take(), &self.routers.check) {
            sides.push((
                listener,
                live(Arc::clone(check)),
                "floodwall check API listening",
            ));
        }
        if let (Some(listener), Some((rls, _))) = (listeners.rls.take(), &self.routers.rls) {
            sides.push((listener, live(Arc::clone(rls)), "floodwall RLS listening"));
        }
        if let (Some(listener), Some((rlqs, _))) = (listeners.rlqs.take(), &self.routers.rlqs) {
            sides.push((listener, live(Arc::clone(rlqs)), "floodwall RLQS listening"));
        }
        let mut ids = Vec::new();
        for (listener, router, listening) in sides {
            tracing::info!(address = %listener.local_addr()?, "{listening}");
            let served = connections::serve(
                listener,
                limits,
                router,
                self.stop.begun(),
                self.stop.hard(SIDE_GRACE),
            );
            let task = self.tasks.spawn(async move {
                let _ = served.await;
            });
            ids.push(task.id());
        }
        Ok(ids)
    }

    /// Waits, a little past their grace, for the side listeners `sides` to finish draining.
    async fn drain_sides(&mut self, mut sides: Vec<Id>) {
        let finished = async {
            while !sides.is_empty() {
                let id = match self.tasks.join_next_with_id().await {
                    Some(Ok((id, ()))) => id,
                    Some(Err(error)) => error.id(),
                    None => break,
                };
                sides.retain(|side| *side != id);
            }
        };
        let _ = tokio::time::timeout(SIDE_GRACE + Duration::from_millis(100), finished).await;
    }
}

/// Whether going from `config` to `next` changes what only a restart applies.
fn needs_restart(config: &Config, next: &Config) -> bool {
    let admin_listen = |config: &Config| config.admin.as_ref().map(|a| a.listen);
    let rls_listen = |config: &Config| config.rls.as_ref().map(|r| r.listen);
    let rlqs_listen = |config: &Config| config.rlqs.as_ref().map(|r| r.listen);
    next.storage != config.storage
        || next.server.listen != config.server.listen
        || next.server.max_connections != config.server.max_connections
        || admin_listen(next) != admin_listen(config)
        || next.check.listen != config.check.listen
        || rls_listen(next) != rls_listen(config)
        || rlqs_listen(next) != rlqs_listen(config)
        || next.log.format != config.log.format
        || next.telemetry != config.telemetry
}

/// The connection limits of the main listener and of the side ones, each bound lowered (with a
/// warning) to what the file descriptor limit, raised to its hard limit here, can hold.
fn connection_limits(
    config: &Config,
    listeners: &Listeners,
) -> (ConnectionLimits, ConnectionLimits) {
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
    let main = limits((3, 4), if proxies { 2 } else { 1 }, "main");
    let sides = match listeners.admin.is_some()
        || listeners.check.is_some()
        || listeners.rls.is_some()
        || listeners.rlqs.is_some()
    {
        true => limits((1, 8), 1, "admin and check"),
        false => main,
    };
    (main, sides)
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

/// Serves until `shutdown` completes, then drains: the main listener within
/// [`DRAIN_DEADLINE`], the side listeners a little after; then gives the store what
/// unfinished requests held. Connections are hyper's, one task each, with the header, idle and
/// body deadlines of `[server]`, told to finish on the stop signal.
pub(crate) async fn serve(
    mut configs: watch::Receiver<Config>,
    limiter: Limiter,
    mut listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let config = Arc::new(configs.borrow_and_update().clone());
    let (main_limits, side_limits) = connection_limits(&config, &listeners);
    announce(&config, &main_limits);
    let mut service = Service::start(config, limiter, &listeners, shutdown).await;
    service.reload_from(configs);
    let sides = service.serve_sides(&mut listeners, side_limits)?;
    tracing::info!(address = %listeners.main.local_addr()?, "floodwall listening");
    let main = connections::serve(
        listeners.main,
        main_limits,
        live(Arc::clone(&service.routers.main)),
        service.stop.begun(),
        service.stop.hard(Duration::ZERO),
    );
    if !main.await {
        tracing::warn!("drain deadline passed; closed the remaining connections");
    }
    service.drain_sides(sides).await;
    // Requests that did not finish were dropped above, and what they held is on its way back
    // to the store: it gets there before the process exits, or times out by itself.
    if !service.limiter.quiesce(QUIESCE_WITHIN).await {
        tracing::warn!(
            within = ?QUIESCE_WITHIN,
            "in-flight units of unfinished requests could not be given back to the store before exit; they go back at their lease timeout"
        );
    }
    tracing::info!("floodwall stopped");
    Ok(())
}
