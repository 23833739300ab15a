//! Listeners that bound how many connections are open at once.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A TCP listener that keeps at most `max_connections` connections open. At the bound it stops
/// accepting: new connections wait in the kernel's backlog (and past that are refused by the
/// kernel) until an open one closes, so a flood of connections can never exhaust the process's
/// file descriptors or memory.
#[derive(Debug)]
pub(crate) struct BoundedListener {
    inner: TcpListener,
    /// One permit per connection that may be open; each accepted connection holds one until it
    /// is dropped.
    permits: Arc<Semaphore>,
}

impl BoundedListener {
    /// `inner`, holding at most `max_connections` connections (at least 1) open.
    pub(crate) fn new(inner: TcpListener, max_connections: usize) -> Self {
        BoundedListener {
            inner,
            permits: Arc::new(Semaphore::new(
                max_connections.clamp(1, Semaphore::MAX_PERMITS),
            )),
        }
    }
}

impl Listener for BoundedListener {
    type Io = BoundedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // The permit comes first: at the bound nothing more is accepted. The semaphore is never
        // closed, so `None` cannot happen; it would only mean an unbounded connection.
        let permit = Arc::clone(&self.permits).acquire_owned().await.ok();
        let (stream, peer) = Listener::accept(&mut self.inner).await;
        (
            BoundedStream {
                stream,
                _permit: permit,
            },
            peer,
        )
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// An accepted connection; closing it frees its place under the bound.
#[derive(Debug)]
pub(crate) struct BoundedStream {
    stream: TcpStream,
    _permit: Option<OwnedSemaphorePermit>,
}

impl AsyncRead for BoundedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for BoundedStream {
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
