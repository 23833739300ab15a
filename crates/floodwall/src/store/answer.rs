//! What a store answers: whether a check is admitted, a decision per (policy, key) pair, and
//! who decided.

use floodwall_core::Decision;
use smallvec::SmallVec;

/// Who decided a check: the store, or the limiter in its place.
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
    /// policy's prefetch): counted in the store, spent here.
    Prefetched,
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

impl Source {
    /// The source's name in spans and logs: `store`, `fail_open`, `local`, `deny_cache`,
    /// `prefetched`, `blocked`, `allow_list`, `deny_list`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Store => "store",
            Source::FailOpen => "fail_open",
            Source::Local => "local",
            Source::DenyCache => "deny_cache",
            Source::Prefetched => "prefetched",
            Source::Blocked => "blocked",
            Source::AllowList => "allow_list",
            Source::DenyList => "deny_list",
        }
    }
}

/// What a [`Store`](crate::store::Store) answers for a [`Check`](crate::Check): whether the request is
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
