//! Running the limiter's futures from Python: at once when they cannot wait (the memory store),
//! on the shared Tokio runtime with the GIL released when they can (Redis).

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;

/// Runs `future` to completion without holding the GIL, on the runtime the async methods share.
pub(crate) fn block_on<F>(py: Python<'_>, future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    let runtime = pyo3_async_runtimes::tokio::get_runtime();
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

/// An awaitable that is already done: what the async methods return when the store answered at
/// once, so that asyncio pays for no task, thread hop or loop callback.
#[pyclass(frozen, module = "floodwall._native")]
pub(crate) struct Ready {
    value: Py<PyAny>,
}

impl Ready {
    pub(crate) fn new(value: Py<PyAny>) -> Self {
        Ready { value }
    }
}

#[pymethods]
impl Ready {
    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Err(PyStopIteration::new_err((self.value.clone_ref(py),)))
    }

    fn send(&self, py: Python<'_>, _value: Py<PyAny>) -> PyResult<Py<PyAny>> {
        self.__next__(py)
    }

    fn close(&self) {}
}
