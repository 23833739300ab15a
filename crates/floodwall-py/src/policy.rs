//! `floodwall.Policy`: a named limit, built from a rate string or a (count, period) pair.

use std::str::FromStr;
use std::time::Duration;

use floodwall::{Algorithm, Mode, OnError, Policy};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::errors::{self, ConfigError};

/// A named limit on one client key: `limit` units per `period` under one algorithm.
#[pyclass(frozen, name = "Policy", module = "floodwall")]
#[derive(Debug, Clone)]
pub(crate) struct PyPolicy {
    pub(crate) inner: Policy,
}

#[pymethods]
impl PyPolicy {
    /// `limit` is a rate string ("10/minute", "5 per 2 minutes") or a (count, period) pair with
    /// the period in seconds or as a `datetime.timedelta`.
    #[new]
    #[pyo3(signature = (name, limit, *, algorithm = "sliding_window", burst = None, prefetch = 0, max_debt = None, mode = "enforce", on_error = None))]
    #[allow(clippy::too_many_arguments)] // Python's keyword arguments, one per setting
    fn new(
        name: &str,
        limit: &Bound<'_, PyAny>,
        algorithm: &str,
        burst: Option<u64>,
        prefetch: u64,
        max_debt: Option<u64>,
        mode: &str,
        on_error: Option<&str>,
    ) -> PyResult<Self> {
        let algorithm = Algorithm::from_str(algorithm).map_err(errors::config)?;
        let (count, period) = limit_of(limit)?;
        let mut policy = Policy::new(name, algorithm, count, period).map_err(errors::config)?;
        if let Some(burst) = burst {
            policy = policy.with_burst(burst).map_err(errors::config)?;
        }
        policy = policy.with_prefetch(prefetch).map_err(errors::config)?;
        if let Some(max_debt) = max_debt {
            policy = policy.with_max_debt(max_debt).map_err(errors::config)?;
        }
        policy = policy.with_mode(mode_of(mode)?);
        if let Some(on_error) = on_error {
            policy = policy.with_on_error(on_error_of(on_error)?);
        }
        Ok(PyPolicy { inner: policy })
    }

    /// The policy's name: its key in every store, header and metric.
    #[getter]
    fn name(&self) -> &str {
        self.inner.name()
    }

    /// Units admitted per period.
    #[getter]
    fn limit(&self) -> u64 {
        self.inner.limit()
    }

    /// The period, in seconds.
    #[getter]
    fn period(&self) -> f64 {
        self.inner.period().as_secs_f64()
    }

    /// The algorithm's name, as `algorithm=` takes it.
    #[getter]
    fn algorithm(&self) -> &'static str {
        self.inner.algorithm().as_str()
    }

    /// The bucket size of token_bucket and gcra, when set.
    #[getter]
    fn burst(&self) -> Option<u64> {
        self.inner.burst()
    }

    /// Units an instance reserves from Redis at once for a hot key (fixed_window only); 0 when
    /// none.
    #[getter]
    fn prefetch(&self) -> u64 {
        self.inner.prefetch()
    }

    /// The most a key may owe past zero after a charge (`Limiter.debit`, a reservation settled
    /// above its estimate): the capacity unless set; 0 for an algorithm without debt.
    #[getter]
    fn max_debt(&self) -> u64 {
        self.inner.max_debt()
    }

    /// "enforce" or "shadow".
    #[getter]
    fn mode(&self) -> &'static str {
        match self.inner.mode() {
            Mode::Shadow => "shadow",
            _ => "enforce",
        }
    }

    /// The policy's own answer to a store failure, overriding the limiter's; None when unset.
    #[getter]
    fn on_error(&self) -> Option<&'static str> {
        self.inner.on_error().map(OnError::as_str)
    }

    fn __repr__(&self) -> String {
        format!(
            "Policy({:?}, ({}, {}), algorithm={:?})",
            self.inner.name(),
            self.inner.limit(),
            self.inner.period().as_secs_f64(),
            self.inner.algorithm().as_str()
        )
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<PyPolicy>()
            .is_ok_and(|other| other.get().inner == self.inner)
    }

    fn __hash__(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.inner.name().hash(&mut hasher);
        self.inner.algorithm().as_str().hash(&mut hasher);
        self.inner.limit().hash(&mut hasher);
        self.inner.period_us().hash(&mut hasher);
        hasher.finish()
    }
}

/// Parses a rate string into (count, period in seconds).
#[pyfunction]
pub(crate) fn parse_rate(rate: &str) -> PyResult<(u64, f64)> {
    let rate = floodwall::core::parse_rate(rate).map_err(errors::config)?;
    Ok((rate.limit, rate.period.as_secs_f64()))
}

fn limit_of(limit: &Bound<'_, PyAny>) -> PyResult<(u64, Duration)> {
    if let Ok(text) = limit.extract::<String>() {
        let rate = floodwall::core::parse_rate(&text).map_err(errors::config)?;
        return Ok((rate.limit, rate.period));
    }
    let pair = limit.cast::<PyTuple>().map_err(|_| {
        ConfigError::new_err(
            "limit must be a rate string such as \"10/minute\" or a (count, period) pair, \
             the period in seconds or a datetime.timedelta",
        )
    })?;
    if pair.len() != 2 {
        return Err(ConfigError::new_err(
            "limit as a tuple must be (count, period): two items",
        ));
    }
    let count: u64 = pair.get_item(0)?.extract().map_err(|_| {
        ConfigError::new_err("the count of a (count, period) limit must be a whole number >= 1")
    })?;
    let period = pair.get_item(1)?;
    let period = match period.extract::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds > 0.0 => {
            Duration::try_from_secs_f64(seconds).map_err(errors::config)?
        }
        Ok(_) => {
            return Err(ConfigError::new_err(
                "the period of a (count, period) limit must be a positive number of seconds",
            ));
        }
        Err(_) => period.extract::<Duration>().map_err(|_| {
            ConfigError::new_err(
                "the period of a (count, period) limit must be seconds or a datetime.timedelta",
            )
        })?,
    };
    Ok((count, period))
}

fn mode_of(mode: &str) -> PyResult<Mode> {
    match mode {
        "enforce" => Ok(Mode::Enforce),
        "shadow" => Ok(Mode::Shadow),
        other => Err(ConfigError::new_err(format!(
            "unknown mode {other:?}: expected \"enforce\" or \"shadow\""
        ))),
    }
}

pub(crate) fn on_error_of(on_error: &str) -> PyResult<OnError> {
    OnError::from_str(on_error).map_err(errors::config)
}
