//! Decision counters through the `metrics` facade: `floodwall_decisions_total{policy, outcome}`,
//! with `outcome` one of `allowed`, `denied`, `shadow_denied`, `error`. Labels are policy names
//! only, never a client key or a URI.
//!
//! Handles are registered when the layer is built, so a recorder (e.g.
//! `metrics-exporter-prometheus`) must be installed before then; without one they cost nothing.

use std::collections::HashMap;

use floodwall::gate::{Observed, Observer};
use floodwall::{Decision, Error, Mode, Policy, Verdict};

use metrics::{Counter, counter};

/// The name of the decision counter.
pub const DECISIONS_TOTAL: &str = "floodwall_decisions_total";

/// The name of the settle counter: costs charged after the answer, by front end and outcome
/// (`charged`, or `failed`: the store could not take it and the cost is lost).
pub const SETTLES_TOTAL: &str = "floodwall_settles_total";

/// One front end's `floodwall_settles_total` counters, registered once.
#[derive(Debug, Clone)]
pub struct SettleCounters {
    charged: Counter,
    failed: Counter,
}

impl SettleCounters {
    /// Registers the counters of `front` (`http`, `rls`, `check`) with the installed recorder.
    pub fn new(front: &'static str) -> Self {
        let handle =
            |outcome: &'static str| counter!(SETTLES_TOTAL, "front" => front, "outcome" => outcome);
        SettleCounters {
            charged: handle("charged"),
            failed: handle("failed"),
        }
    }

    /// Counts a settle by whether the store took it.
    pub fn count(&self, charged: bool) {
        match charged {
            true => self.charged.increment(1),
            false => self.failed.increment(1),
        }
    }
}

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

/// The `floodwall_decisions_total` counters of a set of policies: how every front end counts
/// its decisions (the layer, the service's check API and its RLS), so that a policy's figures
/// mean the same whichever front end decided. As a gate's [`Observer`] it counts each
/// decision of the gate.
#[derive(Debug, Default)]
pub struct DecisionCounters {
    /// In registration order (a layer's verdicts come in it: no lookup), with an index by name
    /// for verdicts that come in another.
    policies: Vec<(String, PolicyCounters)>,
    by_name: HashMap<String, usize>,
    /// Names the registered policy an unregistered one is counted under.
    counted_as: Option<CountedAs>,
}

/// Names the registered policy a policy is counted under, when it is not registered itself.
pub type CountedAs = fn(&str) -> Option<&str>;

impl DecisionCounters {
    /// Registers the counters of each of `policies` with the installed recorder.
    pub fn new<'p>(policies: impl IntoIterator<Item = &'p Policy>) -> Self {
        let mut counters = DecisionCounters::default();
        for policy in policies {
            if !counters.by_name.contains_key(policy.name()) {
                let at = counters.policies.len();
                counters.by_name.insert(policy.name().to_owned(), at);
                counters
                    .policies
                    .push((policy.name().to_owned(), PolicyCounters::new(policy)));
            }
        }
        counters
    }

    /// These counters, counting a policy that is not registered under the registered one
    /// `counted_as` names (a policy made from another, as an Envoy descriptor's own limit is);
    /// a policy neither names is not counted.
    #[must_use]
    pub fn counted_as(self, counted_as: CountedAs) -> Self {
        DecisionCounters {
            counted_as: Some(counted_as),
            ..self
        }
    }

    /// The counters of the policy named `name`, expected at `position` (a verdict in
    /// registration order finds it there without hashing).
    fn of(&self, position: usize, name: &str) -> Option<&PolicyCounters> {
        match self.policies.get(position) {
            Some((registered, counters)) if registered == name => Some(counters),
            _ => self.named(name),
        }
    }

    /// The counters of the policy named `name`, by the index.
    fn named(&self, name: &str) -> Option<&PolicyCounters> {
        let at = self.by_name.get(name)?;
        self.policies.get(*at).map(|(_, counters)| counters)
    }

    /// Counts each policy's part in `verdict` ([`PolicyCounters::record`]), the request
    /// `admitted` as a whole or not.
    pub fn record(&self, verdict: &Verdict, admitted: bool) {
        for (position, (policy, decision)) in verdict.iter().enumerate() {
            let counters = self.of(position, policy.name()).or_else(|| {
                let counted_as = self.counted_as?;
                self.named(counted_as(policy.name())?)
            });
            if let Some(counters) = counters {
                counters.record(decision, admitted);
            }
        }
    }

    /// Counts a request of `policies` that no decision could be made for (the store failed and
    /// a policy fails closed).
    pub fn record_error<'p>(&self, policies: impl IntoIterator<Item = &'p Policy>) {
        for (position, policy) in policies.into_iter().enumerate() {
            if let Some(counters) = self.of(position, policy.name()) {
                counters.record_error();
            }
        }
    }
}

impl Observer for DecisionCounters {
    fn decided(&self, decision: &Observed<'_, '_>) {
        match decision.outcome {
            Ok(verdict) => self.record(verdict, decision.admitted),
            Err(Error::StoreUnavailable { .. }) => self.record_error(decision.check.policies()),
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use floodwall::store::Answer;
    use floodwall::{Algorithm, Decision, Policy, Verdict};
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use smallvec::smallvec;

    use super::DecisionCounters;

    fn decision(allowed: bool) -> Decision {
        Decision {
            allowed,
            capacity: 5,
            remaining: 0,
            reset_after: Duration::from_secs(1),
            retry_after: (!allowed).then_some(Duration::from_secs(1)),
            debt: 0,
        }
    }

    /// One set of counters serves every front end: verdicts in any order, policies made from
    /// others counted under them, errors by name.
    #[test]
    fn counters_find_each_policy_whatever_the_order() {
        let policy = |name| Policy::new(name, Algorithm::FixedWindow, 5, Duration::from_secs(1));
        let (a, b) = (policy("a").unwrap(), policy("b").unwrap());
        let derived = policy("b.override-1").unwrap();
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            fn base(name: &str) -> Option<&str> {
                name.split_once(".override-").map(|(base, _)| base)
            }
            let counters = DecisionCounters::new([&a, &b]).counted_as(base);
            // b then a: out of registration order.
            let answer = Answer::from_store(true, smallvec![decision(true), decision(true)]);
            counters.record(&Verdict::from_answer([&b, &a], answer), true);
            let answer = Answer::from_store(false, smallvec![decision(false)]);
            let verdict = Verdict::from_answer([&derived], answer);
            counters.record(&verdict, false);
            counters.record_error([&b]);
        });
        let counts: std::collections::BTreeMap<String, u64> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter_map(|(key, _, _, value)| match value {
                DebugValue::Counter(count) => Some((
                    key.key()
                        .labels()
                        .map(|l| l.value().to_owned())
                        .collect::<Vec<_>>()
                        .join(","),
                    count,
                )),
                _ => None,
            })
            .collect();
        assert_eq!(counts.get("a,allowed"), Some(&1));
        assert_eq!(counts.get("b,allowed"), Some(&1));
        assert_eq!(counts.get("b,denied"), Some(&1), "{counts:?}");
        assert_eq!(counts.get("b,error"), Some(&1));
    }
}
