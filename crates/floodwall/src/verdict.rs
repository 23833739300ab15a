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
