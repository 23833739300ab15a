//! `POST /v1/check`: a decision for any language or proxy, with the same answers and headers as
//! a limited route.

use std::borrow::Cow;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use std::collections::HashMap;

use floodwall::gate::{Front, Gate, Observer, Passing};
use floodwall::{Algorithm, Check, Decision, Limiter, Policy, Source, Verdict};
use floodwall_http::{DecisionCounters, HeaderMode, RateLimitHeaders, Reply, SettleCounters};
use http::{HeaderValue, header::CONTENT_TYPE};
use http_body_util::{BodyExt, Limited};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::decision_log::DecisionLog;
use crate::error::ApiError;
use crate::otlp::caller;
use crate::telemetry::{CHECK_ROUTE, DecisionWatch, RouteInstruments};

/// The largest check request body accepted.
pub const MAX_CHECK_BODY: usize = 64 * 1024;

/// What the check API needs: the limiter and the policies by name.
#[derive(Debug)]
pub(crate) struct CheckState {
    pub(crate) limiter: Limiter,
    /// `POST /v1/check`'s passage through the limiter, and `/v1/leases`'.
    checks: Gate,
    leases: Gate,
    pub(crate) config: Arc<Config>,
    pub(crate) headers: HeaderMode,
    /// Per policy name: its single-policy headers, built once so a check does no header
    /// serialisation it can avoid.
    per_policy: HashMap<String, RateLimitHeaders>,
    /// The check API's latency, answers and decision log.
    pub(crate) watch: DecisionWatch,
    /// `POST /v1/settle`'s settles, charged and failed.
    pub(crate) settles: SettleCounters,
}

impl CheckState {
    pub(crate) fn new(limiter: Limiter, config: Arc<Config>) -> Self {
        let headers = config.server.headers;
        let per_policy = config
            .policies
            .iter()
            .map(|policy| {
                let headers = RateLimitHeaders::new(headers, std::slice::from_ref(policy));
                (policy.name().to_owned(), headers)
            })
            .collect();
        let watch = DecisionWatch::new(
            Arc::from(CHECK_ROUTE),
            Arc::new(RouteInstruments::new(CHECK_ROUTE)),
            DecisionLog::new(&config.log).map(Arc::new),
        );
        // Both gates count into the same counters, log into the same log.
        let counters: Arc<dyn Observer> = Arc::new(DecisionCounters::new(&config.policies));
        let observed: Arc<dyn Observer> = Arc::new(watch.clone());
        let gate = |front| {
            Gate::new(limiter.clone(), front)
                .observed_by(Arc::clone(&counters))
                .observed_by(Arc::clone(&observed))
        };
        CheckState {
            checks: gate(Front::Check),
            leases: gate(Front::Leases),
            limiter,
            config,
            headers,
            per_policy,
            watch,
            settles: SettleCounters::new("check"),
        }
    }

    /// The configured policy `name`, or the 404 that lists them.
    pub(crate) fn policy(&self, name: &str) -> Result<&Policy, ApiError> {
        self.config
            .policy(name)
            .ok_or_else(|| ApiError::unknown_policy(name, &self.config.policies))
    }
}

/// A check as sent. Strings borrow from the body where JSON lets them (no escapes), so a plain
/// check allocates nothing for its key and policy name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckRequest<'a> {
    #[serde(borrow)]
    policy: Option<Cow<'a, str>>,
    #[serde(borrow)]
    policies: Option<Vec<Cow<'a, str>>>,
    #[serde(borrow)]
    key: Cow<'a, str>,
    #[serde(default = "one")]
    cost: u64,
    /// Admit on `cost` as an estimate, to be settled at the actual cost by `POST /v1/settle`.
    #[serde(default)]
    reserve: bool,
}

fn one() -> u64 {
    1
}

/// What a request to the check API asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ask {
    /// `POST /v1/check`: a decision.
    Check,
    /// `POST /v1/leases`: a decision whose in-flight units stay held until released.
    Lease,
}

impl Ask {
    /// The front end it is, as spans name it.
    fn front(self) -> &'static str {
        match self {
            Ask::Check => Front::Check.as_str(),
            Ask::Lease => Front::Leases.as_str(),
        }
    }
}

pub(crate) async fn check(State(state): State<Arc<CheckState>>, request: Request) -> Response {
    answer(&state, request, Ask::Check).await
}

/// Decides `request` as `ask` says, and counts the answer.
pub(crate) async fn answer(state: &CheckState, request: Request, ask: Ask) -> Response {
    let caller = caller::caller_span(ask.front(), || {
        request
            .headers()
            .get(caller::TRACEPARENT)
            .map(|v| v.as_bytes())
    });
    let response = caller::within(caller, decide(state, request, ask))
        .await
        .unwrap_or_else(IntoResponse::into_response);
    state.watch.instruments().answered(response.status());
    response
}

/// The body of a check API request (a check, a lease, a settle) once its bearer token is
/// accepted, read up to [`MAX_CHECK_BODY`].
pub(crate) async fn authorised_body(
    state: &CheckState,
    request: Request,
) -> Result<Bytes, ApiError> {
    crate::auth::bearer(
        request.headers(),
        state.config.check.token.as_deref(),
        crate::auth::Api::Check,
    )?;
    Ok(Limited::new(request.into_body(), MAX_CHECK_BODY)
        .collect()
        .await
        .map_err(|error| ApiError::reading_body(&*error))?
        .to_bytes())
}

async fn decide(state: &CheckState, request: Request, ask: Ask) -> Result<Response, ApiError> {
    let body = authorised_body(state, request).await?;
    let request: CheckRequest = serde_json::from_slice(&body).map_err(|error| {
        ApiError::BadCheck(format!(
            "the body must be JSON like {{\"policy\": \"per-ip\", \"key\": \"1.2.3.4\", \"cost\": 1}}: {error}"
        ))
    })?;
    if ask == Ask::Lease && request.key.len() > crate::leases::MAX_LEASE_KEY {
        return Err(ApiError::BadCheck(format!(
            "a lease's key is at most {} bytes, so that its id fits in a URL; this one has {}",
            crate::leases::MAX_LEASE_KEY,
            request.key.len()
        )));
    }
    let find = |name: &str| state.policy(name);
    // One policy is checked in place; several are gathered in the order the check names them.
    let gathered: Vec<Policy>;
    let (policies, multi) = match (&request.policy, &request.policies) {
        (Some(name), None) => (std::slice::from_ref(find(name)?), false),
        (None, Some(names)) if !names.is_empty() => {
            let most = state.config.check.max_policies;
            if names.len() > most {
                return Err(ApiError::BadCheck(format!(
                    "a check names at most {most} policies ([check] max_policies); this one names {}",
                    names.len()
                )));
            }
            gathered = names
                .iter()
                .map(|name| find(name).cloned())
                .collect::<Result<_, _>>()?;
            (gathered.as_slice(), true)
        }
        _ => {
            return Err(ApiError::BadCheck(
                "give either \"policy\": NAME or \"policies\": [NAME, …] (not both, not empty)"
                    .to_owned(),
            ));
        }
    };
    let (key, cost) = (request.key.as_bytes(), request.cost);
    let reserve = request.reserve;
    if reserve {
        if ask == Ask::Lease {
            return Err(ApiError::BadCheck(
                "a lease holds units until released; \"reserve\" is for costs settled later, on /v1/check".to_owned(),
            ));
        }
        if let Some(held) = policies
            .iter()
            .find(|p| p.algorithm() == Algorithm::Concurrency)
        {
            return Err(ApiError::BadCheck(format!(
                "policy {:?} is a concurrency policy: it holds units (POST /v1/leases), it cannot be reserved",
                held.name()
            )));
        }
    }
    let (gate, hold) = match ask {
        Ask::Check => (&state.checks, false),
        Ask::Lease => (&state.leases, true),
    };
    let passing = Passing {
        hold,
        ..Passing::default()
    };
    let mut passage = gate.pass(Check::new(policies, key, cost), passing).await;
    let reservation = reserve
        .then(|| gate.reservation(&passage, key, cost))
        .flatten();
    let guard = passage.take_held();
    let verdict = match passage.into_outcome() {
        Ok(verdict) => verdict,
        Err(error) => return Err(ApiError::Limiter(error, policies.to_vec())),
    };
    // The units stay held past this request, once the client has its id: it releases them by
    // it. Until the answer is written they are released if the client goes.
    let held = guard.as_ref().map(|guard| LeaseFields {
        lease: guard
            .holder()
            .map(|holder| crate::leases::LeaseId::new(holder, cost, key, policies).encode()),
        timeout_ms: Some(millis_ceil(guard.timeout().unwrap_or_default())),
    });
    let reserved = match reservation {
        Some(reservation) => Some(keep(state, reservation).await),
        None if reserve => Some(ReservationFields::none()),
        None => None,
    };
    let lease = match (ask, held) {
        (Ask::Check, _) => None,
        (Ask::Lease, Some(held)) => Some(held),
        // Denied, or admitted without counting: nothing to release.
        (Ask::Lease, None) => Some(LeaseFields {
            lease: None,
            timeout_ms: None,
        }),
    };
    // Serialising these plain structs cannot fail; an empty body would still carry the status
    // and headers. A single decision's body is well under the capacity given.
    let mut body = Vec::with_capacity(if multi { 128 * policies.len() } else { 160 });
    let written = if multi {
        let decisions = MultiBody {
            allowed: verdict.allowed(),
            decisions: verdict
                .iter()
                .map(|(policy, decision)| decision_body(&verdict, policy, decision))
                .collect(),
        };
        let answer = Leased {
            decisions,
            lease,
            reserved,
        };
        serde_json::to_writer(&mut body, &answer)
    } else {
        let decisions = single_decision_body(&verdict);
        let answer = Leased {
            decisions,
            lease,
            reserved,
        };
        serde_json::to_writer(&mut body, &answer)
    };
    if written.is_err() {
        body.clear();
    }
    let mut response = respond(state, &verdict, body);
    if let Some(guard) = guard {
        let answer = std::mem::take(response.body_mut());
        *response.body_mut() = Body::new(crate::leases::UntilWritten::new(answer, guard));
    }
    Ok(response)
}

fn respond(state: &CheckState, verdict: &Verdict, body: Vec<u8>) -> Response {
    // The answer table's status: 200, 429, or 403 for a deny-listed client (waiting does not
    // help it).
    let status = Reply::of(Ok(verdict)).status();
    let mut response = Response::new(Body::from(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // A single policy's headers were prepared; several are written afresh.
    let prepared = match verdict.iter().next() {
        Some((policy, _)) if verdict.len() == 1 => state.per_policy.get(policy.name()),
        _ => None,
    };
    match prepared {
        Some(prepared) => prepared.write(headers, verdict),
        None => RateLimitHeaders::new(state.headers, &[]).write(headers, verdict),
    }
    response
}

/// One policy's decision as the check API, the admin API and `floodwall check` write it, fields
/// in this order (other programs parse it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecisionBody<'a> {
    /// Whether the request may proceed. In a single-policy body this is the verdict's, so a
    /// shadow policy's denial still says `true`.
    pub allowed: bool,
    /// The policy's name.
    pub policy: &'a str,
    /// The policy's capacity.
    pub limit: u64,
    /// Units left after this request; `null` when nothing was counted (the store failed and
    /// `on_error` admitted the request).
    pub remaining: Option<u64>,
    /// Milliseconds until the policy is back at full capacity, rounded up; `null` when nothing
    /// was counted.
    pub reset_after_ms: Option<u64>,
    /// On a denial, milliseconds until the same request would be admitted, rounded up.
    pub retry_after_ms: Option<u64>,
    /// Units the key owes past zero (a settle charged more than was left; `remaining` is then
    /// 0); `null` when nothing was counted.
    pub debt: Option<u64>,
}

/// A body of the check API, with a lease's fields or a reservation's when one was asked for.
#[derive(Debug, Serialize)]
struct Leased<T> {
    #[serde(flatten)]
    decisions: T,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    lease: Option<LeaseFields>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    reserved: Option<ReservationFields>,
}

/// What `"reserve": true` adds to a check's body: the id to settle by (`POST /v1/settle`) and
/// how long it waits for its settle; both `null` when nothing was reserved (denied, or decided
/// by a list or a block) or the store could not keep it (the estimate then stands).
#[derive(Debug, Serialize)]
struct ReservationFields {
    reservation: Option<String>,
    reservation_ttl_ms: Option<u64>,
}

impl ReservationFields {
    fn none() -> Self {
        ReservationFields {
            reservation: None,
            reservation_ttl_ms: None,
        }
    }
}

/// Keeps `reservation` for any instance to settle, for `[check] reservation_ttl`. A store that
/// cannot keep it leaves the request admitted on its estimate, which is logged.
async fn keep(state: &CheckState, reservation: floodwall::Reservation) -> ReservationFields {
    let ttl = state.config.check.reservation_ttl;
    match reservation.keep(ttl).await {
        Ok(Some(id)) => ReservationFields {
            reservation: Some(id),
            reservation_ttl_ms: Some(millis_ceil(ttl)),
        },
        Ok(None) => ReservationFields::none(),
        Err(error) => {
            tracing::warn!(%error, "a reservation could not be kept: it stays charged at its estimate");
            ReservationFields::none()
        }
    }
}

/// What `POST /v1/leases` adds to a check's body: the id to release the lease by and how long
/// its units are held if never released; both `null` when nothing is held.
#[derive(Debug, Serialize)]
struct LeaseFields {
    lease: Option<String>,
    timeout_ms: Option<u64>,
}

/// The body of a multi-policy check: the all-or-nothing verdict and each policy's decision.
#[derive(Debug, Serialize)]
struct MultiBody<'a> {
    allowed: bool,
    decisions: Vec<DecisionBody<'a>>,
}

/// The body of a single-policy check (also the admin API's and `floodwall check`'s output):
/// the first policy's decision, with `allowed` the verdict's (a shadow policy's denial still
/// allows). `None` only for a verdict without decisions, which a single-policy check never
/// gives.
pub fn single_decision_body(verdict: &Verdict) -> Option<DecisionBody<'_>> {
    verdict
        .iter()
        .next()
        .map(|(policy, decision)| DecisionBody {
            allowed: verdict.allowed(),
            ..decision_body(verdict, policy, decision)
        })
}

/// One decision of `verdict`, with its counts only if the verdict was counted.
pub(crate) fn decision_body<'a>(
    verdict: &Verdict,
    policy: &'a Policy,
    decision: &Decision,
) -> DecisionBody<'a> {
    let counted = verdict.source() != Source::FailOpen;
    DecisionBody {
        allowed: decision.allowed,
        policy: policy.name(),
        limit: decision.capacity,
        remaining: counted.then_some(decision.remaining),
        reset_after_ms: counted.then(|| millis_ceil(decision.reset_after)),
        retry_after_ms: decision.retry_after.map(millis_ceil),
        debt: counted.then_some(decision.debt),
    }
}

/// Whole milliseconds, rounded up: waiting this long is always enough.
fn millis_ceil(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}
