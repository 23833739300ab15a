//! [`HeldBody`]: a response body that keeps its request's in-flight units until it is done.

use std::pin::Pin;
use std::task::{Context, Poll};

use floodwall::LeaseGuard;
use http_body::{Body, Frame, SizeHint};

pin_project_lite::pin_project! {
    /// The inner service's response body, holding the request's `concurrency` units until its
    /// last frame has been read, or until it is dropped unfinished (a client gone, a cancelled
    /// request): a request counts as in flight for exactly as long as its response is being
    /// sent.
    #[derive(Debug)]
    pub struct HeldBody<B> {
        #[pin]
        inner: B,
        lease: Option<LeaseGuard>,
    }
}

impl<B: Body> HeldBody<B> {
    pub(crate) fn new(inner: B, lease: Option<LeaseGuard>) -> Self {
        // A body that is already over never sends a frame: nothing to hold for.
        let lease = lease.filter(|_| !inner.is_end_stream());
        HeldBody { inner, lease }
    }
}

impl<B: Body> Body for HeldBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        // The end, or an error that ends the body: the request is no longer in flight.
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) || this.inner.is_end_stream() {
            *this.lease = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
