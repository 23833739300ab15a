//! The HTTP server under every listener: connections accepted within a bound, slow and idle
//! ones closed, accept failures backed off, and every connection drained on shutdown.
//!
//! Each connection has a watchdog that closes it when its current phase has lasted too long:
//! - waiting for (or reading) a request's headers: `header_timeout`, counted from the
//!   connection's start or from the first byte after the previous response;
//! - idle between keep-alive requests: `idle_timeout`;
//! - a request in flight: no deadline here (request bodies have their own, between frames, and
//!   upstreams theirs).
//!
//! At the bound, the connection that has waited longest with no request in flight is closed to
//! make room, so idle or dribbling sockets can never keep `/healthz` or a real client out.

mod activity;
mod io;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::IntoResponse;
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;

use self::activity::{OpenConnections, Registered};
pub(crate) use self::io::BodyStalled;
use self::io::{Answer, Steady, Watched};

/// How one listener treats its connections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    /// The most connections open at once.
    pub(crate) max_connections: usize,
    /// A request's headers must arrive within this.
    pub(crate) header_timeout: Duration,
    /// A connection with no request in flight is closed after this.
    pub(crate) idle_timeout: Duration,
    /// A request body may pause at most this long between frames.
    pub(crate) body_timeout: Duration,
    /// The most bytes of a request's line and headers.
    pub(crate) max_header_bytes: usize,
}

/// Which router answers a request: the live one at the moment the request arrives.
pub(crate) type RouterSource = Arc<dyn Fn() -> Router + Send + Sync>;

/// Serves `listener` with the router `router` names for each request until `stopped`
/// completes, then asks every connection to finish its requests and close, and returns when all
/// have, or when `hard_stop` completes: then every connection still open is closed, and its
/// requests dropped (what they held is released on drop), before it returns. Returns whether
/// every connection finished by itself.
pub(crate) async fn serve(
    listener: TcpListener,
    limits: ConnectionLimits,
    router: RouterSource,
    stopped: impl Future<Output = ()>,
    hard_stop: impl Future<Output = ()>,
) -> bool {
    let open = Arc::new(OpenConnections::default());
    let permits = Arc::new(Semaphore::new(
        limits.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let (drain, draining) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut failures = AcceptFailures::default();
    let mut stopped = pin!(stopped);
    loop {
        let (permit, accepted) = match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    () = &mut stopped => break,
                };
                (permit, accepted)
            }
            // At the bound: a connection that arrives is taken (one past the bound at most),
            // and makes room by closing the open one that has waited longest with no request;
            // if every open one has a request in flight, it waits for one to finish.
            Err(_) => {
                let accepted = tokio::select! {
                    permit = Arc::clone(&permits).acquire_owned() => {
                        drop(permit);
                        continue;
                    }
                    accepted = listener.accept() => accepted,
                    () = &mut stopped => break,
                };
                if accepted.is_ok() {
                    open.shed_longest_waiting();
                }
                tokio::select! {
                    permit = Arc::clone(&permits).acquire_owned() => match permit {
                        Ok(permit) => (permit, accepted),
                        // The semaphore is never closed.
                        Err(_) => break,
                    },
                    () = &mut stopped => break,
                }
            }
        };
        // Finished connections are collected as new ones come, so the set stays as small as
        // the number open.
        while connections.try_join_next().is_some() {}
        match accepted {
            Ok((stream, peer)) => {
                failures.recovered();
                let _ = stream.set_nodelay(true);
                let activity = open.register();
                connections.spawn(connection(
                    stream,
                    peer,
                    activity,
                    limits,
                    Arc::clone(&router),
                    draining.clone(),
                    permit,
                ));
            }
            Err(error) => {
                // Out of file descriptors (or another resource): accepting again at once would
                // spin; wait, longer each time, and say so.
                drop(permit);
                let pause = failures.failed(&error);
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = &mut stopped => break,
                }
            }
        }
    }
    let _ = drain.send(true);
    // Connections already in the kernel's queue were made before the stop: take them too (as
    // many as the bound allows), so their requests are answered rather than reset. The queue
    // is read without waiting, so "empty" is exact, not a guess from a quiet moment.
    if let Ok(queue) = listener.into_std() {
        while let Ok(permit) = Arc::clone(&permits).try_acquire_owned() {
            let Ok((stream, peer)) = queue.accept() else {
                break;
            };
            let Ok(stream) = stream
                .set_nonblocking(true)
                .and_then(|()| TcpStream::from_std(stream))
            else {
                continue;
            };
            connections.spawn(connection(
                stream,
                peer,
                open.register(),
                limits,
                Arc::clone(&router),
                draining.clone(),
                permit,
            ));
        }
    }
    let drained = async { while connections.join_next().await.is_some() {} };
    tokio::select! {
        () = drained => true,
        () = hard_stop => {
            // Aborted and waited for: each request's future is dropped before this returns.
            connections.shutdown().await;
            false
        }
    }
}

/// Accept failures in a row: logged on the first and then at most every few seconds, with a
/// pause that doubles up to a second.
#[derive(Debug, Default)]
struct AcceptFailures {
    in_a_row: u32,
    last_logged: Option<Instant>,
    since_logged: u64,
}

impl AcceptFailures {
    const LOG_EVERY: Duration = Duration::from_secs(5);

    fn failed(&mut self, error: &std::io::Error) -> Duration {
        self.in_a_row = self.in_a_row.saturating_add(1);
        self.since_logged += 1;
        let now = Instant::now();
        if self
            .last_logged
            .is_none_or(|last| now.duration_since(last) >= Self::LOG_EVERY)
        {
            tracing::warn!(
                %error,
                failures = self.since_logged,
                "cannot accept connections (out of file descriptors? raise the limit or lower max_connections); retrying"
            );
            self.last_logged = Some(now);
            self.since_logged = 0;
        }
        Duration::from_millis(10 << self.in_a_row.min(7)).min(Duration::from_secs(1))
    }

    fn recovered(&mut self) {
        if self.in_a_row > 0 {
            tracing::info!("accepting connections again");
        }
        self.in_a_row = 0;
    }
}
/// Serves one connection until it ends, is closed by its watchdog, or has drained.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    registered: Registered,
    limits: ConnectionLimits,
    router: RouterSource,
    mut draining: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let activity = Arc::clone(&registered.activity);
    let io = TokioIo::new(Watched {
        stream,
        activity: Arc::clone(&activity),
    });
    let requests = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let in_flight = activity.request_started();
            let (mut parts, body) = request.into_parts();
            let refusal = crate::framing::refused(&parts);
            parts.extensions.insert(ConnectInfo(peer));
            let body = if http_body::Body::is_end_stream(&body) {
                Body::new(body)
            } else {
                Body::new(Steady::new(body, limits.body_timeout))
            };
            let request = Request::from_parts(parts, body);
            let routed = match refusal {
                Some(refusal) => Err(refusal),
                None => Ok(router().oneshot(request)),
            };
            async move {
                let response = match routed {
                    Ok(routed) => routed.await?,
                    Err(refusal) => refusal.into_response(),
                };
                Ok::<_, Infallible>(response.map(|body| Answer {
                    body,
                    _in_flight: in_flight,
                }))
            }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // The watchdog enforces the header deadline, idle connections included.
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let served = builder.serve_connection(io, requests);
    let mut served = pin!(served);
    // Draining: a request in flight is finished (its answer says `Connection: close`); a
    // request whose bytes have arrived is read and answered the same way; a connection with
    // neither for `DRAIN_IDLE_GRACE` is closed. So every request that reached the service
    // before it stopped gets an answer.
    let mut draining_since: Option<Instant> = None;
    let mut drain_asked = false;
    loop {
        tokio::select! {
            // The connection first: bytes that arrived while this task waited to run are read
            // (and their request counted in flight) before a deadline can close it. Polled in a
            // random order, a starved task could take the idle branch with a request waiting.
            biased;
            // A connection's own errors (a reset, a malformed request) end only that connection.
            _ = served.as_mut() => break,
            () = activity.expired(&limits) => break,
            _ = draining.wait_for(|drain| *drain), if draining_since.is_none() => {
                draining_since = Some(Instant::now());
            }
            () = tokio::time::sleep(DRAIN_POLL), if draining_since.is_some() && !drain_asked => {}
        }
        if let (Some(since), false) = (draining_since, drain_asked) {
            if activity.in_flight.load(Ordering::Acquire) > 0 {
                served.as_mut().graceful_shutdown();
                drain_asked = true;
            } else if activity.idle() && since.elapsed() >= DRAIN_IDLE_GRACE {
                break;
            }
        }
    }
}

/// How long a draining connection with nothing in flight waits for a request already sent. A
/// request in the socket is seen only once the runtime has polled for I/O, which a machine busy
/// with hundreds of draining connections can put off for a while; a second costs a stopping
/// service little and keeps those requests.
const DRAIN_IDLE_GRACE: Duration = Duration::from_secs(1);
/// How often a draining connection looks at its state.
const DRAIN_POLL: Duration = Duration::from_millis(5);

/// The file descriptors this process may open: the soft limit, raised to the hard limit first.
/// `None` where the platform has no such limit.
pub(crate) fn raise_fd_limit() -> Option<u64> {
    rlimit::increase_nofile_limit(u64::MAX).ok()
}

/// File descriptors kept out of every listener's bound: the store's connections, the upstream
/// pool's spares, log and config files.
const RESERVED_FDS: u64 = 128;

/// `configured`, lowered so that listeners given `share` of the descriptors `fd_limit` leaves
/// (after the reserve) cannot exhaust them; `fds_per_connection` counts an upstream connection
/// each proxied request may hold.
pub(crate) fn fit_to_fds(
    configured: usize,
    fd_limit: Option<u64>,
    share: (u64, u64),
    fds_per_connection: u64,
) -> usize {
    let Some(limit) = fd_limit else {
        return configured;
    };
    let usable = limit.saturating_sub(RESERVED_FDS) * share.0 / share.1.max(1);
    let fit = usable / fds_per_connection.max(1);
    configured.min(usize::try_from(fit).unwrap_or(usize::MAX).max(1))
}
