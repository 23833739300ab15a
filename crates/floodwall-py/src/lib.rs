//! The `floodwall._native` extension module: the Rust limiter, its stores and its HTTP answers,
//! for the Python package in `python/floodwall`.
//!
//! Every decision is the Rust crates' own: the same algorithms, Redis scripts and keys, the same
//! client-IP walk and the same 429 answer as `floodwall-http`. The Python layer adds only what is
//! Python's (decorators, Flask and ASGI glue).

mod answer;
mod clock;
mod completions;
mod decision;
mod errors;
mod limiter;
mod policy;
mod reservation;
mod runtime;

use pyo3::prelude::*;

#[pymodule]
#[pyo3(name = "_native")]
fn native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    module.add_class::<policy::PyPolicy>()?;
    module.add_class::<decision::PyDecision>()?;
    module.add_class::<decision::PyVerdict>()?;
    module.add_class::<limiter::PyLimiter>()?;
    module.add_class::<reservation::PyReservation>()?;
    module.add_class::<clock::PyManualClock>()?;
    module.add_class::<answer::PyClientIp>()?;
    module.add_class::<answer::PyRateLimitHeaders>()?;
    module.add_class::<completions::Completions>()?;
    module.add_class::<runtime::Work>()?;
    module.add_function(wrap_pyfunction!(policy::parse_rate, module)?)?;
    module.add_function(wrap_pyfunction!(answer::store_unavailable, module)?)?;
    module.add_function(wrap_pyfunction!(answer::impossible_cost, module)?)?;
    module.add_function(wrap_pyfunction!(answer::missing_key, module)?)?;
    module.add("Error", py.get_type::<errors::Error>())?;
    module.add("ConfigError", py.get_type::<errors::ConfigError>())?;
    module.add(
        "StoreUnavailable",
        py.get_type::<errors::StoreUnavailable>(),
    )?;
    module.add("CostTooLarge", py.get_type::<errors::CostTooLarge>())?;
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
