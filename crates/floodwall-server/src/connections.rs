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

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::IntoResponse;
use bytes::Bytes;
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;

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
/// have (the caller bounds how long that may take).
pub(crate) async fn serve(
    listener: TcpListener,
    limits: ConnectionLimits,
    router: RouterSource,
    stopped: impl Future<Output = ()>,
) {
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
    while connections.join_next().await.is_some() {}
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

    fn failed(&mut self, error: &io::Error) -> Duration {
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

/// The open connections of one listener, for closing the one that has waited longest.
#[derive(Debug)]
struct OpenConnections {
    by_id: Mutex<HashMap<u64, Arc<Activity>>>,
    next_id: AtomicU64,
    /// The origin of every connection's times, so that they compare.
    epoch: Instant,
}

impl Default for OpenConnections {
    fn default() -> Self {
        OpenConnections {
            by_id: Mutex::default(),
            next_id: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

impl OpenConnections {
    fn register(self: &Arc<Self>) -> Registered {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity::new(self.epoch));
        self.by_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, Arc::clone(&activity));
        Registered {
            open: Arc::clone(self),
            id,
            activity,
        }
    }

    /// Closes the connection that has waited longest with no request in flight, if any.
    fn shed_longest_waiting(&self) {
        let by_id = self.by_id.lock().unwrap_or_else(PoisonError::into_inner);
        let longest = by_id
            .values()
            .filter(|activity| activity.in_flight.load(Ordering::Acquire) == 0)
            .min_by_key(|activity| activity.waiting_since.load(Ordering::Acquire));
        if let Some(activity) = longest {
            activity.shed.store(true, Ordering::Release);
            activity.changed.notify_one();
        }
    }
}

/// A connection's place in [`OpenConnections`], given up when the connection ends.
#[derive(Debug)]
struct Registered {
    open: Arc<OpenConnections>,
    id: u64,
    activity: Arc<Activity>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.open
            .by_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// What a connection is doing, shared by its socket, its requests and its watchdog.
#[derive(Debug)]
struct Activity {
    /// Requests whose response has not been sent (or dropped) yet.
    in_flight: AtomicUsize,
    /// When the current wait for a request began, in microseconds since `epoch`.
    waiting_since: AtomicU64,
    /// Whether bytes of the next request have arrived since the wait began.
    head_started: AtomicBool,
    /// Set to close the connection at once.
    shed: AtomicBool,
    /// Woken on every change that moves the deadline.
    changed: Notify,
    epoch: Instant,
}

impl Activity {
    fn new(epoch: Instant) -> Activity {
        Activity {
            in_flight: AtomicUsize::new(0),
            waiting_since: AtomicU64::new(micros_since(epoch)),
            // A new connection owes its first request's headers from the start.
            head_started: AtomicBool::new(true),
            shed: AtomicBool::new(false),
            changed: Notify::new(),
            epoch: Instant::now(),
        }
    }

    /// When the connection must close if nothing changes; `None` while a request is in flight.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = Duration::from_micros(self.waiting_since.load(Ordering::Acquire));
        let allowed = if self.head_started.load(Ordering::Acquire) {
            limits.header_timeout
        } else {
            limits.idle_timeout
        };
        Some(self.epoch + since + allowed)
    }

    /// Completes when the connection must close: shed, or its phase outlasted its deadline.
    async fn expired(&self, limits: &ConnectionLimits) {
        loop {
            let mut changed = pin!(self.changed.notified());
            // Registered before the state is read, so that no change is missed in between.
            changed.as_mut().enable();
            if self.shed.load(Ordering::Acquire) {
                return;
            }
            match self.deadline(limits) {
                None => changed.await,
                Some(deadline) if deadline <= Instant::now() => return,
                Some(deadline) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(deadline) => {}
                        () = changed => {}
                    }
                }
            }
        }
    }

    fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(false, Ordering::Release);
        self.changed.notify_one();
        InFlight(Arc::clone(self))
    }

    fn bytes_arrived(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0
            && !self.head_started.swap(true, Ordering::AcqRel)
        {
            self.changed.notify_one();
        }
    }
}

fn micros_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// One request in flight; dropped when its response has been sent or abandoned.
#[derive(Debug)]
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        if activity.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            activity
                .waiting_since
                .store(micros_since(activity.epoch), Ordering::Release);
            activity.changed.notify_one();
        }
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
    let mut drain_asked = false;
    loop {
        tokio::select! {
            // A connection's own errors (a reset, a malformed request) end only that connection.
            _ = served.as_mut() => break,
            () = activity.expired(&limits) => break,
            _ = draining.wait_for(|drain| *drain), if !drain_asked => {
                served.as_mut().graceful_shutdown();
                drain_asked = true;
            }
        }
    }
}

/// A response body that keeps its request counted as in flight until it has been sent.
#[derive(Debug)]
struct Answer {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Answer {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A request body that fails with [`BodyStalled`] when it stops arriving for `pause`, counted
/// only while someone waits for it.
#[derive(Debug)]
struct Steady {
    body: Incoming,
    pause: Duration,
    /// Armed when a read finds nothing yet; disarmed by the next frame.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// A request body paused for longer than `[server] body_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the request body stopped arriving")]
pub(crate) struct BodyStalled;

impl Steady {
    fn new(body: Incoming, pause: Duration) -> Steady {
        Steady {
            body,
            pause,
            stall: None,
        }
    }
}

impl http_body::Body for Steady {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.stall = None;
                Poll::Ready(frame.map(|frame| frame.map_err(Into::into)))
            }
            Poll::Pending => {
                let pause = this.pause;
                let stall = this
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(pause)));
                match stall.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyStalled)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A connection's socket, telling its watchdog when a request's first bytes arrive.
#[derive(Debug)]
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.bytes_arrived();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

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
