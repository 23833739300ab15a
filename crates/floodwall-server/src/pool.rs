//! Keep-alive HTTP/1 connections to one upstream, reused most-recent-first.
//!
//! hyper-util's pooled client spawns a task per request to notice when a connection is idle
//! again; on a two-core machine that task and its wake-up cost a proxied request about a
//! fifth of its time. Here a connection goes back to the pool when its response body has been
//! read to the end, by whoever read it, with no extra task.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::header::HOST;
use http::{HeaderValue, Request, Response, Uri};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Idle connections kept per upstream; more are closed when their answer ends.
const MAX_IDLE: usize = 512;
/// An idle connection older than this is closed instead of reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an upstream could not be asked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("connecting to the upstream timed out after {CONNECT_TIMEOUT:?}")]
    ConnectTimeout,
    #[error("connecting to the upstream failed: {0}")]
    Connect(#[from] std::io::Error),
    #[error("the upstream connection failed: {0}")]
    Http(#[from] hyper::Error),
}

/// The connections to one upstream `http://host:port`. Clones share the connections.
#[derive(Clone, Debug)]
pub(crate) struct UpstreamPool {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// The host as `TcpStream::connect` takes it: no brackets around IPv6 literals.
    host: String,
    port: u16,
    /// `Host` for requests that come without one: the upstream's authority.
    authority: Option<HeaderValue>,
    idle: Mutex<Vec<IdleConnection>>,
}

#[derive(Debug)]
struct IdleConnection {
    sender: SendRequest<Body>,
    since: Instant,
}

impl UpstreamPool {
    /// A pool for `upstream`, an `http://host[:port]` URI (validated by the config).
    pub(crate) fn new(upstream: &Uri) -> Self {
        let host = upstream.host().unwrap_or("localhost");
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        UpstreamPool {
            shared: Arc::new(Shared {
                host,
                port: upstream.port_u16().unwrap_or(80),
                authority: upstream
                    .authority()
                    .and_then(|authority| HeaderValue::from_str(authority.as_str()).ok()),
                idle: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Sends `request` (origin-form URI) on an idle connection or a new one, with `Host` set to
    /// the upstream's authority when it has none. The answer's body gives the connection back
    /// to the pool once it has been read to the end.
    ///
    /// A request that a reused connection closed before taking is sent again on a new
    /// connection: it never reached the upstream, so this cannot duplicate it.
    pub(crate) async fn send(
        &self,
        request: Request<Body>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        let mut request = request;
        if let (false, Some(authority)) =
            (request.headers().contains_key(HOST), &self.shared.authority)
        {
            request.headers_mut().insert(HOST, authority.clone());
        }
        loop {
            let (mut sender, reused) = match self.take_idle().await {
                Some(sender) => (sender, true),
                None => (self.connect().await?, false),
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let checkout = Checkout {
                        sender,
                        pool: Arc::clone(&self.shared),
                    };
                    return Ok(response.map(|body| PooledBody::new(body, checkout)));
                }
                Err(mut refused) => match refused.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(refused.into_error().into()),
                },
            }
        }
    }

    /// The most recently used connection that is still open and ready.
    async fn take_idle(&self) -> Option<SendRequest<Body>> {
        loop {
            let idle = self
                .shared
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop()?;
            if idle.since.elapsed() > IDLE_TIMEOUT {
                // Everything below it is older still.
                self.shared
                    .idle
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clear();
                return None;
            }
            let mut sender = idle.sender;
            // Waits only while the connection finishes reading the previous answer's end.
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    async fn connect(&self) -> Result<SendRequest<Body>, UpstreamError> {
        let address = (self.shared.host.as_str(), self.shared.port);
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
            .await
            .map_err(|_| UpstreamError::ConnectTimeout)??;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "upstream connection ended");
            }
        });
        Ok(sender)
    }
}

/// A connection checked out for one request, returned to its pool when the answer has been
/// read.
#[derive(Debug)]
struct Checkout {
    sender: SendRequest<Body>,
    pool: Arc<Shared>,
}

impl Checkout {
    fn give_back(self) {
        if self.sender.is_closed() {
            return;
        }
        let mut idle = self
            .pool
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(IdleConnection {
                sender: self.sender,
                since: Instant::now(),
            });
        }
    }
}

/// An upstream answer's body. Read to the end, it returns its connection to the pool; dropped
/// early, the connection closes with it.
#[derive(Debug)]
pub(crate) struct PooledBody {
    body: Incoming,
    checkout: Option<Checkout>,
}

impl PooledBody {
    fn new(body: Incoming, checkout: Checkout) -> Self {
        let mut pooled = PooledBody {
            body,
            checkout: Some(checkout),
        };
        if hyper::body::Body::is_end_stream(&pooled.body) {
            pooled.give_back();
        }
        pooled
    }

    /// Returns the connection, once: later calls find none.
    fn give_back(&mut self) {
        if let Some(checkout) = self.checkout.take() {
            checkout.give_back();
        }
    }
}

impl hyper::body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.give_back(),
            Poll::Ready(Some(Ok(_))) if hyper::body::Body::is_end_stream(&self.body) => {
                self.give_back();
            }
            Poll::Ready(Some(Ok(_))) => {}
            // A broken body leaves its connection unusable.
            Poll::Ready(Some(Err(_))) => self.checkout = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        hyper::body::Body::is_end_stream(&self.body)
    }

    fn size_hint(&self) -> SizeHint {
        hyper::body::Body::size_hint(&self.body)
    }
}
