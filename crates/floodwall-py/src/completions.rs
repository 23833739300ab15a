//! Handing results of Redis decisions to an asyncio event loop without the GIL.
//!
//! A decision finishes on a Tokio worker. Taking the GIL there to resolve the loop's future
//! would wait for Python's switch interval (5 ms) whenever the loop thread is busy, which it
//! is under load. Instead the worker queues the result and writes one byte to a socket the loop
//! watches; the loop thread, which holds the GIL anyway, takes the queue and resolves the
//! futures.

use std::io::Write;
use std::os::fd::{IntoRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;

use pyo3::IntoPyObjectExt;
use pyo3::prelude::*;

use crate::decision::{PyDecision, PyVerdict};
use crate::errors;
use crate::runtime::WaitingCaller;

/// What a finished decision gives its future.
pub(crate) enum Delivery {
    Decision(PyDecision),
    /// Boxed: a verdict carries its decisions inline, several times any other delivery.
    Verdict(Box<PyVerdict>),
    /// A decision and the units it holds: the holder goes to the future only if it still
    /// waits; otherwise the units are released.
    Held(PyDecision, Option<HeldUnits>),
    Done,
}

/// The units a hold took, released if dropped before Python has the holder: when its future
/// was cancelled, or its loop closed before taking it. Dropped inside floodwall's runtime,
/// wherever it is dropped from, since a release on drop needs one.
pub(crate) struct HeldUnits(Option<Box<floodwall::LeaseGuard>>);

impl HeldUnits {
    pub(crate) fn new(guard: floodwall::LeaseGuard) -> Self {
        HeldUnits(Some(Box::new(guard)))
    }

    /// Keeps the units held past this value: returns who holds them.
    pub(crate) fn keep(mut self) -> Option<u128> {
        let guard = self.0.take()?;
        let holder = guard.holder().map(|holder| holder.0);
        guard.keep();
        holder
    }
}

impl Drop for HeldUnits {
    fn drop(&mut self) {
        if let Some(guard) = self.0.take() {
            crate::runtime::within(|| drop(guard));
        }
    }
}

/// A finished decision, its future, and its caller: counted as gone if the future was
/// cancelled before the loop hands the result over.
type Finished = (Py<PyAny>, Result<Delivery, floodwall::Error>, WaitingCaller);

/// A finished decision as the loop takes it: (future, succeeded, result or exception).
type Resolved = (Py<PyAny>, bool, Py<PyAny>);

/// One event loop's queue of finished decisions, and the socket that wakes the loop.
#[pyclass(frozen, name = "Completions", module = "floodwall._native")]
#[derive(Debug)]
pub(crate) struct Completions {
    finished: Mutex<Vec<Finished>>,
    wake: UnixStream,
    /// The loop's end, until Python takes it.
    reader: Mutex<Option<OwnedFd>>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Delivery")
    }
}

impl Completions {
    /// Queues a result for `future`, waking the loop if the queue was empty (a waiting wake-up
    /// covers everything queued before the loop drains).
    pub(crate) fn finish(
        &self,
        future: Py<PyAny>,
        result: Result<Delivery, floodwall::Error>,
        caller: WaitingCaller,
    ) {
        let was_empty = {
            let mut finished = self
                .finished
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            finished.push((future, result, caller));
            finished.len() == 1
        };
        if was_empty {
            // A full socket buffer means a wake-up is already pending: nothing is lost.
            let _ = (&self.wake).write(&[1]);
        }
    }
}

#[pymethods]
impl Completions {
    #[new]
    fn new() -> PyResult<Self> {
        let (wake, reader) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        reader.set_nonblocking(true)?;
        Ok(Completions {
            finished: Mutex::new(Vec::new()),
            wake,
            reader: Mutex::new(Some(OwnedFd::from(reader))),
        })
    }

    /// The file descriptor the loop reads wake-ups from; the caller owns it (once).
    fn take_reader(&self) -> PyResult<i32> {
        self.reader
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .map(IntoRawFd::into_raw_fd)
            .ok_or_else(|| errors::Error::new_err("the reader was taken already"))
    }

    /// The finished decisions whose futures still wait: (future, succeeded, result or
    /// exception), oldest first. Those whose futures were cancelled are dropped here (their
    /// callers counted as gone, their held units released); nothing can cancel a future
    /// between this call and the loop resolving it, since both run on the loop's thread.
    fn take(&self, py: Python<'_>) -> PyResult<Vec<Resolved>> {
        let finished = std::mem::take(
            &mut *self
                .finished
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let mut out = Vec::with_capacity(finished.len());
        for (future, result, caller) in finished {
            if future.bind(py).call_method0("cancelled")?.is_truthy()? {
                // The caller gave up; the decision itself has happened. Units it held go
                // back as the result drops.
                caller.gone();
                continue;
            }
            caller.answered();
            out.push(match result {
                Ok(Delivery::Decision(decision)) => (future, true, decision.into_py_any(py)?),
                Ok(Delivery::Verdict(verdict)) => (future, true, (*verdict).into_py_any(py)?),
                Ok(Delivery::Held(decision, guard)) => {
                    let holder = guard.and_then(HeldUnits::keep);
                    (future, true, (decision, holder).into_py_any(py)?)
                }
                Ok(Delivery::Done) => (future, true, py.None()),
                Err(error) => (
                    future,
                    false,
                    errors::from_limiter(error).into_value(py).into_any(),
                ),
            });
        }
        Ok(out)
    }
}
