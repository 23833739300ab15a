//! `floodwall.Reservation`: a request admitted on an estimate of its cost, settled at its actual
//! cost once known.

use std::sync::Mutex;

use floodwall::Reservation;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use crate::decision::PyVerdict;
use crate::errors;
use crate::runtime;

/// A request admitted on an estimate of its cost (`Limiter.reserve`). `settle(actual)` charges
/// the difference once: more is charged whatever is left, less is given back while the
/// admission still counts. Unsettled (left, or the `with` block raised), it is settled at its
/// estimate.
#[pyclass(frozen, name = "Reservation", module = "floodwall")]
pub(crate) struct PyReservation {
    /// Taken by the one settle.
    unsettled: Mutex<Option<Reservation>>,
    /// The answer to the reservation, kept after the settle.
    verdict: Py<PyVerdict>,
    allowed: bool,
    estimate: u64,
}

impl PyReservation {
    pub(crate) fn new(py: Python<'_>, reservation: Reservation) -> PyResult<Self> {
        let verdict = Py::new(
            py,
            PyVerdict {
                verdict: reservation.verdict().clone(),
            },
        )?;
        Ok(PyReservation {
            allowed: reservation.allowed(),
            estimate: reservation.estimate(),
            verdict,
            unsettled: Mutex::new(Some(reservation)),
        })
    }
}

#[pymethods]
impl PyReservation {
    /// Whether the request may go on.
    #[getter]
    fn allowed(&self) -> bool {
        self.allowed
    }

    /// The cost the request was admitted for.
    #[getter]
    fn estimate(&self) -> u64 {
        self.estimate
    }

    /// What each policy decided on the estimate.
    #[getter]
    fn verdict(&self, py: Python<'_>) -> Py<PyVerdict> {
        self.verdict.clone_ref(py)
    }

    /// Settles at `actual`, once, and returns the state afterwards. A second settle raises.
    fn settle(&self, py: Python<'_>, actual: u64) -> PyResult<PyVerdict> {
        let taken = match self.unsettled.lock() {
            Ok(mut unsettled) => unsettled.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        let Some(reservation) = taken else {
            return Err(PyRuntimeError::new_err(
                "this reservation was settled already",
            ));
        };
        let verdict =
            runtime::block_on(py, reservation.settle(actual)).map_err(errors::from_limiter)?;
        Ok(PyVerdict { verdict })
    }

    fn __bool__(&self) -> bool {
        self.allowed
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Leaving the block settles nothing more: an unsettled reservation stays at its estimate.
    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        false
    }
}
