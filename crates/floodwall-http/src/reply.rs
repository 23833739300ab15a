//! The answer table: how every front end answers the outcome of a decision. One row per kind of
//! outcome, with its HTTP status (a route, the check API, Flask and ASGI) and its answer to
//! Envoy's RateLimitService, so that a denial, an outage or a bad cost reads the same whoever
//! asked. The problem bodies of each row are in [`problem`](crate::problem).

use floodwall::{CheckError, Error, Source, Verdict};
use http::StatusCode;

/// The kinds of answer to a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reply {
    /// Every enforced policy admitted.
    Admitted,
    /// A policy is out of quota (or a block holds): 429 with `Retry-After`, `OVER_LIMIT`.
    OverQuota,
    /// The client is deny-listed: 403 without `Retry-After` (waiting does not help),
    /// `OVER_LIMIT`.
    DenyListed,
    /// The store failed and a policy fails closed: 503, never a 429; `UNAVAILABLE`.
    StoreUnavailable,
    /// A cost no policy can ever admit: 422, `OVER_LIMIT` with nothing consumed.
    ImpossibleCost,
    /// A check that names a policy twice: 400, `INVALID_ARGUMENT`.
    PolicyTwice,
    /// Any other failure: 500, `INVALID_ARGUMENT` (a request Envoy should not repeat as is).
    Failed,
}

/// How Envoy's RateLimitService is answered: an overall code, or a gRPC status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnvoyAnswer {
    /// `overall_code: OK`.
    Ok,
    /// `overall_code: OVER_LIMIT`.
    OverLimit,
    /// The gRPC status `UNAVAILABLE`.
    Unavailable,
    /// The gRPC status `INVALID_ARGUMENT`.
    InvalidArgument,
}

impl Reply {
    /// The row of `outcome`.
    pub fn of(outcome: Result<&Verdict, &Error>) -> Reply {
        match outcome {
            Ok(verdict) if verdict.allowed() => Reply::Admitted,
            Ok(verdict) if verdict.source() == Source::DenyList => Reply::DenyListed,
            Ok(_) => Reply::OverQuota,
            Err(Error::StoreUnavailable { .. }) => Reply::StoreUnavailable,
            Err(Error::Check(CheckError::Cost(_))) => Reply::ImpossibleCost,
            Err(Error::Check(CheckError::Duplicate { .. })) => Reply::PolicyTwice,
            Err(_) => Reply::Failed,
        }
    }

    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            Reply::Admitted => StatusCode::OK,
            Reply::OverQuota => StatusCode::TOO_MANY_REQUESTS,
            Reply::DenyListed => StatusCode::FORBIDDEN,
            Reply::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Reply::ImpossibleCost => StatusCode::UNPROCESSABLE_ENTITY,
            Reply::PolicyTwice => StatusCode::BAD_REQUEST,
            Reply::Failed => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The answer to Envoy.
    pub fn envoy(self) -> EnvoyAnswer {
        match self {
            Reply::Admitted => EnvoyAnswer::Ok,
            Reply::OverQuota | Reply::DenyListed | Reply::ImpossibleCost => EnvoyAnswer::OverLimit,
            Reply::StoreUnavailable => EnvoyAnswer::Unavailable,
            Reply::PolicyTwice | Reply::Failed => EnvoyAnswer::InvalidArgument,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{EnvoyAnswer, Reply};
    use http::StatusCode;

    /// The table, row by row: what each kind of outcome answers over HTTP and to Envoy.
    #[test]
    fn every_row_answers_http_and_envoy() {
        for (reply, status, envoy) in [
            (Reply::Admitted, StatusCode::OK, EnvoyAnswer::Ok),
            (
                Reply::OverQuota,
                StatusCode::TOO_MANY_REQUESTS,
                EnvoyAnswer::OverLimit,
            ),
            (
                Reply::DenyListed,
                StatusCode::FORBIDDEN,
                EnvoyAnswer::OverLimit,
            ),
            (
                Reply::StoreUnavailable,
                StatusCode::SERVICE_UNAVAILABLE,
                EnvoyAnswer::Unavailable,
            ),
            (
                Reply::ImpossibleCost,
                StatusCode::UNPROCESSABLE_ENTITY,
                EnvoyAnswer::OverLimit,
            ),
            (
                Reply::PolicyTwice,
                StatusCode::BAD_REQUEST,
                EnvoyAnswer::InvalidArgument,
            ),
            (
                Reply::Failed,
                StatusCode::INTERNAL_SERVER_ERROR,
                EnvoyAnswer::InvalidArgument,
            ),
        ] {
            assert_eq!(
                (reply.status(), reply.envoy()),
                (status, envoy),
                "{reply:?}"
            );
        }
    }
}
