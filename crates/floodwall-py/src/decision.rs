//! `floodwall.Decision` (one policy's answer) and `floodwall.Verdict` (a check under several).

use std::time::Duration;

use floodwall::{Decision, Policy, Source, Verdict};
use pyo3::prelude::*;
use pyo3::types::PyList;

/// One policy's answer for one key.
#[pyclass(frozen, name = "Decision", module = "floodwall")]
#[derive(Debug, Clone)]
pub(crate) struct PyDecision {
    /// Whether the request may go on.
    #[pyo3(get)]
    allowed: bool,
    /// The most units the key can hold (the burst of a bucket, else the limit).
    #[pyo3(get)]
    limit: u64,
    /// Units left now; never negative.
    #[pyo3(get)]
    remaining: u64,
    /// Seconds until the key is back to its full quota.
    #[pyo3(get)]
    reset_after: f64,
    /// When denied, the seconds after which the same request would be admitted if no one else
    /// consumed meanwhile; None when allowed.
    #[pyo3(get)]
    retry_after: Option<f64>,
    /// The policy decided by (its name is the `policy` attribute): shared with the policy, so
    /// that a decision costs no copy of the name.
    decided_by: Policy,
    /// False when the store failed and the policy failed open: allowed without counting.
    #[pyo3(get)]
    counted: bool,
    /// Units the key owes past zero (a charge took more than was left); `remaining` is 0 while
    /// it owes any.
    #[pyo3(get)]
    debt: u64,
}

impl PyDecision {
    pub(crate) fn new(policy: &Policy, decision: &Decision, source: Source) -> Self {
        PyDecision {
            allowed: decision.allowed,
            limit: decision.capacity,
            remaining: decision.remaining,
            reset_after: decision.reset_after.as_secs_f64(),
            retry_after: decision.retry_after.map(|d| d.as_secs_f64()),
            decided_by: policy.clone(),
            counted: source != Source::FailOpen,
            debt: decision.debt,
        }
    }

    /// The decision of a verdict on `policy` alone.
    pub(crate) fn of(policy: &Policy, verdict: &Verdict) -> Self {
        Self::first(
            policy,
            verdict.decisions().first(),
            verdict.allowed(),
            verdict.source(),
        )
    }

    fn first(policy: &Policy, decision: Option<&Decision>, allowed: bool, source: Source) -> Self {
        match decision {
            Some(decision) => PyDecision::new(policy, decision, source),
            // An answer has a decision per policy, so this is never reached; if it were, the
            // answer's own verdict is the truest one to give.
            None => PyDecision {
                allowed,
                limit: 0,
                remaining: 0,
                reset_after: 0.0,
                retry_after: None,
                decided_by: policy.clone(),
                counted: false,
                debt: 0,
            },
        }
    }
}

#[pymethods]
impl PyDecision {
    /// The policy's name.
    #[getter]
    fn policy(&self) -> &str {
        self.decided_by.name()
    }

    fn __bool__(&self) -> bool {
        self.allowed
    }

    fn __repr__(&self) -> String {
        format!(
            "Decision(allowed={}, policy={:?}, limit={}, remaining={}, reset_after={:.3}, retry_after={})",
            if self.allowed { "True" } else { "False" },
            self.decided_by.name(),
            self.limit,
            self.remaining,
            self.reset_after,
            self.retry_after
                .map_or_else(|| "None".to_owned(), |s| format!("{s:.3}"))
        )
    }
}

/// The answer of a check under several policies at once: allowed only if every enforced policy
/// allowed, with each policy's decision in the order given.
#[pyclass(frozen, name = "Verdict", module = "floodwall")]
#[derive(Debug)]
pub(crate) struct PyVerdict {
    pub(crate) verdict: Verdict,
}

#[pymethods]
impl PyVerdict {
    /// Whether the request may go on.
    #[getter]
    fn allowed(&self) -> bool {
        self.verdict.allowed()
    }

    /// Each policy's decision, in the order of the policies checked.
    #[getter]
    fn decisions<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let source = self.verdict.source();
        let decisions = self
            .verdict
            .iter()
            .map(|(policy, decision)| PyDecision::new(policy, decision, source));
        PyList::new(py, decisions)
    }

    /// When denied, the seconds until every enforced policy that denied would admit the same
    /// request; None when allowed.
    #[getter]
    fn retry_after(&self) -> Option<f64> {
        self.verdict
            .retry_after()
            .map(|d: Duration| d.as_secs_f64())
    }

    /// The names of the enforced policies that denied.
    #[getter]
    fn violated(&self) -> Vec<String> {
        self.verdict
            .violated()
            .map(|p| p.name().to_owned())
            .collect()
    }

    /// False when the store failed and the policy failed open: allowed without counting.
    #[getter]
    fn counted(&self) -> bool {
        self.verdict.source() != Source::FailOpen
    }

    /// The positions of the policies whose units a refund may give back once the request was
    /// served, `served_in` seconds after this verdict: each that admitted, while its admission
    /// still counts (a window that ended or a bucket that refilled has forgotten it, and a
    /// refund would hand the next period more than its limit). The rule every front end of
    /// floodwall refunds by.
    fn refundable(&self, served_in: f64) -> Vec<usize> {
        let served_in = Duration::try_from_secs_f64(served_in).unwrap_or(Duration::MAX);
        self.verdict.refundable(served_in).collect()
    }

    /// The rate-limit headers of this verdict as the Rust HTTP layer writes them, for `mode`
    /// "draft" (RateLimit-Policy and RateLimit), "legacy" (X-RateLimit-*), "both" or "none";
    /// with Retry-After when denied.
    #[pyo3(signature = (mode = "draft"))]
    fn headers(&self, mode: &str) -> PyResult<Vec<(String, String)>> {
        crate::answer::verdict_headers(self, mode)
    }

    /// The whole 429 answer to this verdict as the Rust HTTP layer sends it: (status, headers,
    /// problem+json body).
    #[pyo3(signature = (mode = "draft"))]
    fn denial(&self, py: Python<'_>, mode: &str) -> PyResult<crate::answer::HttpAnswer> {
        crate::answer::denial(py, self, mode)
    }

    fn __bool__(&self) -> bool {
        self.verdict.allowed()
    }

    fn __len__(&self) -> usize {
        self.verdict.len()
    }

    fn __repr__(&self) -> String {
        format!(
            "Verdict(allowed={}, policies={:?})",
            if self.verdict.allowed() {
                "True"
            } else {
                "False"
            },
            self.verdict
                .iter()
                .map(|(policy, _)| policy.name())
                .collect::<Vec<_>>()
        )
    }
}
