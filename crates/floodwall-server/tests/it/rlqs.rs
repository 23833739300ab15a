//! Envoy's RateLimitQuotaService over real gRPC (h2c), streamed with the stubs compiled from
//! Envoy's own protos (`envoy-types`): shares as token buckets, a second Envoy's share on its
//! first report and the split after, unmatched buckets allowed, a malformed report ending only
//! its own stream, buckets abandoned on open streams when a reload removes their rule, and
//! nothing held past the TTL by Envoys that leave mid-report.

use std::collections::HashMap;
use std::time::Duration;

use envoy_types::pb::envoy::r#type::v3::rate_limit_strategy::{BlanketRule, Strategy};
use envoy_types::pb::envoy::service::rate_limit_quota::v3::rate_limit_quota_response::bucket_action::BucketAction;
use envoy_types::pb::envoy::service::rate_limit_quota::v3::rate_limit_quota_service_client::RateLimitQuotaServiceClient;
use envoy_types::pb::envoy::service::rate_limit_quota::v3::rate_limit_quota_usage_reports::BucketQuotaUsage;
use envoy_types::pb::envoy::service::rate_limit_quota::v3::{
    BucketId, RateLimitQuotaResponse, RateLimitQuotaUsageReports,
};
use envoy_types::pb::google::protobuf::Duration as ProtoDuration;
use tokio::sync::mpsc;
use tonic::Streaming;
use tonic::transport::Channel;

use floodwall_testkit::RedisServer;

use crate::in_process::Service;

const CONFIG: &str = r#"
[[policy]]
name = "per-tenant"
algorithm = "gcra"
limit = 800
period = "1m"

[rlqs]
listen = "127.0.0.1:0"

[[rlqs.bucket]]
domain = "edge"
bucket = ["name=api", "tenant"]
policies = ["per-tenant"]
"#;

/// One Envoy's stream: reports go in, one answer comes back for each.
pub(crate) struct EnvoyStream {
    reports: mpsc::Sender<RateLimitQuotaUsageReports>,
    answers: Streaming<RateLimitQuotaResponse>,
}

impl EnvoyStream {
    pub(crate) async fn open(service: &Service) -> EnvoyStream {
        EnvoyStream::open_at(service.rlqs_address.expect("an [rlqs] listener")).await
    }

    pub(crate) async fn open_at(address: std::net::SocketAddr) -> EnvoyStream {
        let mut client: RateLimitQuotaServiceClient<Channel> =
            RateLimitQuotaServiceClient::connect(format!("http://{address}"))
                .await
                .unwrap();
        let (reports, outgoing) = mpsc::channel(4);
        let outgoing = futures_util::stream::unfold(outgoing, |mut outgoing| async move {
            outgoing.recv().await.map(|report| (report, outgoing))
        });
        let answers = client
            .stream_rate_limit_quotas(outgoing)
            .await
            .unwrap()
            .into_inner();
        EnvoyStream { reports, answers }
    }

    /// Reports `requests` seen in a minute on the bucket `entries` of `domain`, and waits for
    /// the answer.
    pub(crate) async fn report(
        &mut self,
        domain: &str,
        entries: &[(&str, &str)],
        requests: u64,
    ) -> Result<RateLimitQuotaResponse, tonic::Status> {
        let bucket: HashMap<String, String> = entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let report = RateLimitQuotaUsageReports {
            domain: domain.to_owned(),
            bucket_quota_usages: vec![BucketQuotaUsage {
                bucket_id: Some(BucketId { bucket }),
                time_elapsed: Some(ProtoDuration {
                    seconds: 60,
                    nanos: 0,
                }),
                num_requests_allowed: requests,
                num_requests_denied: 0,
            }],
        };
        self.reports.send(report).await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(5), self.answers.message())
            .await
            .expect("an answer within 5 s");
        answer.map(|answer| answer.expect("the stream ended"))
    }
}

/// The one bucket's strategy in `answer`, and its TTL in seconds.
pub(crate) fn assigned(answer: &RateLimitQuotaResponse) -> (Strategy, i64) {
    assert_eq!(answer.bucket_action.len(), 1, "{answer:?}");
    let Some(BucketAction::QuotaAssignmentAction(assignment)) =
        &answer.bucket_action[0].bucket_action
    else {
        panic!("not an assignment: {answer:?}");
    };
    let ttl = assignment.assignment_time_to_live.unwrap().seconds;
    let strategy = assignment.rate_limit_strategy.unwrap().strategy.unwrap();
    (strategy, ttl)
}

/// A token bucket's (max_tokens, tokens_per_fill, fill_interval seconds).
pub(crate) fn bucket_of(strategy: Strategy) -> (u32, u32, i64) {
    let Strategy::TokenBucket(bucket) = strategy else {
        panic!("not a token bucket: {strategy:?}");
    };
    (
        bucket.max_tokens,
        bucket.tokens_per_fill.unwrap().value,
        bucket.fill_interval.unwrap().seconds,
    )
}

pub(crate) const API_ACME: &[(&str, &str)] = &[("tenant", "acme"), ("name", "api")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoys_share_a_tenants_rate_as_token_buckets() {
    let service = Service::start(CONFIG).await;
    let mut first = EnvoyStream::open(&service).await;
    let mut second = EnvoyStream::open(&service).await;
    // Alone, the first Envoy is assigned the pool: the limit less an eighth kept for newcomers.
    let (strategy, ttl) = assigned(&first.report("edge", API_ACME, 10_000).await.unwrap());
    assert_eq!(ttl, 12, "the default assignment_ttl");
    assert_eq!(bucket_of(strategy), (700, 700, 60));
    // A second Envoy gets the reserve at once, then each its half as they report again.
    let (strategy, _) = assigned(&second.report("edge", API_ACME, 10_000).await.unwrap());
    assert_eq!(bucket_of(strategy), (100, 100, 60));
    let (strategy, _) = assigned(&first.report("edge", API_ACME, 10_000).await.unwrap());
    assert_eq!(bucket_of(strategy), (350, 350, 60));
    let (strategy, _) = assigned(&second.report("edge", API_ACME, 10_000).await.unwrap());
    assert_eq!(bucket_of(strategy), (350, 350, 60));
    // Another tenant is shared on its own.
    let (strategy, _) = assigned(
        &first
            .report("edge", &[("name", "api"), ("tenant", "globex")], 10)
            .await
            .unwrap(),
    );
    assert_eq!(bucket_of(strategy), (700, 700, 60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_no_rule_matches_is_allowed() {
    let service = Service::start(CONFIG).await;
    for (domain, entries) in [
        ("edge", &[("name", "web"), ("tenant", "acme")][..]),
        ("edge", &[("tenant", "acme")][..]),
        ("other", API_ACME),
    ] {
        // A stream keeps its first domain: one stream per case.
        let mut envoy = EnvoyStream::open(&service).await;
        let (strategy, _) = assigned(&envoy.report(domain, entries, 5).await.unwrap());
        assert_eq!(
            strategy,
            Strategy::BlanketRule(BlanketRule::AllowAll as i32)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_report_ends_only_its_own_stream() {
    let service = Service::start(CONFIG).await;
    let mut bad = EnvoyStream::open(&service).await;
    let mut good = EnvoyStream::open(&service).await;
    let refused = bad.report("", API_ACME, 1).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    let (strategy, _) = assigned(&good.report("edge", API_ACME, 1).await.unwrap());
    assert!(matches!(strategy, Strategy::TokenBucket(_)), "{strategy:?}");
    let mut changed = EnvoyStream::open(&service).await;
    changed.report("edge", API_ACME, 1).await.unwrap();
    let refused = changed.report("elsewhere", API_ACME, 1).await.unwrap_err();
    assert!(refused.message().contains("cannot change"), "{refused:?}");
}

/// A reload that removes a bucket's rule abandons the bucket on the streams it was assigned
/// to; buckets still matched are not touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_removes_a_buckets_rule_abandons_it_on_open_streams() {
    let with_web = format!(
        "{CONFIG}\n[[rlqs.bucket]]\ndomain = \"edge\"\nbucket = [\"name=web\", \"tenant\"]\npolicies = [\"per-tenant\"]\n"
    );
    let file = crate::binary::config_file(&with_web);
    let service = crate::binary::Floodwall::serve(Some(file.path()));
    let mut envoy = EnvoyStream::open_at(service.rlqs.expect("an RLQS listener")).await;
    let web = &[("name", "web"), ("tenant", "acme")];
    for entries in [API_ACME, web] {
        let (strategy, _) = assigned(&envoy.report("edge", entries, 10).await.unwrap());
        assert!(matches!(strategy, Strategy::TokenBucket(_)), "{strategy:?}");
    }
    std::fs::write(file.path(), CONFIG).unwrap();
    service.signal("-HUP");
    service.log_line("configuration reloaded").await;
    let told = tokio::time::timeout(Duration::from_secs(5), envoy.answers.message())
        .await
        .expect("an abandonment within 5 s")
        .unwrap()
        .expect("the stream goes on");
    assert_eq!(told.bucket_action.len(), 1, "{told:?}");
    let action = &told.bucket_action[0];
    assert_eq!(
        action
            .bucket_id
            .as_ref()
            .unwrap()
            .bucket
            .get("name")
            .map(String::as_str),
        Some("web")
    );
    assert!(
        matches!(action.bucket_action, Some(BucketAction::AbandonAction(_))),
        "{action:?}"
    );
    // The stream goes on under the new rules.
    let (strategy, _) = assigned(&envoy.report("edge", web, 10).await.unwrap());
    assert_eq!(
        strategy,
        Strategy::BlanketRule(BlanketRule::AllowAll as i32)
    );
}

/// Envoys that leave mid-report, one on a healthy Redis and one while Redis hangs, hold
/// nothing past the assignment's TTL: until it passes their shares stand, then the Envoy that
/// stayed is assigned the whole pool again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoys_that_leave_mid_report_hold_nothing_past_the_ttl() {
    let redis = RedisServer::start().unwrap();
    let config = format!(
        "[storage]\nurl = \"{}\"\ntimeout = \"1s\"\n{}",
        redis.url(),
        CONFIG.replace(
            "listen = \"127.0.0.1:0\"",
            "listen = \"127.0.0.1:0\"\nassignment_ttl = \"6s\""
        )
    );
    let service = Service::start(&config).await;
    let mut staying = EnvoyStream::open(&service).await;
    let (strategy, _) = assigned(&staying.report("edge", API_ACME, 10_000).await.unwrap());
    assert_eq!(bucket_of(strategy), (700, 700, 60));
    // One leaves on a healthy Redis: a report answered, then another sent and not waited for.
    let mut healthy = EnvoyStream::open(&service).await;
    let (strategy, _) = assigned(&healthy.report("edge", API_ACME, 10_000).await.unwrap());
    assert_eq!(bucket_of(strategy), (100, 100, 60));
    let unread = tokio::time::timeout(
        Duration::from_millis(1),
        healthy.report("edge", API_ACME, 10_000),
    );
    let _ = unread.await;
    drop(healthy);
    // Its share stands until its TTL: the pool is split.
    let (strategy, _) = assigned(&staying.report("edge", API_ACME, 10_000).await.unwrap());
    assert_eq!(bucket_of(strategy), (350, 350, 60));
    // One leaves while its report waits on a Redis that hangs.
    let mut stalled = EnvoyStream::open(&service).await;
    redis.pause().unwrap();
    let waiting = tokio::time::timeout(
        Duration::from_millis(100),
        stalled.report("edge", API_ACME, 10_000),
    );
    assert!(waiting.await.is_err(), "answered while Redis hung");
    drop(stalled);
    redis.resume().unwrap();
    // Past the TTL (6 s, whole seconds on Redis's clock) nothing of theirs is left.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let (strategy, _) = assigned(&staying.report("edge", API_ACME, 10_000).await.unwrap());
    assert_eq!(bucket_of(strategy), (700, 700, 60));
}
