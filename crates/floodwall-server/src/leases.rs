//! `POST /v1/leases` and `DELETE /v1/leases/{id}`: in-flight limits (`concurrency` policies) for
//! clients that cannot hold a connection open while they work.
//!
//! A lease's id carries everything a release needs: who holds the units, the cost, the client
//! key and the policies. So any instance sharing the store can release it, and no instance
//! keeps a table of leases that a flood of acquisitions could grow.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use floodwall::gate::Front;
use floodwall::{Check, Holder, LeaseGuard, Policy};
use http::{HeaderMap, StatusCode};
use http_body::{Frame, SizeHint};

use crate::check::{Ask, CheckState};
use crate::error::ApiError;

/// The longest client key a lease takes: its id, which holds the key in hex, stays a short path.
pub(crate) const MAX_LEASE_KEY: usize = 256;

/// Separates the id's fields; no policy name or hex digit holds it, and URLs carry it as is.
const SEPARATOR: char = '~';

/// What identifies a lease: `HOLDER~COST~KEY~POLICY[~POLICY…]`, the holder in 32 hex digits,
/// the key in hex, the policies in the order the lease named them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeaseId {
    holder: Holder,
    cost: u64,
    key: Vec<u8>,
    policies: Vec<String>,
}

impl LeaseId {
    pub(crate) fn new(holder: Holder, cost: u64, key: &[u8], policies: &[Policy]) -> Self {
        LeaseId {
            holder,
            cost,
            key: key.to_vec(),
            policies: policies.iter().map(|p| p.name().to_owned()).collect(),
        }
    }

    pub(crate) fn encode(&self) -> String {
        let mut id = format!("{:032x}{SEPARATOR}{}{SEPARATOR}", self.holder.0, self.cost);
        for byte in &self.key {
            id.push_str(&format!("{byte:02x}"));
        }
        for policy in &self.policies {
            id.push(SEPARATOR);
            id.push_str(policy);
        }
        id
    }

    /// Reads an id as [`LeaseId::encode`] wrote it; `None` for anything else.
    pub(crate) fn parse(id: &str, most_policies: usize) -> Option<Self> {
        let mut fields = id.split(SEPARATOR);
        let holder = fields.next().filter(|h| h.len() == 32)?;
        let holder = Holder(u128::from_str_radix(holder, 16).ok()?);
        let cost = fields.next()?.parse().ok()?;
        let key = fields.next()?;
        if key.len() % 2 != 0 || key.len() > 2 * MAX_LEASE_KEY {
            return None;
        }
        let key = (0..key.len())
            .step_by(2)
            .map(|i| {
                key.get(i..i + 2)
                    .and_then(|b| u8::from_str_radix(b, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()?;
        let policies: Vec<String> = fields.map(str::to_owned).collect();
        let named = !policies.is_empty() && policies.iter().all(|name| !name.is_empty());
        if holder == Holder::ANONYMOUS || !named || policies.len() > most_policies {
            return None;
        }
        Some(LeaseId {
            holder,
            cost,
            key,
            policies,
        })
    }
}

/// An answer that carries a new lease's id, and the lease: kept once the whole answer has been
/// handed to the connection, released if the answer is dropped before (the client reset, the
/// service stopped), since then nobody has the id to release it by.
pub(crate) struct UntilWritten {
    answer: Body,
    lease: Option<LeaseGuard>,
}

impl UntilWritten {
    pub(crate) fn new(answer: Body, lease: LeaseGuard) -> Self {
        UntilWritten {
            answer,
            lease: Some(lease),
        }
    }
}

impl http_body::Body for UntilWritten {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.answer).poll_frame(cx);
        // Its last bytes handed to the connection: the client is as sure to have the id as
        // the service can know.
        if matches!(polled, Poll::Ready(None | Some(Ok(_))))
            && self.answer.is_end_stream()
            && let Some(lease) = self.lease.take()
        {
            lease.keep();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.answer.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.answer.size_hint()
    }
}

/// `POST /v1/leases`: a check whose `concurrency` units stay held until released.
pub(crate) async fn acquire(State(state): State<Arc<CheckState>>, request: Request) -> Response {
    crate::check::answer(&state, request, Ask::Lease).await
}

/// `DELETE /v1/leases/{id}`: gives a lease's units back. 204 whether or not they were still
/// held (released before, timed out): the client's work is over either way.
pub(crate) async fn release(
    State(state): State<Arc<CheckState>>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    // A segment that is not UTF-8 once decoded is no id either.
    let id = id.map(|Path(id)| id).unwrap_or_default();
    let released = release_by_id(&state, &id, &headers).await;
    let response = match released {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => error.into_response(),
    };
    state.watch.instruments().answered(response.status());
    response
}

async fn release_by_id(state: &CheckState, id: &str, headers: &HeaderMap) -> Result<(), ApiError> {
    crate::auth::bearer(
        headers,
        state.config.check.token.as_deref(),
        crate::auth::Api::Check,
    )?;
    let lease = LeaseId::parse(id, state.config.check.max_policies).ok_or_else(|| {
        ApiError::BadCheck(
            "not a lease id: release a lease by the \"lease\" that POST /v1/leases answered"
                .to_owned(),
        )
    })?;
    let policies = lease
        .policies
        .iter()
        .map(|name| state.policy(name).cloned())
        .collect::<Result<Vec<Policy>, ApiError>>()?;
    let caller = state.limiter.caller(Front::Leases);
    let released = match Check::new(&policies, &lease.key, lease.cost) {
        Ok(check) => state.limiter.release(&check.held_by(lease.holder)).await,
        Err(error) => Err(error.into()),
    };
    caller.answered();
    released.map_err(|error| ApiError::Limiter(error, policies))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use floodwall::Algorithm;

    use super::*;

    #[test]
    fn an_id_reads_back_as_written_and_nothing_else_reads() {
        let policies = [
            Policy::new(
                "exports.v2",
                Algorithm::Concurrency,
                2,
                Duration::from_secs(60),
            )
            .unwrap(),
            Policy::new(
                "per-day",
                Algorithm::FixedWindow,
                9,
                Duration::from_secs(86_400),
            )
            .unwrap(),
        ];
        let id = LeaseId::new(
            Holder(0xdead_beef_0000_0007_0123_4567_89ab_cdef),
            1,
            b"tenant \xff~7",
            &policies,
        );
        let text = id.encode();
        assert!(
            text.chars()
                .all(|c| c.is_ascii_alphanumeric() || "~.-_".contains(c))
        );
        assert_eq!(LeaseId::parse(&text, 16), Some(id));
        for bad in [
            "",
            "~~~",
            "0000000000000000000000000deadbeef~1~6b~",
            "00000000000000000000000000000000~1~6b~p",
            "000000000000000000000000deadbeef~1~6~p",
            "000000000000000000000000deadbeef~x~6b~p",
            "00000000deadbeef~1~6b~p",
            "000000000000000000000000deadbeef~1~zz~p",
        ] {
            assert_eq!(LeaseId::parse(bad, 16), None, "{bad:?}");
        }
        assert_eq!(
            LeaseId::parse(&text, 1),
            None,
            "more policies than a check may name"
        );
    }
}
