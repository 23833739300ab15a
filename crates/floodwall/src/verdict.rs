//! The answer for one request under one or more policies: a store's [`Answer`], and the
//! [`Verdict`] that pairs each of its decisions with the policy it belongs to.

use std::time::Duration;

use floodwall_core::{Decision, Mode, Policy};
use smallvec::SmallVec;

/// Where a verdict came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Source {
    /// The store decided.
    Store,
    /// The store failed and the policy fails open: allowed without counting.
    FailOpen,
    /// The store failed and an in-process fallback limiter decided.
    Local,
    /// The store denied this key moments ago until a time not yet reached; this instance
    /// repeated that denial without asking again.
    DenyCache,
    /// This instance admitted from units it had reserved from the store moments ago (a
    /// policy's lease): counted in the store, spent here.
    Lease,
    /// An operator blocked a key of the check for a while: denied without asking the store,
    /// with the block's end as the wait.
    Blocked,
    /// A key of the check (or the client's address) is on the allow list: admitted, and the
    /// listed pairs counted nothing.
    AllowList,
    /// A key of the check (or the client's address) is on the deny list: refused whatever the
    /// policies say (HTTP 403, not 429: waiting does not help).
    DenyList,
}

/// What a [`Store`](crate::Store) answers for a [`Check`](crate::Check): whether the request is
/// admitted, and one decision per (policy, key) pair, in the check's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Every enforced policy admitted, and each admitting pair consumed. When false, nothing
    /// was consumed.
    pub allowed: bool,
    /// One decision per pair, in the check's order.
    pub decisions: SmallVec<[Decision; 2]>,
    /// Who decided.
    pub source: Source,
}

impl Answer {
    /// A store's own answer.
    #[inline]
    pub fn from_store(allowed: bool, decisions: SmallVec<[Decision; 2]>) -> Self {
        Answer {
            allowed,
            decisions,
            source: Source::Store,
        }
    }
}

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
