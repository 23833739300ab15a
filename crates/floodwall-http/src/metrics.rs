//! Decision counters through the `metrics` facade: `floodwall_decisions_total{policy, outcome}`,
//! with `outcome` one of `allowed`, `denied`, `shadow_denied`, `error`. Labels are policy names
//! only, never a client key or a URI.
//!
//! Handles are registered when the layer is built, so a recorder (e.g.
//! `metrics-exporter-prometheus`) must be installed before then; without one they cost nothing.

use floodwall::{Decision, Mode, Policy, Verdict};
use metrics::{Counter, counter};

/// The name of the decision counter.
pub const DECISIONS_TOTAL: &str = "floodwall_decisions_total";

/// One policy's `floodwall_decisions_total` counters, registered once so that counting costs
/// no registry lookup. The layer keeps one per policy; so can any other front end (the
/// floodwall service's check API does) to count the same way.
#[derive(Debug)]
pub struct PolicyCounters {
    mode: Mode,
    allowed: Counter,
    denied: Counter,
    shadow_denied: Counter,
    error: Counter,
}

impl PolicyCounters {
    /// Registers `policy`'s counters with the installed recorder.
    pub fn new(policy: &Policy) -> Self {
        let name = policy.name().to_owned();
        let handle = |outcome: &'static str| counter!(DECISIONS_TOTAL, "policy" => name.clone(), "outcome" => outcome);
        PolicyCounters {
            mode: policy.mode(),
            allowed: handle("allowed"),
            denied: handle("denied"),
            shadow_denied: handle("shadow_denied"),
            error: handle("error"),
        }
    }

    /// Counts this policy's part in a verdict: its `decision`, and whether the request as a
    /// whole was `admitted`. Admitted, denied, or shadow-denied; a policy that admitted a
    /// request another policy denied is counted in neither.
    pub fn record(&self, decision: &Decision, admitted: bool) {
        match (decision.allowed, self.mode) {
            (true, _) if admitted => self.allowed.increment(1),
            (true, _) => {}
            (false, Mode::Shadow) => self.shadow_denied.increment(1),
            (false, _) => self.denied.increment(1),
        }
    }

    /// Counts a request that no decision could be made for (store down, failing closed).
    pub fn record_error(&self) {
        self.error.increment(1);
    }
}

/// The counters of one layer's policies, in the layer's order.
#[derive(Debug)]
pub(crate) struct DecisionCounters {
    policies: Vec<PolicyCounters>,
}

impl DecisionCounters {
    pub(crate) fn new(policies: &[Policy]) -> Self {
        DecisionCounters {
            policies: policies.iter().map(PolicyCounters::new).collect(),
        }
    }

    /// Counts each policy's part in `verdict` ([`PolicyCounters::record`]), a verdict on this
    /// layer's policies, in their order.
    pub(crate) fn record(&self, verdict: &Verdict) {
        for (counters, decision) in self.policies.iter().zip(verdict.decisions()) {
            counters.record(decision, verdict.allowed());
        }
    }

    /// Counts a request that no decision could be made for (store down, failing closed).
    pub(crate) fn record_error(&self) {
        self.policies.iter().for_each(PolicyCounters::record_error);
    }
}
