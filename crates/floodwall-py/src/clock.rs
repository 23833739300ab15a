//! `floodwall.testing.ManualClock`: time that moves only when a test moves it.

use std::time::Duration;

use floodwall::{Clock, ManualClock};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// A clock for tests: a `Limiter(..., clock=clock)` reads it instead of the system's (or, on
/// Redis, instead of the server's `TIME`), so waits can be checked without sleeping.
#[pyclass(frozen, name = "ManualClock", module = "floodwall.testing")]
#[derive(Debug, Clone)]
pub(crate) struct PyManualClock {
    pub(crate) inner: ManualClock,
}

#[pymethods]
impl PyManualClock {
    /// A clock reading `now` seconds since the Unix epoch.
    #[new]
    #[pyo3(signature = (now = 1_700_000_000.0))]
    fn new(now: f64) -> PyResult<Self> {
        Ok(PyManualClock {
            inner: ManualClock::new(micros(now)?),
        })
    }

    /// Moves the clock forward by `seconds`.
    fn advance(&self, seconds: f64) -> PyResult<()> {
        self.inner.advance_us(micros(seconds)?);
        Ok(())
    }

    /// Sets the clock to `now` seconds since the Unix epoch, backwards included.
    fn set(&self, now: f64) -> PyResult<()> {
        self.inner.set_us(micros(now)?);
        Ok(())
    }

    /// The time, in seconds since the Unix epoch.
    fn now(&self) -> f64 {
        Duration::from_micros(self.inner.now_us()).as_secs_f64()
    }
}

/// Whole microseconds of a non-negative number of seconds, rounded up, so that advancing by a
/// `retry_after` never lands just short of it.
fn micros(seconds: f64) -> PyResult<u64> {
    let duration = Duration::try_from_secs_f64(seconds)
        .map_err(|_| PyValueError::new_err("seconds must be finite and not negative"))?;
    Ok(floodwall::core::ceil_micros(duration))
}
