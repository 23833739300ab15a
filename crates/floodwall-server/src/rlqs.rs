//! Envoy's RateLimitQuotaService v3 (`StreamRateLimitQuotas`, gRPC over h2c) on `[rlqs] listen`:
//! each Envoy streams its usage per bucket, and is answered, per bucket, with its share of the
//! bucket's policies as a token bucket it enforces itself.
//!
//! A bucket's `BucketId` entries, sorted by key, are matched to `[[rlqs.bucket]]` rules as RLS
//! descriptors are matched to `[[rls.rule]]` (the unpinned values form the client key). For each
//! matched policy the store takes the report and grants this stream a share
//! (`Storage::report_quota`: shares of all Envoys never exceed the policy, across every
//! instance on one Redis); the tightest share is the answer. A bucket no rule matches is
//! allowed (`blanket_rule: ALLOW_ALL`). A store failure is answered per the policies'
//! `on_error`: `DENY_ALL` when one of them fails closed, `ALLOW_ALL` otherwise, for the
//! assignment's time to live.
//!
//! Each stream is one reporter, with a random id: an Envoy that reconnects is a new reporter,
//! and its old share lapses after `assignment_ttl`. A stream holds nothing else; when it ends
//! (Envoy leaves, the connection drops, the service stops), its shares lapse by themselves.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use envoy_types::pb::envoy::r#type::v3::TokenBucket;
use envoy_types::pb::envoy::r#type::v3::rate_limit_strategy::{BlanketRule, Strategy};
use envoy_types::pb::envoy::r#type::v3::RateLimitStrategy;
use envoy_types::pb::envoy::service::rate_limit_quota::v3::rate_limit_quota_response::BucketAction;
use envoy_types::pb::envoy::service::rate_limit_quota::v3::rate_limit_quota_response::bucket_action::{
    self, QuotaAssignmentAction,
};
use envoy_types::pb::envoy::service::rate_limit_quota::v3::rate_limit_quota_service_server::{
    RateLimitQuotaService, RateLimitQuotaServiceServer,
};
use envoy_types::pb::envoy::service::rate_limit_quota::v3::rate_limit_quota_usage_reports::BucketQuotaUsage;
use envoy_types::pb::envoy::service::rate_limit_quota::v3::{
    BucketId, RateLimitQuotaResponse, RateLimitQuotaUsageReports,
};
use envoy_types::pb::google::protobuf::{Duration as ProtoDuration, UInt32Value};
use floodwall::core::quota::{Share, Usage};
use floodwall::gate::Front;
use floodwall::{Limiter, OnError, Policy};
use tonic::{Request, Response, Status, Streaming};

use crate::config::Config;
use crate::rls::Health;
use crate::rls::rules::RuleBook;

/// The largest report accepted: far above a real Envoy's, far below tonic's 4 MiB.
const MAX_REPORT_BYTES: usize = 256 * 1024;
/// The most buckets one report may carry.
const MAX_BUCKETS_PER_REPORT: usize = 1_024;
/// Open streams.
pub(crate) const RLQS_STREAMS: &str = "floodwall_rlqs_streams";
/// Reports taken and shares assigned, by policy.
pub(crate) const RLQS_REPORTS_TOTAL: &str = "floodwall_rlqs_reports_total";
pub(crate) const RLQS_ASSIGNMENTS_TOTAL: &str = "floodwall_rlqs_assignments_total";

/// What streams decide by, replaced whole on reload: the bucket rules, the assignments' TTL and
/// `[storage] on_error` (for policies that do not override it).
pub(crate) struct Rules {
    book: RuleBook,
    ttl: Duration,
    on_error: OnError,
}

impl Rules {
    fn of(config: &Config) -> Rules {
        let (buckets, ttl) = match &config.rlqs {
            Some(rlqs) => (&rlqs.buckets[..], rlqs.assignment_ttl),
            None => (&[][..], crate::config::DEFAULT_ASSIGNMENT_TTL),
        };
        Rules {
            book: RuleBook::new(buckets, &[], config),
            ttl,
            on_error: config.storage.on_error,
        }
    }

    /// The policies of the rule that matches `entries` (sorted by key) in `domain`, and the
    /// client key.
    fn lookup(&self, domain: &str, entries: &[(&str, &str)]) -> Option<(&[Policy], Vec<u8>)> {
        let matched = self.book.domain(domain)?.lookup(entries.iter().copied())?;
        Some((matched.policies, matched.key))
    }
}

/// What RLQS keeps across reloads: its health service, and the rules every stream reads, open
/// ones included (a reload reaches them at once, and abandons the buckets it unmatched).
#[derive(Clone)]
pub(crate) struct Live {
    health: Health,
    rules: tokio::sync::watch::Sender<Arc<Rules>>,
}

impl Live {
    pub(crate) async fn new(config: &Config) -> Live {
        Live {
            health: health().await,
            rules: tokio::sync::watch::Sender::new(Arc::new(Rules::of(config))),
        }
    }

    /// Gives every stream, open or new, `config`'s rules.
    pub(crate) fn reload(&self, config: &Config) {
        self.rules.send_replace(Arc::new(Rules::of(config)));
    }
}

/// The gRPC service: the limiter, and the live rules.
#[derive(Clone)]
struct RlqsService {
    limiter: Limiter,
    rules: tokio::sync::watch::Sender<Arc<Rules>>,
}

/// The health service: the server and `RateLimitQuotaService` serving.
async fn health() -> Health {
    let reporter = tonic_health::server::HealthReporter::new();
    reporter
        .set_serving::<RateLimitQuotaServiceServer<RlqsService>>()
        .await;
    tonic_health::pb::health_server::HealthServer::new(
        tonic_health::server::HealthService::from_health_reporter(reporter),
    )
}

/// The RLQS router: `StreamRateLimitQuotas` and the standard gRPC health service.
pub(crate) fn router(limiter: Limiter, live: &Live) -> Router {
    let service = RlqsService {
        limiter,
        rules: live.rules.clone(),
    };
    let rlqs =
        RateLimitQuotaServiceServer::new(service).max_decoding_message_size(MAX_REPORT_BYTES);
    tonic::service::Routes::new(rlqs)
        .add_service(live.health.clone())
        .into_axum_router()
}

/// Counts a stream open while it lives.
struct OpenStream;

impl OpenStream {
    fn open() -> Self {
        metrics::gauge!(RLQS_STREAMS).increment(1.0);
        OpenStream
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        metrics::gauge!(RLQS_STREAMS).decrement(1.0);
    }
}

type Answers =
    Pin<Box<dyn futures_util::Stream<Item = Result<RateLimitQuotaResponse, Status>> + Send>>;

#[tonic::async_trait]
impl RateLimitQuotaService for RlqsService {
    type StreamRateLimitQuotasStream = Answers;

    async fn stream_rate_limit_quotas(
        &self,
        request: Request<Streaming<RateLimitQuotaUsageReports>>,
    ) -> Result<Response<Answers>, Status> {
        let stream = EnvoyStream {
            reports: request.into_inner(),
            limiter: self.limiter.clone(),
            rules: self.rules.subscribe(),
            reporter: random_reporter(),
            domain: None,
            seen: HashMap::new(),
            _open: OpenStream::open(),
            ended: false,
        };
        // One answer per report, in order, and an abandonment when a reload unmatches buckets
        // this stream was assigned; the stream ends at the first malformed report (with its
        // error) or when Envoy ends it. Nothing is held beyond the shares, which lapse.
        let answers = futures_util::stream::unfold(stream, |mut stream| async move {
            let answer = stream.next().await?;
            Some((answer, stream))
        });
        Ok(Response::new(Box::pin(answers)))
    }
}

/// A reporter id for a new stream: random (std's per-instance random SipHash keys), so that no
/// Envoy can name another's share.
fn random_reporter() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0x00e0_u64)
}

/// The most buckets one stream remembers, to abandon them if a reload unmatches them.
const MAX_REMEMBERED: usize = 4_096;

/// One Envoy's stream.
struct EnvoyStream {
    reports: Streaming<RateLimitQuotaUsageReports>,
    limiter: Limiter,
    rules: tokio::sync::watch::Receiver<Arc<Rules>>,
    reporter: u64,
    domain: Option<String>,
    /// Buckets assigned a share, by their sorted entries: abandoned if a reload unmatches them.
    seen: HashMap<Vec<(String, String)>, BucketId>,
    /// Held for its drop: the open-streams gauge.
    _open: OpenStream,
    ended: bool,
}

impl EnvoyStream {
    /// The next message to Envoy, or `None` when the stream is over.
    async fn next(&mut self) -> Option<Result<RateLimitQuotaResponse, Status>> {
        if self.ended {
            return None;
        }
        loop {
            tokio::select! {
                report = self.reports.message() => {
                    let report = match report {
                        Ok(Some(report)) => report,
                        Ok(None) | Err(_) => return None,
                    };
                    // A stream that ends mid-report (Envoy gone, the connection reset) drops
                    // this future: its report is counted as abandoned. What the store took for
                    // it is a share, which lapses by itself.
                    let caller = self.limiter.caller(Front::Rlqs);
                    let answer = self.answer(report).await;
                    caller.answered();
                    self.ended = answer.is_err();
                    return Some(answer);
                }
                changed = self.rules.changed() => {
                    if changed.is_err() {
                        // The service is stopping.
                        self.ended = true;
                        return None;
                    }
                    let abandoned = self.abandoned();
                    if !abandoned.is_empty() {
                        return Some(Ok(RateLimitQuotaResponse { bucket_action: abandoned }));
                    }
                }
            }
        }
    }

    /// The buckets this stream was assigned that the new rules no longer match, told to go.
    fn abandoned(&mut self) -> Vec<BucketAction> {
        let rules = Arc::clone(&self.rules.borrow_and_update());
        let domain = self.domain.clone().unwrap_or_default();
        let mut gone = Vec::new();
        self.seen.retain(|entries, bucket_id| {
            let entries: Vec<(&str, &str)> = entries
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            if rules.lookup(&domain, &entries).is_some() {
                return true;
            }
            gone.push(BucketAction {
                bucket_id: Some(bucket_id.clone()),
                bucket_action: Some(bucket_action::BucketAction::AbandonAction(
                    bucket_action::AbandonAction {},
                )),
            });
            false
        });
        gone
    }

    /// The answer to one report: an action per bucket, or why the report is refused.
    async fn answer(
        &mut self,
        report: RateLimitQuotaUsageReports,
    ) -> Result<RateLimitQuotaResponse, Status> {
        // The domain comes with the first report; a later one may repeat it, not change it.
        match (self.domain.as_deref(), report.domain.as_str()) {
            (None, "") => return Err(Status::invalid_argument("the first report has no domain")),
            (None, given) => self.domain = Some(given.to_owned()),
            (Some(_), "") => {}
            (Some(known), given) if known == given => {}
            (Some(known), given) => {
                return Err(Status::invalid_argument(format!(
                    "the stream's domain is {known:?}; a report cannot change it to {given:?}"
                )));
            }
        }
        if report.bucket_quota_usages.len() > MAX_BUCKETS_PER_REPORT {
            return Err(Status::invalid_argument(format!(
                "a report may carry at most {MAX_BUCKETS_PER_REPORT} buckets"
            )));
        }
        let domain = self.domain.clone().unwrap_or_default();
        let rules = Arc::clone(&self.rules.borrow());
        let mut actions = Vec::with_capacity(report.bucket_quota_usages.len());
        for usage in report.bucket_quota_usages {
            actions.push(self.bucket(&rules, &domain, usage).await?);
        }
        Ok(RateLimitQuotaResponse {
            bucket_action: actions,
        })
    }

    /// The action for one bucket's usage.
    async fn bucket(
        &mut self,
        rules: &Rules,
        domain: &str,
        usage: BucketQuotaUsage,
    ) -> Result<BucketAction, Status> {
        let Some(bucket_id) = usage.bucket_id else {
            return Err(Status::invalid_argument("a bucket usage has no bucket_id"));
        };
        let mut entries: Vec<(&str, &str)> = bucket_id
            .bucket
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect();
        if entries.iter().any(|(key, _)| key.is_empty()) {
            return Err(Status::invalid_argument("a bucket_id has an empty key"));
        }
        entries.sort_unstable();
        let elapsed_us = usage
            .time_elapsed
            .map(|elapsed| {
                let seconds = u64::try_from(elapsed.seconds).unwrap_or(0);
                let nanos = u64::try_from(elapsed.nanos).unwrap_or(0);
                seconds
                    .saturating_mul(1_000_000)
                    .saturating_add(nanos / 1_000)
            })
            .unwrap_or(0);
        let seen = Usage {
            requests: usage
                .num_requests_allowed
                .saturating_add(usage.num_requests_denied),
            elapsed_us,
        };
        let strategy = match rules.lookup(domain, &entries) {
            None => blanket(BlanketRule::AllowAll),
            Some((policies, key)) => {
                if self.seen.len() < MAX_REMEMBERED {
                    let owned = entries
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect();
                    self.seen.insert(owned, bucket_id.clone());
                }
                share(&self.limiter, rules, policies, &key, self.reporter, seen).await
            }
        };
        Ok(BucketAction {
            bucket_id: Some(bucket_id),
            bucket_action: Some(bucket_action::BucketAction::QuotaAssignmentAction(
                QuotaAssignmentAction {
                    assignment_time_to_live: Some(proto_duration(rules.ttl)),
                    rate_limit_strategy: Some(strategy),
                },
            )),
        })
    }
}

/// `reporter`'s share of the tightest of `policies` for `key`, as Envoy's strategy.
async fn share(
    limiter: &Limiter,
    rules: &Rules,
    policies: &[Policy],
    key: &[u8],
    reporter: u64,
    seen: Usage,
) -> RateLimitStrategy {
    let mut tightest: Option<(&Policy, Share)> = None;
    for policy in policies {
        metrics::counter!(RLQS_REPORTS_TOTAL, "policy" => policy.name().to_owned()).increment(1);
        let granted = limiter
            .store()
            .report_quota(policy, key, reporter, seen, rules.ttl)
            .await;
        let share = match granted {
            Ok(share) => share,
            Err(error) => {
                let on_error = policy.on_error().unwrap_or(rules.on_error);
                tracing::debug!(policy = policy.name(), %error, "a quota report failed");
                return blanket(match on_error {
                    OnError::Deny => BlanketRule::DenyAll,
                    _ => BlanketRule::AllowAll,
                });
            }
        };
        let tighter = tightest.as_ref().is_none_or(|(other, held)| {
            // per_period / period, compared without division.
            u128::from(share.per_period) * u128::from(other.period_us())
                < u128::from(held.per_period) * u128::from(policy.period_us())
        });
        if tighter {
            tightest = Some((policy, share));
        }
    }
    match tightest {
        Some((policy, share)) => {
            metrics::counter!(RLQS_ASSIGNMENTS_TOTAL, "policy" => policy.name().to_owned())
                .increment(1);
            tracing::debug!(
                policy = policy.name(),
                reporter,
                requests = seen.requests,
                per_period = share.per_period,
                max = share.max,
                "a share assigned"
            );
            token_bucket(policy, share)
        }
        None => blanket(BlanketRule::AllowAll),
    }
}

fn blanket(rule: BlanketRule) -> RateLimitStrategy {
    RateLimitStrategy {
        strategy: Some(Strategy::BlanketRule(rule as i32)),
    }
}

/// `share` of `policy` as Envoy's token bucket. Envoy fills a bucket at `tokens_per_fill` per
/// whole second of `fill_interval`: the interval is the policy's period rounded up to whole
/// seconds, and the tokens per fill are rounded down, so the bucket never fills faster than the
/// share. A share of nothing denies everything.
fn token_bucket(policy: &Policy, share: Share) -> RateLimitStrategy {
    if share.per_period == 0 || share.max == 0 {
        return blanket(BlanketRule::DenyAll);
    }
    let period_us = policy.period_us();
    let fill_seconds = period_us.div_ceil(1_000_000).max(1);
    let tokens =
        u128::from(share.per_period) * u128::from(fill_seconds) * 1_000_000 / u128::from(period_us);
    let tokens = u32::try_from(tokens).unwrap_or(u32::MAX).max(1);
    RateLimitStrategy {
        strategy: Some(Strategy::TokenBucket(TokenBucket {
            max_tokens: u32::try_from(share.max).unwrap_or(u32::MAX),
            tokens_per_fill: Some(UInt32Value { value: tokens }),
            fill_interval: Some(ProtoDuration {
                seconds: i64::try_from(fill_seconds).unwrap_or(i64::MAX),
                nanos: 0,
            }),
        })),
    }
}

/// A duration for the wire, in whole seconds (Envoy counts a TTL in whole seconds).
fn proto_duration(duration: Duration) -> ProtoDuration {
    ProtoDuration {
        seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        nanos: 0,
    }
}
