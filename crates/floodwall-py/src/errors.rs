//! The exceptions of the package, and how the Rust errors map onto them.

use floodwall::CheckError;
use pyo3::PyErr;
use pyo3::create_exception;
use pyo3::exceptions::PyException;

create_exception!(
    _native,
    Error,
    PyException,
    "Anything floodwall could not do; being limited is a Decision, not an Error."
);
create_exception!(
    _native,
    ConfigError,
    Error,
    "A policy, rate, storage URL or option that cannot work; the message says how to fix it."
);
create_exception!(
    _native,
    StoreUnavailable,
    Error,
    "The store failed (or missed its deadline) and the policy fails closed (on_error=\"deny\")."
);
create_exception!(
    _native,
    CostTooLarge,
    Error,
    "A cost the policy can never admit, whatever the state: an error of the caller."
);

/// The Python exception for a limiter error.
pub(crate) fn from_limiter(error: floodwall::Error) -> PyErr {
    match error {
        floodwall::Error::Check(CheckError::Cost(cost)) => CostTooLarge::new_err(cost.to_string()),
        floodwall::Error::StoreUnavailable { .. } => StoreUnavailable::new_err(error.to_string()),
        other => ConfigError::new_err(other.to_string()),
    }
}

/// A configuration mistake, with the message the Rust side wrote for it.
pub(crate) fn config(error: impl std::fmt::Display) -> PyErr {
    ConfigError::new_err(error.to_string())
}
