//! Decision counters through the `metrics` facade: `floodgate_decisions_total{policy, outcome}`,
//! with `outcome` one of `allowed`, `denied`, `shadow_denied`, `error`. Labels are policy names
//! only, never a client key or a URI.
//!
//! Handles are registered when the layer is built, so a recorder (e.g.
//! `metrics-exporter-prometheus`) must be installed before then; without one they cost nothing.

use floodgate::{Mode, Policy, Verdict};
use metrics::{Counter, counter};

/// The name of the decision counter.
pub const DECISIONS_TOTAL: &str = "floodgate_decisions_total";

/// One policy's counters.
#[derive(Debug)]
struct PolicyCounters {
    allowed: Counter,
    denied: Counter,
    shadow_denied: Counter,
    error: Counter,
}

/// The counters of one layer's policies, in the layer's order.
#[derive(Debug)]
pub(crate) struct DecisionCounters {
    policies: Vec<(Mode, PolicyCounters)>,
}

impl DecisionCounters {
    pub(crate) fn new(policies: &[Policy]) -> Self {
        let policies = policies
            .iter()
            .map(|policy| {
                let name = policy.name().to_owned();
                let handle = |outcome: &'static str| {
                    counter!(DECISIONS_TOTAL, "policy" => name.clone(), "outcome" => outcome)
                };
                let counters = PolicyCounters {
                    allowed: handle("allowed"),
                    denied: handle("denied"),
                    shadow_denied: handle("shadow_denied"),
                    error: handle("error"),
                };
                (policy.mode(), counters)
            })
            .collect();
        DecisionCounters { policies }
    }

    /// Counts each policy's part in `verdict`: admitted, the enforced denial(s), shadow denials.
    /// A policy that admitted a request another policy denied is counted in neither.
    pub(crate) fn record(&self, verdict: &Verdict) {
        for ((mode, counters), decision) in self.policies.iter().zip(&verdict.decisions) {
            match (decision.allowed, mode) {
                (true, _) if verdict.allowed => counters.allowed.increment(1),
                (true, _) => {}
                (false, Mode::Shadow) => counters.shadow_denied.increment(1),
                (false, _) => counters.denied.increment(1),
            }
        }
    }

    /// Counts a request that no decision could be made for (store down, failing closed).
    pub(crate) fn record_error(&self) {
        for (_, counters) in &self.policies {
            counters.error.increment(1);
        }
    }
}
