//! The [`Verdict`] on one request under one or more policies: a store's [`Answer`] with each of
//! its decisions paired with the policy it belongs to.

use std::time::Duration;

use floodwall_core::{Decision, Mode, Policy};

use crate::store::{Answer, Source};
use smallvec::SmallVec;

/// The answer for one request under one or more policies, decided all-or-nothing: each
/// decision together with the policy it belongs to.
///
/// A verdict holds the policies it was decided under (a policy is cheap to clone: its name is
/// shared), so it can never be read against the wrong ones and outlives the caller's.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verdict {
    allowed: bool,
    retry_after: Option<Duration>,
    source: Source,
    policies: SmallVec<[Policy; 2]>,
    decisions: SmallVec<[Decision; 2]>,
}

impl Verdict {
    /// Pairs a store's `answer` with the policies of the [`Check`](crate::Check) it answers,
    /// in the check's order. When denied, the verdict's wait is the longest among the enforced
    /// policies' denials. The [`Limiter`](crate::Limiter) does this for every check; callers of
    /// a store's own methods do it themselves.
    pub fn from_answer<'p>(policies: impl IntoIterator<Item = &'p Policy>, answer: Answer) -> Self {
        let policies: SmallVec<[Policy; 2]> = policies.into_iter().cloned().collect();
        let retry_after = (!answer.allowed).then(|| {
            policies
                .iter()
                .zip(&answer.decisions)
                .filter(|(policy, _)| policy.mode() == Mode::Enforce)
                .filter_map(|(_, decision)| decision.retry_after)
                .max()
                // An operator's block denies under a shadow policy too, for its own wait.
                .or_else(|| answer.decisions.iter().filter_map(|d| d.retry_after).max())
                .unwrap_or(Duration::ZERO)
        });
        Verdict {
            allowed: answer.allowed,
            retry_after,
            source: answer.source,
            policies,
            decisions: answer.decisions,
        }
    }

    /// The verdict of `answer` on `check`.
    pub(crate) fn of(check: &crate::Check<'_>, answer: Answer) -> Self {
        Self::from_answer(check.policies(), answer)
    }

    /// Whether the request may go on: every enforced policy admitted it. When false, no policy
    /// consumed anything.
    #[inline]
    pub fn allowed(&self) -> bool {
        self.allowed
    }

    /// When denied: how long until every enforced policy would admit the same request, if no
    /// one else consumed meanwhile. `None` when allowed.
    #[inline]
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Who decided.
    #[inline]
    pub fn source(&self) -> Source {
        self.source
    }

    /// Each policy with its decision, in the order the policies were given. A shadow policy's
    /// decision may say `allowed: false` while the verdict allows.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&Policy, &Decision)> + '_ {
        self.policies.iter().zip(&self.decisions)
    }

    /// The policies decided under, in the order they were given.
    #[inline]
    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// The decisions alone, in the order the policies were given.
    #[inline]
    pub fn decisions(&self) -> &[Decision] {
        &self.decisions
    }

    /// The first policy's decision (the only one for a single-policy check).
    #[inline]
    pub fn decision(&self) -> Option<&Decision> {
        self.decisions.first()
    }

    /// The enforced policies that denied: the ones a denial names.
    pub fn violated(&self) -> impl Iterator<Item = &Policy> + '_ {
        self.iter()
            .filter(|(policy, decision)| policy.mode() == Mode::Enforce && !decision.allowed)
            .map(|(policy, _)| policy)
    }

    /// The positions of the policies whose units a refund may give back once the request this
    /// verdict admitted has been served, `served_in` after the decision: each that admitted (a
    /// shadow policy that denied took nothing) while its admission still counts (`served_in`
    /// is below its `reset_after`). A policy whose quota came back meanwhile (its window
    /// ended, its bucket refilled) has forgotten the request: a refund would hand the next
    /// period more than its limit. Every front end that refunds follows this rule.
    pub fn refundable(&self, served_in: Duration) -> impl Iterator<Item = usize> + '_ {
        self.decisions
            .iter()
            .enumerate()
            .filter(move |(_, decision)| decision.allowed && served_in < decision.reset_after)
            .map(|(index, _)| index)
    }

    /// How many policies were checked.
    #[inline]
    pub fn len(&self) -> usize {
        self.decisions.len()
    }

    /// Whether no policy was checked (such a verdict always allows).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.decisions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use floodwall_core::{Algorithm, Decision, Mode, Policy};
    use smallvec::smallvec;

    use super::Verdict;
    use crate::store::Answer;

    fn decision(allowed: bool, reset_after_ms: u64) -> Decision {
        Decision {
            allowed,
            capacity: 10,
            remaining: 5,
            reset_after: Duration::from_millis(reset_after_ms),
            retry_after: (!allowed).then(|| Duration::from_millis(reset_after_ms)),
            debt: 0,
        }
    }

    #[test]
    fn a_refund_gives_back_only_what_admitted_and_still_counts() {
        let policy = |name| Policy::new(name, Algorithm::FixedWindow, 10, Duration::from_secs(1));
        let policies = [
            policy("window").unwrap(),
            policy("shadow").unwrap().with_mode(Mode::Shadow),
            policy("short").unwrap(),
        ];
        let answer = Answer::from_store(
            true,
            smallvec![
                decision(true, 900),
                decision(false, 900),
                decision(true, 100)
            ],
        );
        let verdict = Verdict::from_answer(&policies, answer);
        let refundable = |ms| {
            verdict
                .refundable(Duration::from_millis(ms))
                .collect::<Vec<_>>()
        };
        // The shadow policy denied and took nothing; "short" forgot the request after 100 ms.
        assert_eq!(refundable(50), [0, 2]);
        assert_eq!(refundable(100), [0]);
        assert_eq!(refundable(900), Vec::<usize>::new());
    }
}
