//! Errors: a store that could not decide, and a limiter that could not answer.

use floodwall_core::CostError;

/// Why a store could not decide. Being limited is not an error: that is a denied
/// [`Verdict`](crate::Verdict). A cost that can never pass is not a store's concern either: a
/// [`Check`](crate::Check) cannot be built with one.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store did not answer within its deadline. The request may or may not have been
    /// counted; it is never retried (a retry could count it twice).
    #[error("rate-limit store did not answer within {after:?}")]
    Timeout {
        /// The deadline that passed.
        after: std::time::Duration,
    },
    /// Recent calls to this part of the store failed, so calls fail fast until the next probe
    /// instead of each waiting out the deadline.
    #[error(
        "rate-limit store unavailable: circuit open after repeated failures; next probe within {probe_interval:?}"
    )]
    CircuitOpen {
        /// How often a probe call is let through.
        probe_interval: std::time::Duration,
    },
    /// Redis answered with an error, or the connection failed.
    #[cfg(feature = "redis")]
    #[error("redis: {source}")]
    Redis {
        /// The client's error.
        #[from]
        source: ::redis::RedisError,
    },
    /// The store answered something that is not a decision (a proxy, a bug, another program
    /// writing our keys).
    #[error("malformed reply from the rate-limit store: {detail}")]
    Reply {
        /// What was wrong with it.
        detail: String,
    },
    /// The store's configuration cannot work, e.g. an unparseable URL.
    #[error("invalid store configuration: {detail}")]
    Config {
        /// What is wrong, and how to fix it.
        detail: String,
    },
    /// The call ran, but fewer replicas than the store waits for confirmed its write within the
    /// deadline (`wait_replicas`): a failover now could lose what it counted, so its answer is
    /// not given. What it counted stays counted on the master.
    #[error(
        "rate-limit store wrote the decision, but only {acknowledged} of the {wanted} replicas it waits for confirmed it in time"
    )]
    NotReplicated {
        /// Replicas that confirmed the write.
        acknowledged: u64,
        /// Replicas the store waits for.
        wanted: u32,
    },
}

impl From<floodwall_core::quota::QuotaError> for StoreError {
    /// A policy that cannot be shared among proxies is a configuration error.
    fn from(error: floodwall_core::quota::QuotaError) -> Self {
        StoreError::Config {
            detail: error.to_string(),
        }
    }
}

/// What kind of failure a [`StoreError`] is, for counting and labelling (a metric label, a log
/// field). Never carries a key or a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// [`StoreError::Timeout`].
    Timeout,
    /// [`StoreError::CircuitOpen`].
    CircuitOpen,
    /// `StoreError::Redis`: Redis answered an error or the connection failed.
    Redis,
    /// [`StoreError::Reply`].
    Reply,
    /// [`StoreError::Config`].
    Config,
    /// Redis refused the password (`WRONGPASS`, or a failed `AUTH`).
    WrongPass,
    /// Redis wants a password the store did not give (`NOAUTH`).
    NoAuth,
    /// Redis's ACL denies the store a command or key it needs (`NOPERM`).
    NoPerm,
    /// [`StoreError::NotReplicated`].
    NotReplicated,
}

impl StoreErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: [StoreErrorKind; 9] = [
        StoreErrorKind::Timeout,
        StoreErrorKind::CircuitOpen,
        StoreErrorKind::Redis,
        StoreErrorKind::Reply,
        StoreErrorKind::Config,
        StoreErrorKind::WrongPass,
        StoreErrorKind::NoAuth,
        StoreErrorKind::NoPerm,
        StoreErrorKind::NotReplicated,
    ];

    /// Its position in [`StoreErrorKind::ALL`].
    pub(crate) fn index(self) -> usize {
        // ALL lists the kinds in declaration order, so the discriminant is the position (tested).
        self as usize
    }

    /// The kind in snake case: `timeout`, `circuit_open`, `redis`, `reply`, `config`, and the
    /// refusals as Redis names them, `wrongpass`, `noauth`, `noperm`; and `not_replicated`.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreErrorKind::Timeout => "timeout",
            StoreErrorKind::CircuitOpen => "circuit_open",
            StoreErrorKind::Redis => "redis",
            StoreErrorKind::Reply => "reply",
            StoreErrorKind::Config => "config",
            StoreErrorKind::WrongPass => "wrongpass",
            StoreErrorKind::NoAuth => "noauth",
            StoreErrorKind::NoPerm => "noperm",
            StoreErrorKind::NotReplicated => "not_replicated",
        }
    }

    /// Whether this is a refusal of the store's credentials or permissions.
    pub fn is_access_denied(self) -> bool {
        matches!(
            self,
            StoreErrorKind::WrongPass | StoreErrorKind::NoAuth | StoreErrorKind::NoPerm
        )
    }
}

impl std::fmt::Display for StoreErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl StoreError {
    /// What kind of failure this is.
    pub fn kind(&self) -> StoreErrorKind {
        match self {
            StoreError::Timeout { .. } => StoreErrorKind::Timeout,
            StoreError::CircuitOpen { .. } => StoreErrorKind::CircuitOpen,
            #[cfg(feature = "redis")]
            StoreError::Redis { source } => match source.code() {
                Some("WRONGPASS") => StoreErrorKind::WrongPass,
                Some("NOAUTH") => StoreErrorKind::NoAuth,
                Some("NOPERM") => StoreErrorKind::NoPerm,
                _ if source.kind() == ::redis::ErrorKind::AuthenticationFailed => {
                    StoreErrorKind::WrongPass
                }
                _ => StoreErrorKind::Redis,
            },
            StoreError::Reply { .. } => StoreErrorKind::Reply,
            StoreError::Config { .. } => StoreErrorKind::Config,
            StoreError::NotReplicated { .. } => StoreErrorKind::NotReplicated,
        }
    }

    /// Whether the store refused the credentials or their permissions: a wrong or missing
    /// password, or an ACL without a command or key the store needs. Retrying cannot help; the
    /// configuration must change.
    pub fn is_access_denied(&self) -> bool {
        self.kind().is_access_denied()
    }

    /// Whether the same call may succeed later without a change of input or configuration (the
    /// store recovers, keys expire).
    pub fn is_transient(&self) -> bool {
        if self.is_access_denied() {
            return false;
        }
        match self {
            StoreError::Reply { .. } | StoreError::Config { .. } => false,
            StoreError::Timeout { .. }
            | StoreError::CircuitOpen { .. }
            | StoreError::NotReplicated { .. } => true,
            #[cfg(feature = "redis")]
            StoreError::Redis { source } => {
                source.is_timeout()
                    || !matches!(source.retry_method(), ::redis::RetryMethod::NoRetry)
            }
        }
    }
}

/// Why a [`Check`](crate::Check) cannot be made as asked: an error of the caller, never
/// retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// The cost can never be admitted by one of the policies (HTTP 422).
    #[error(transparent)]
    Cost(#[from] CostError),
    /// The same policy is named twice for the same client key; each would judge the request
    /// against the same state, so together they could admit more than the policy allows.
    #[error(
        "policy {policy:?} is named twice for the same client key: name each (policy, key) pair once"
    )]
    Duplicate {
        /// The policy named twice.
        policy: String,
    },
    /// A reservation names a `concurrency` policy, whose units are held until released, not
    /// spent: there is no cost to settle (HTTP 422).
    #[error(
        "policy {policy:?} is a concurrency policy: a reservation settles a cost, and concurrency counts requests in flight; hold a lease for it instead"
    )]
    NotReservable {
        /// The concurrency policy.
        policy: String,
    },
}

/// Why a [`Limiter`](crate::Limiter) could not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The check cannot be made as asked (a cost no policy can admit, a pair named twice): an
    /// error of the caller, never retried.
    #[error(transparent)]
    Check(#[from] CheckError),
    /// The store failed and the policy fails closed (`on_error = "deny"`): answer "service
    /// unavailable" (HTTP 503), never a quota denial.
    #[error("rate-limit store unavailable and the policy fails closed: {source}")]
    StoreUnavailable {
        /// What the store reported.
        #[source]
        source: StoreError,
    },
}

impl From<CostError> for Error {
    fn from(error: CostError) -> Self {
        Error::Check(CheckError::Cost(error))
    }
}

impl Error {
    /// Whether the same call may succeed later unchanged.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Check(_) => false,
            Error::StoreUnavailable { source } => source.is_transient(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::StoreErrorKind;

    #[test]
    fn every_kind_sits_at_its_index_in_all() {
        for (position, kind) in StoreErrorKind::ALL.into_iter().enumerate() {
            assert_eq!(kind.index(), position, "{kind}");
        }
    }
}
