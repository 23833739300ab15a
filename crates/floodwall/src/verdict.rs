//! The answer for one request under one or more policies.

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
}

/// The answer for one request under one or more policies, decided all-or-nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the request may go on: every enforced policy admitted it. When false, no policy
    /// consumed anything.
    pub allowed: bool,
    /// One decision per policy, in the order the policies were given. A shadow policy's decision
    /// may say `allowed: false` while the verdict allows.
    pub decisions: SmallVec<[Decision; 2]>,
    /// When denied: how long until every enforced policy would admit the same request, if no one
    /// else consumed meanwhile.
    pub retry_after: Option<Duration>,
    /// Who decided.
    pub source: Source,
}

impl Verdict {
    /// The first policy's decision (the only one for a single-policy check).
    pub fn decision(&self) -> Option<&Decision> {
        self.decisions.first()
    }
}

/// Builds a store's verdict: when denied, the wait is the longest among enforced denials.
pub(crate) fn verdict(
    policies: &[Policy],
    decisions: SmallVec<[Decision; 2]>,
    allowed: bool,
) -> Verdict {
    let retry_after = if allowed {
        None
    } else {
        policies
            .iter()
            .zip(&decisions)
            .filter(|(p, _)| p.mode() == Mode::Enforce)
            .filter_map(|(_, d)| d.retry_after)
            .max()
            .or(Some(Duration::ZERO))
    };
    Verdict {
        allowed,
        decisions,
        retry_after,
        source: Source::Store,
    }
}
