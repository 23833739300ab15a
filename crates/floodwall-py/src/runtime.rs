//! Running the limiter's futures from Python: at once when they cannot wait (the memory store),
//! on one Tokio runtime with the GIL released when they can (Redis), or on that runtime in the
//! background for an asyncio caller.

use std::future::Future;
use std::pin::pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use pyo3::prelude::*;

use crate::completions::{Completions, Outcome};

/// The runtime every limiter of the process shares, started on first use: Redis connections
/// and timers live on it.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("floodwall")
            .enable_all()
            .build()
            .unwrap_or_else(|error| panic!("cannot start floodwall's Tokio runtime: {error}"))
    })
}

/// Runs `future` to completion without holding the GIL.
pub(crate) fn block_on<F>(py: Python<'_>, future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    let runtime = runtime();
    py.detach(|| runtime.block_on(future))
}

/// The output of a future that never waits, such as any memory-store decision: polled once,
/// with no runtime, no thread switch and the GIL kept (it would cost more to release than the
/// decision takes). A future that does wait is run by [`block_on`] instead.
pub(crate) fn now_or_block<F>(py: Python<'_>, future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    let mut future = pin!(future);
    let mut context = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut context) {
        Poll::Ready(output) => output,
        Poll::Pending => block_on(py, future),
    }
}

/// Runs `work` on the shared runtime in the background, for as long as it runs.
pub(crate) fn spawn_background<F>(work: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    runtime().spawn(work);
}

/// Runs `work` in the background for `caller` (none when `work` passes through the gate,
/// which counts its own); its result goes to `completions` for the asyncio `future`. Cancelling
/// the returned [`Work`] drops `work` wherever it waits (the caller is then counted as gone,
/// and what its store call took is given back by the store).
pub(crate) fn spawn<F>(
    completions: Py<Completions>,
    future: Py<PyAny>,
    caller: Option<floodwall::Caller>,
    work: F,
) -> Work
where
    F: Future<Output = Result<Outcome, floodwall::Error>> + Send + 'static,
{
    let task = runtime().spawn(async move {
        let result = work.await;
        if let Some(caller) = caller {
            caller.answered();
        }
        completions.get().finish(future, result);
    });
    Work(task.abort_handle())
}

/// Runs `f` inside the shared runtime's context, so that what it drops may spawn there (a
/// lease released on drop, from a thread of Python's).
pub(crate) fn within<T>(f: impl FnOnce() -> T) -> T {
    let _entered = runtime().enter();
    f()
}

/// Work started for an asyncio caller, which `cancel` stops when the caller is cancelled.
#[pyclass(frozen, name = "Work", module = "floodwall._native")]
#[derive(Debug)]
pub(crate) struct Work(tokio::task::AbortHandle);

#[pymethods]
impl Work {
    /// Stops the work where it waits: a decision not yet sent is not sent, a wait (acquire)
    /// ends, and what a store call took for it is given back.
    fn cancel(&self) {
        self.0.abort();
    }
}
