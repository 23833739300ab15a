//! `POST /v1/settle`: the actual cost of a request a check reserved (`"reserve": true`),
//! charged once on any instance sharing the store.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use floodwall::gate::Front;
use serde::{Deserialize, Serialize};

use crate::check::{CheckState, DecisionBody, authorised_body, decision_body};
use crate::error::ApiError;

/// A settle as sent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettleRequest {
    reservation: String,
    cost: u64,
}

/// A settle's answer: what the request was admitted for, what it cost, and the state of the
/// policies charged or given back (none when the cost asked for nothing).
#[derive(Debug, Serialize)]
struct SettleBody<'a> {
    reservation: &'a str,
    estimate: u64,
    cost: u64,
    decisions: Vec<DecisionBody<'a>>,
}

pub(crate) async fn settle(State(state): State<Arc<CheckState>>, request: Request) -> Response {
    let response = run(&state, request)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    state.watch.instruments().answered(response.status());
    response
}

async fn run(state: &Arc<CheckState>, request: Request) -> Result<Response, ApiError> {
    let body = authorised_body(state, request).await?;
    let request: SettleRequest = serde_json::from_slice(&body).map_err(|error| {
        ApiError::BadCheck(format!(
            "the body must be JSON like {{\"reservation\": \"<id from /v1/check>\", \"cost\": 1200}}: {error}"
        ))
    })?;
    // On a task of its own: a client that leaves mid-settle leaves it to finish, so a taken
    // reservation is always charged.
    let caller = state.limiter.caller(Front::Check);
    let settling = Arc::clone(state);
    let id = request.reservation.clone();
    let settled = tokio::spawn(async move {
        let config = Arc::clone(&settling.config);
        settling
            .limiter
            .settle_kept(&id, request.cost, |name| config.policy(name).cloned())
            .await
    })
    .await;
    caller.answered();
    let settled = match settled {
        Ok(settled) => settled,
        Err(failed) => Err(floodwall::Error::StoreUnavailable {
            source: floodwall::StoreError::Reply {
                detail: format!("the settle's task ended: {failed}"),
            },
        }),
    };
    state.settles.count(settled.is_ok());
    let settled = match settled {
        Ok(Some(settled)) => settled,
        Ok(None) => return Err(ApiError::UnknownReservation),
        Err(error) => {
            tracing::warn!(%error, "a settle could not reach the store");
            return Err(ApiError::Status {
                status: http::StatusCode::SERVICE_UNAVAILABLE,
                title: "Rate-limit store unavailable",
                detail: "the settle could not reach the store; retry: a reservation is settled at most once (a retry finds it, or answers 404 if the failed settle took it, which then stands at its estimate)",
            });
        }
    };
    let decisions = settled.state.as_ref().map_or_else(Vec::new, |verdict| {
        verdict
            .iter()
            .map(|(policy, decision)| decision_body(verdict, policy, decision))
            .collect()
    });
    let answer = SettleBody {
        reservation: &request.reservation,
        estimate: settled.estimate,
        cost: request.cost,
        decisions,
    };
    Ok(axum::Json(answer).into_response())
}
