//! Running the limiter's futures from Python: at once when they cannot wait (the memory store),
//! on one Tokio runtime with the GIL released when they can (Redis), or on that runtime in the
//! background for an asyncio caller.

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

use pyo3::prelude::*;

use crate::completions::{Completions, Delivery};

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

/// Who counts an asyncio caller who leaves before it has its answer.
pub(crate) enum Counting {
    /// The work passes through the gate, which counts a caller who leaves while it decides;
    /// one who leaves before or after, until the loop hands the answer over, is counted here.
    ByTheGate(floodwall::Limiter),
    /// This caller is counted until the loop hands its answer over.
    Caller(floodwall::gate::Caller),
}

/// Runs `work` in the background; its result goes to `completions` for the asyncio `future`.
/// A caller whose future is cancelled before the loop hands it the result is counted as gone
/// once, as `counting` says, whether the work was still running or had finished. Cancelling
/// the returned [`Work`] drops `work` wherever it waits (what its store call took is then given
/// back by the store).
pub(crate) fn spawn<F>(
    completions: Py<Completions>,
    future: Py<PyAny>,
    counting: Counting,
    work: F,
) -> Work
where
    F: Future<Output = Result<Delivery, floodwall::Error>> + Send + 'static,
{
    let (caller, gate) = match counting {
        Counting::Caller(caller) => (caller, None),
        Counting::ByTheGate(limiter) => (
            limiter.caller(floodwall::gate::Front::Python),
            Some(limiter),
        ),
    };
    let waiting = WaitingCaller(Arc::new(Mutex::new(Some(caller))));
    let delivered = waiting.clone();
    let task = runtime().spawn(async move {
        // The gate counts the caller while it decides, from its first step, which is this
        // one; a caller cancelled before it was counted by `cancel`, and nothing runs.
        if gate.is_some() && !delivered.hand_over() {
            return;
        }
        let result = work.await;
        if let Some(limiter) = gate {
            *delivered.lock() = Some(limiter.caller(floodwall::gate::Front::Python));
        }
        completions.get().finish(future, result, delivered);
    });
    Work {
        task: task.abort_handle(),
        waiting,
    }
}

/// The caller of one asyncio call while it waits for its answer: counted as gone once, by
/// whichever of the cancelled future and the loop's delivery sees it first.
#[derive(Debug, Clone)]
pub(crate) struct WaitingCaller(Arc<Mutex<Option<floodwall::gate::Caller>>>);

impl WaitingCaller {
    /// Stops counting the caller here, for the gate counts it from now on: false when it is
    /// gone already.
    fn hand_over(&self) -> bool {
        self.lock()
            .take()
            .map(floodwall::gate::Caller::answered)
            .is_some()
    }

    /// The caller has its answer: it is not counted.
    pub(crate) fn answered(&self) {
        if let Some(caller) = self.lock().take() {
            caller.answered();
        }
    }

    /// The caller left before its answer: counted, unless it was answered already.
    pub(crate) fn gone(&self) {
        let caller = self.lock().take();
        drop(caller);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<floodwall::gate::Caller>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
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
pub(crate) struct Work {
    task: tokio::task::AbortHandle,
    waiting: WaitingCaller,
}

#[pymethods]
impl Work {
    /// Stops the work where it waits: a decision not yet sent is not sent, a wait (acquire)
    /// ends, and what a store call took for it is given back. The caller is counted as gone.
    fn cancel(&self) {
        self.task.abort();
        self.waiting.gone();
    }
}
