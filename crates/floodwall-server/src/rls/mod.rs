//! Envoy's RateLimitService v3 (`ShouldRateLimit`, gRPC over h2c) on `[rls] listen`: each
//! request descriptor is matched to its most specific rule, and every matched (policy, client
//! key) pair of the request is decided in one all-or-nothing check, at the descriptor's own
//! `hits_addend`. A descriptor of a settling rule (Envoy's `apply_on_stream_done` call, with the
//! cost the response reported) is charged whatever is left, and never denied.

mod answer;
mod deadline;
pub(crate) mod rules;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use envoy_types::pb::envoy::config::core::v3::HeaderValue;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::RateLimitOverride;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use floodwall::gate::{Front, Gate, Passing};
use floodwall::{Charge, Check, Error, Limiter, Policy, Verdict};
use floodwall_http::{DecisionCounters, EnvoyAnswer, RateLimitHeaders, Reply, SettleCounters};
use metrics::Counter;
use tonic::{Request, Response, Status};

use crate::config::Config;
use crate::decision_log::{Admission, DecisionLog, PerSecond};
use crate::otlp::caller;
use crate::telemetry::{DecisionWatch, RouteInstruments};

use self::rules::{Matched, RuleBook, Special};

/// The standard gRPC health service, shared by every configuration.
pub(crate) type Health =
    tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>;

/// The health service: the server and `RateLimitService` serving.
pub(crate) async fn health() -> Health {
    let reporter = tonic_health::server::HealthReporter::new();
    reporter
        .set_serving::<RateLimitServiceServer<RlsService>>()
        .await;
    tonic_health::pb::health_server::HealthServer::new(
        tonic_health::server::HealthService::from_health_reporter(reporter),
    )
}

/// An override's `unit` as a period, as envoyproxy/ratelimit counts them (a month is 30 days,
/// a year 365); `None` for an unknown unit, whose override is ignored.
fn override_period(unit: i32) -> Option<std::time::Duration> {
    use envoy_types::pb::envoy::r#type::v3::RateLimitUnit;
    let seconds = match RateLimitUnit::try_from(unit).ok()? {
        RateLimitUnit::Second => 1,
        RateLimitUnit::Minute => 60,
        RateLimitUnit::Hour => 3_600,
        RateLimitUnit::Day => 86_400,
        RateLimitUnit::Month => 30 * 86_400,
        RateLimitUnit::Year => 365 * 86_400,
        _ => return None,
    };
    Some(std::time::Duration::from_secs(seconds))
}

/// The largest request accepted: far above any real descriptor set, far below tonic's 4 MiB.
const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// The most descriptors one request may carry.
pub(crate) const MAX_DESCRIPTORS: usize = 64;

/// The answers by domain and code.
pub(crate) const RLS_REQUESTS_TOTAL: &str = "floodwall_rls_requests_total";
/// The route label of RLS decisions in the latency histogram.
const RLS_ROUTE: &str = "grpc ShouldRateLimit";
/// The domain label of requests for a domain no rule names (kept bounded).
const UNKNOWN_DOMAIN: &str = "unknown";

/// What one configuration's RLS needs: its rules and policies, the limiter, and its meters.
struct RlsState {
    limiter: Limiter,
    /// Envoy's passage through the limiter.
    gate: Gate,
    book: RuleBook,
    headers: RateLimitHeaders,
    /// Per configured domain (and `unknown`): the answers ok, over_limit, unavailable, invalid.
    requests: HashMap<String, [Counter; 4]>,
    /// Whether descriptors' own limits are honoured, and the policies made of them so far, at
    /// most `max_overrides` (past that, a new override is ignored and warned about).
    allow_overrides: bool,
    max_overrides: usize,
    overrides: Mutex<HashMap<(String, u32, i32), Policy>>,
    overrides_refused: PerSecond,
    settles: SettleCounters,
    settles_lost: PerSecond,
}

/// What separates an override policy's name from the name of the policy it overrides.
const OVERRIDE_MARK: &str = ".override-";

/// The policy an override (named `<base>.override-…`) overrides, under which it is counted.
fn overridden(name: &str) -> Option<&str> {
    name.split_once(OVERRIDE_MARK).map(|(base, _)| base)
}

/// The gRPC service of one configuration.
#[derive(Clone)]
struct RlsService {
    state: Arc<RlsState>,
}

/// Why a request got the answer it did, for `floodwall_rls_requests_total`.
#[derive(Debug, Clone, Copy)]
enum Answered {
    Ok = 0,
    OverLimit = 1,
    Unavailable = 2,
    Invalid = 3,
}

impl RlsState {
    fn new(config: &Config, limiter: Limiter) -> Self {
        let (rules, envoy) = match &config.rls {
            Some(rls) => (&rls.rules[..], &rls.envoy_domains[..]),
            None => (&[][..], &[][..]),
        };
        let book = RuleBook::new(rules, envoy, config);
        let domain_counters = |domain: &str| {
            ["ok", "over_limit", "unavailable", "invalid"].map(|code| {
                metrics::counter!(RLS_REQUESTS_TOTAL, "domain" => domain.to_owned(), "code" => code)
            })
        };
        let mut requests: HashMap<String, [Counter; 4]> = book
            .domains()
            .map(|domain| (domain.to_owned(), domain_counters(domain)))
            .collect();
        requests.insert(UNKNOWN_DOMAIN.to_owned(), domain_counters(UNKNOWN_DOMAIN));
        let counters = DecisionCounters::new(&config.policies).counted_as(overridden);
        let watch = DecisionWatch::new(
            Arc::from(RLS_ROUTE),
            Arc::new(RouteInstruments::new(RLS_ROUTE)),
            DecisionLog::new(&config.log).map(Arc::new),
        );
        RlsState {
            gate: Gate::new(limiter.clone(), Front::Rls)
                .observed_by(Arc::new(counters))
                .observed_by(Arc::new(watch)),
            limiter,
            book,
            headers: RateLimitHeaders::new(config.server.headers, &[]),
            requests,
            allow_overrides: config.rls.as_ref().is_some_and(|r| r.allow_overrides),
            max_overrides: config.rls.as_ref().map_or(0, |r| r.max_overrides),
            overrides: Mutex::new(HashMap::new()),
            overrides_refused: PerSecond::new(1),
            settles: SettleCounters::new("rls"),
            settles_lost: PerSecond::new(1),
        }
    }

    /// `policy`, or, when overrides are allowed, the policy of the descriptor's own `limit`:
    /// the same algorithm and key, `requests_per_unit` per `unit`, kept apart from `policy`'s
    /// counts. Overrides are made once each and bounded in number, so no stream of distinct
    /// limits can grow memory or metrics.
    fn overridden<'p>(&self, policy: &'p Policy, limit: &RateLimitOverride) -> Cow<'p, Policy> {
        let Some(period) = override_period(limit.unit).filter(|_| self.allow_overrides) else {
            return Cow::Borrowed(policy);
        };
        let key = (
            policy.name().to_owned(),
            limit.requests_per_unit,
            limit.unit,
        );
        let mut overrides = self
            .overrides
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(made) = overrides.get(&key) {
            return Cow::Owned(made.clone());
        }
        if overrides.len() >= self.max_overrides {
            if let Admission::Admitted { dropped } = self.overrides_refused.admit() {
                tracing::warn!(
                    policy = policy.name(),
                    dropped,
                    "a descriptor's limit override was ignored: [rls] max_overrides distinct overrides are in use"
                );
            }
            return Cow::Borrowed(policy);
        }
        let mut base = policy.name().to_owned();
        base.truncate(40);
        let name = format!(
            "{base}{OVERRIDE_MARK}{}-per-{}",
            limit.requests_per_unit,
            period.as_secs()
        );
        let made = Policy::new(
            name,
            policy.algorithm(),
            u64::from(limit.requests_per_unit),
            period,
        );
        match made {
            Ok(made) => {
                let made = made.with_mode(policy.mode());
                overrides.insert(key, made.clone());
                Cow::Owned(made)
            }
            // A limit of 0, or one the algorithm cannot hold exactly: the rule's own applies.
            Err(_) => Cow::Borrowed(policy),
        }
    }

    fn answered(&self, domain: &str, answered: Answered) {
        let counters = self
            .requests
            .get(domain)
            .or_else(|| self.requests.get(UNKNOWN_DOMAIN));
        if let Some(counters) = counters {
            counters[answered as usize].increment(1);
        }
    }
}

/// The RLS router of `config`: `ShouldRateLimit` and the standard gRPC health service.
pub(crate) fn router(config: &Config, limiter: Limiter, health: &Health) -> Router {
    let service = RlsService {
        state: Arc::new(RlsState::new(config, limiter)),
    };
    let rls = RateLimitServiceServer::new(service).max_decoding_message_size(MAX_REQUEST_BYTES);
    tonic::service::Routes::new(rls)
        .add_service(health.clone())
        .into_axum_router()
}

/// A request no answer can be given to: an empty domain, no descriptors (or too many), an empty
/// entry key. Envoy never sends one; anything else that does gets told why.
fn validate(request: &RateLimitRequest) -> Result<(), Status> {
    if request.domain.is_empty() {
        return Err(Status::invalid_argument("the domain is empty"));
    }
    if request.descriptors.is_empty() {
        return Err(Status::invalid_argument("the request has no descriptors"));
    }
    if request.descriptors.len() > MAX_DESCRIPTORS {
        return Err(Status::invalid_argument(format!(
            "the request has {} descriptors; at most {MAX_DESCRIPTORS} are accepted",
            request.descriptors.len()
        )));
    }
    for (i, descriptor) in request.descriptors.iter().enumerate() {
        if descriptor.entries.is_empty() {
            return Err(Status::invalid_argument(format!(
                "descriptor {i} has no entries"
            )));
        }
        if let Some(j) = descriptor.entries.iter().position(|e| e.key.is_empty()) {
            return Err(Status::invalid_argument(format!(
                "descriptor {i} entry {j} has an empty key"
            )));
        }
    }
    Ok(())
}

/// A descriptor's units: its own `hits_addend` when set (0 then checks without consuming),
/// else the request's, where 0 means 1.
fn units(descriptor: &RateLimitDescriptor, request_hits: u32) -> u64 {
    match &descriptor.hits_addend {
        Some(own) => own.value,
        None => u64::from(request_hits.max(1)),
    }
}

/// The pairs of one request: each matched descriptor's policies with its client key, one
/// entry per distinct (policy, key) with the units of every descriptor that named it.
#[derive(Default)]
struct Pairs<'s> {
    /// (policy, client key, units) in first-seen order; a policy of a descriptor's own limit
    /// (an override) is owned.
    pairs: Vec<(Cow<'s, Policy>, Vec<u8>, u64)>,
    /// Per request descriptor: the indexes of its pairs (empty when no rule matched).
    of_descriptor: Vec<Vec<usize>>,
    /// Per request descriptor (on the consuming side only): an envoyproxy/ratelimit limit that
    /// is not a policy, and the units the descriptor asked of it.
    specials: Vec<Option<(Special<'s>, u64)>>,
}

impl Pairs<'_> {
    /// Whether a `requests_per_unit: 0` limit was asked for units: the whole request is over.
    fn hits_zero(&self) -> bool {
        self.specials
            .iter()
            .flatten()
            .any(|(special, units)| matches!(special, Special::Zero { .. }) && *units > 0)
    }
}

impl<'s> Pairs<'s> {
    fn add(&mut self, policy: Cow<'s, Policy>, key: &[u8], units: u64) -> usize {
        let same = |(p, k, _): &(Cow<'_, Policy>, Vec<u8>, u64)| {
            p.name() == policy.name() && p.algorithm() == policy.algorithm() && k == key
        };
        match self.pairs.iter().position(same) {
            Some(i) => {
                self.pairs[i].2 = self.pairs[i].2.saturating_add(units);
                i
            }
            None => {
                self.pairs.push((policy, key.to_vec(), units));
                self.pairs.len() - 1
            }
        }
    }
}

#[tonic::async_trait]
impl RateLimitService for RlsService {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let received = tokio::time::Instant::now();
        let answer_by = request
            .metadata()
            .get("grpc-timeout")
            .and_then(|value| deadline::parse(value.as_bytes()))
            .map(|timeout| deadline::answer_by(received, timeout));
        let caller = caller::caller_span(Front::Rls.as_str(), || {
            request
                .metadata()
                .get(caller::TRACEPARENT)
                .map(|v| v.as_bytes())
        });
        let request = request.into_inner();
        let state = &self.state;
        if let Err(status) = validate(&request) {
            state.answered(&request.domain, Answered::Invalid);
            return Err(status);
        }
        let sides = pairs(state, &request);
        // The gate counts the call as abandoned if Envoy resets the stream before the answer.
        let answer = caller::within(caller, decide(state, &sides, answer_by)).await;
        let decided = match answer {
            Ok(decided) => decided,
            Err(error) => match Reply::of(Err(&error)).envoy() {
                EnvoyAnswer::Unavailable => {
                    state.answered(&request.domain, Answered::Unavailable);
                    return Err(Status::unavailable(format!(
                        "floodwall cannot decide: {error}"
                    )));
                }
                _ => {
                    state.answered(&request.domain, Answered::Invalid);
                    return Err(Status::invalid_argument(error.to_string()));
                }
            },
        };
        let response = respond(state, &request, &sides, &decided);
        let answered = match response.overall_code == Code::OverLimit as i32 {
            true => Answered::OverLimit,
            false => Answered::Ok,
        };
        state.answered(&request.domain, answered);
        Ok(Response::new(response))
    }
}

/// What a request got: the verdict on its consuming pairs, the refund of the negative ones, the
/// charge of the settling ones (`None` when it failed: a settle is never denied), and which
/// consuming pairs asked for more than their policy could ever admit.
struct Decided {
    verdict: Verdict,
    refunds: Option<Verdict>,
    settles: Option<Verdict>,
    impossible: Vec<bool>,
}

/// A request's pairs by what they do: consume (decided), give back (`is_negative_hits`), or
/// settle (charged whatever is left).
#[derive(Default)]
struct Sides<'s> {
    taken: Pairs<'s>,
    refunded: Pairs<'s>,
    settled: Pairs<'s>,
}

impl Decided {
    fn over_limit(&self) -> bool {
        !self.verdict.allowed() || self.impossible.contains(&true)
    }
}

/// The pairs of `request`: those that consume, those that give back (`is_negative_hits`) and
/// those that settle (a settling rule's), each descriptor matched to what limits it. A limit
/// that another matched limit `replaces` (by name) does not apply.
fn pairs<'s>(state: &'s RlsState, request: &RateLimitRequest) -> Sides<'s> {
    let domain = state.book.domain(&request.domain);
    let mut matches: Vec<Option<Matched<'s>>> = request
        .descriptors
        .iter()
        .map(|descriptor| {
            let entries = descriptor
                .entries
                .iter()
                .map(|e| (e.key.as_str(), e.value.as_str()));
            domain.and_then(|domain| domain.lookup(entries))
        })
        .collect();
    let replaced: Vec<&str> = matches
        .iter()
        .flatten()
        .flat_map(|m| m.replaces.iter().map(String::as_str))
        .collect();
    for matched in &mut matches {
        let name = matched.as_ref().and_then(|m| m.name);
        if name.is_some_and(|name| replaced.contains(&name)) {
            *matched = None;
        }
    }
    let mut sides = Sides::default();
    for (descriptor, matched) in request.descriptors.iter().zip(&matches) {
        let units = units(descriptor, request.hits_addend);
        let settle = matched.as_ref().is_some_and(|m| m.settle);
        let Sides {
            taken,
            refunded,
            settled,
        } = &mut sides;
        let (these, others) = match (descriptor.is_negative_hits, settle) {
            (true, _) => (refunded, [taken, settled]),
            (false, true) => (settled, [taken, refunded]),
            (false, false) => (taken, [refunded, settled]),
        };
        let indexes = match matched {
            Some(matched) => matched
                .policies
                .iter()
                .map(|policy| {
                    let policy = match &descriptor.limit {
                        Some(limit) => state.overridden(policy, limit),
                        None => Cow::Borrowed(policy),
                    };
                    these.add(policy, &matched.key, units)
                })
                .collect(),
            None => Vec::new(),
        };
        these.of_descriptor.push(indexes);
        for other in others {
            other.of_descriptor.push(Vec::new());
        }
        let asked = if descriptor.is_negative_hits {
            0
        } else {
            units
        };
        sides.taken.specials.push(
            matched
                .as_ref()
                .and_then(|m| m.special)
                .map(|special| (special, asked)),
        );
    }
    sides
}

/// The decision on the consuming pairs, all-or-nothing, and the refund of the others. A pair
/// asking for more than its policy could ever admit puts the request over the limit with
/// nothing consumed: every pair is then only judged. With `answer_by`, the caller's deadline,
/// a store that has not decided by then is answered per `on_error`.
async fn decide(
    state: &RlsState,
    sides: &Sides<'_>,
    answer_by: Option<tokio::time::Instant>,
) -> Result<Decided, Error> {
    let Sides {
        taken,
        refunded,
        settled,
    } = sides;
    let impossible: Vec<bool> = taken
        .pairs
        .iter()
        .map(|(policy, _, units)| *units > policy.capacity())
        .collect();
    let judged_only = impossible.contains(&true) || taken.hits_zero();
    let weighted: Vec<(&Policy, &[u8], u64)> = taken
        .pairs
        .iter()
        .map(|(p, k, units)| (&**p, &k[..], if judged_only { 0 } else { *units }))
        .collect();
    let passing = Passing {
        hold: false,
        deadline: answer_by,
        judged_only,
    };
    let check = Check::weighted(weighted.iter().copied());
    let verdict = state.gate.pass(check, passing).await.into_outcome()?;
    let refunds = if refunded.pairs.is_empty() {
        None
    } else {
        let pairs = refunded
            .pairs
            .iter()
            .map(|(p, k, units)| (&**p, &k[..], (*units).min(p.capacity())));
        let check = Check::weighted(pairs)?;
        // Past the gate, the call is still Envoy's: counted as abandoned if it resets the
        // stream while the negative hits are given back.
        let caller = state.limiter.caller(Front::Rls);
        let given_back = state.limiter.give_back(&check).await;
        caller.answered();
        Some(given_back?)
    };
    let settles = match settled.pairs.is_empty() {
        true => None,
        false => settle(state, settled).await,
    };
    Ok(Decided {
        verdict,
        refunds,
        settles,
        impossible,
    })
}

/// Charges the settling pairs whatever is left (into debt, up to each policy's `max_debt`), on
/// a task of its own: Envoy stops waiting for a stream-done call after its timeout, and the
/// cost it reported is charged all the same. `None` when the store failed: the cost is lost,
/// which is logged and counted.
async fn settle(state: &RlsState, settled: &Pairs<'_>) -> Option<Verdict> {
    let owned: Vec<(Policy, Vec<u8>, u64)> = settled
        .pairs
        .iter()
        .map(|(policy, key, units)| ((**policy).clone(), key.clone(), *units))
        .collect();
    let limiter = state.limiter.clone();
    let caller = state.limiter.caller(Front::Rls);
    let charged = tokio::spawn(async move {
        let charge = Charge::each(owned.iter().map(|(p, k, units)| (p, &k[..], *units)))?;
        limiter.charge(&charge).await
    })
    .await;
    caller.answered();
    let failure = match charged {
        Ok(Ok(verdict)) => {
            state.settles.count(true);
            return Some(verdict);
        }
        Ok(Err(error)) => error.to_string(),
        Err(panicked) => panicked.to_string(),
    };
    state.settles.count(false);
    if let Admission::Admitted { dropped } = state.settles_lost.admit() {
        tracing::warn!(
            error = failure,
            dropped,
            "a settle (an apply_on_stream_done call) could not be charged: its cost is lost"
        );
    }
    None
}

fn respond(
    state: &RlsState,
    request: &RateLimitRequest,
    sides: &Sides<'_>,
    decided: &Decided,
) -> RateLimitResponse {
    let Sides {
        taken,
        refunded,
        settled,
    } = sides;
    let verdict = &decided.verdict;
    let statuses = (0..request.descriptors.len())
        .map(|d| {
            if !settled.of_descriptor[d].is_empty() {
                return match &decided.settles {
                    Some(charged) => {
                        let of = &settled.of_descriptor[d];
                        let decisions = charged
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| of.contains(i))
                            .map(|(_, decision)| decision);
                        let mut status = answer::status(decisions, charged.source());
                        // Charged, never denied: the key may owe, and the call is still OK.
                        status.code = Code::Ok as i32;
                        status
                    }
                    None => answer::not_limited(),
                };
            }
            let (pairs, of) = match &decided.refunds {
                Some(refunds) if !refunded.of_descriptor[d].is_empty() => {
                    (refunds, &refunded.of_descriptor[d])
                }
                _ => (verdict, &taken.of_descriptor[d]),
            };
            match taken.specials[d] {
                Some((Special::Unlimited, _)) => return answer::unlimited(),
                Some((Special::Zero { label, period }, units)) => {
                    return answer::zero(label, period, units > 0);
                }
                None => {}
            }
            if of.is_empty() {
                return answer::not_limited();
            }
            let decisions = pairs
                .iter()
                .enumerate()
                .filter(|(i, _)| of.contains(i))
                .map(|(_, decision)| decision);
            let mut status = answer::status(decisions, pairs.source());
            let consuming = std::ptr::eq(pairs, verdict);
            if consuming && of.iter().any(|&i| decided.impossible[i]) {
                status.code = Code::OverLimit as i32;
            }
            status
        })
        .collect();
    let zero_over = taken.hits_zero();
    let over_limit = decided.over_limit() || zero_over;
    let mut response = RateLimitResponse {
        overall_code: match over_limit {
            true => Code::OverLimit,
            false => Code::Ok,
        } as i32,
        statuses,
        ..RateLimitResponse::default()
    };
    if verdict.is_empty() && !zero_over {
        return response;
    }
    response.response_headers_to_add = answer::headers(&state.headers, verdict);
    if over_limit {
        let body = match decided.impossible.iter().position(|i| *i) {
            // No wait would ever admit it: no Retry-After, the cost's problem instead.
            Some(i) => {
                let (policy, _, units) = &taken.pairs[i];
                floodwall_http::problem::impossible_cost_body(&format!(
                    "hits_addend {units} can never be admitted by policy {:?}: its capacity is {} per request",
                    policy.name(),
                    policy.capacity()
                ))
            }
            None => {
                let mut violated: Vec<&str> = verdict.violated().map(Policy::name).collect();
                let mut retry_after = floodwall_http::retry_after_seconds(verdict);
                if zero_over {
                    let (labels, wait) = answer::zeros_hit(taken.specials.iter().flatten());
                    violated.extend(labels);
                    retry_after = retry_after.max(wait);
                    answer::set_retry_after(&mut response.response_headers_to_add, retry_after);
                }
                response.dynamic_metadata = Some(answer::violated_metadata(&violated));
                let owed = floodwall_http::problem::owed(verdict);
                floodwall_http::problem::quota_exceeded_body(&violated, &owed, retry_after)
            }
        };
        response.raw_body = body.to_vec();
        response.response_headers_to_add.push(HeaderValue {
            key: "content-type".to_owned(),
            value: "application/problem+json".to_owned(),
            raw_value: Vec::new(),
        });
    }
    response
}
