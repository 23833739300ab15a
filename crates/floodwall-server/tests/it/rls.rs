//! Envoy's RateLimitService over real gRPC (h2c), asked with the stubs compiled from Envoy's own
//! protos (`envoy-types`): limits per descriptor, tiers, hits at both levels, refunds, unknown
//! descriptors, bad requests, all-or-nothing requests, and what a store failure answers.

use std::time::Duration;

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{Code, DescriptorStatus};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::UInt64Value;
use envoy_types::pb::google::protobuf::value::Kind;
use tonic::transport::Channel;

use crate::in_process::Service;

pub(crate) const CONFIG: &str = r#"
[[policy]]
name = "per-ip"
algorithm = "fixed_window"
limit = 3
period = "1h"

[[policy]]
name = "per-user"
algorithm = "fixed_window"
limit = 1
period = "1h"

[[policy]]
name = "free-tier"
algorithm = "gcra"
limit = 1
period = "1m"

[[policy]]
name = "pro-tier"
algorithm = "gcra"
limit = 3
period = "1m"

[rls]
listen = "127.0.0.1:0"

[[rls.rule]]
domain = "edge"
descriptor = ["remote_address"]
policies = ["per-ip"]

[[rls.rule]]
domain = "edge"
descriptor = ["user"]
policies = ["per-user"]

[[rls.rule]]
domain = "edge"
descriptor = ["plan=free", "user"]
policies = ["free-tier"]

[[rls.rule]]
domain = "edge"
descriptor = ["plan=pro", "user"]
policies = ["pro-tier"]
"#;

pub(crate) async fn client(service: &Service) -> RateLimitServiceClient<Channel> {
    connect(service.rls_address.expect("an [rls] listener")).await
}

/// A client of the RLS listener at `address` (h2c).
pub(crate) async fn connect(address: std::net::SocketAddr) -> RateLimitServiceClient<Channel> {
    RateLimitServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap()
}

pub(crate) fn descriptor(entries: &[(&str, &str)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(key, value)| Entry {
                key: (*key).to_owned(),
                value: (*value).to_owned(),
            })
            .collect(),
        ..RateLimitDescriptor::default()
    }
}

pub(crate) fn request(descriptors: Vec<RateLimitDescriptor>) -> RateLimitRequest {
    RateLimitRequest {
        domain: "edge".to_owned(),
        descriptors,
        hits_addend: 0,
    }
}

pub(crate) async fn ask(
    client: &mut RateLimitServiceClient<Channel>,
    request: RateLimitRequest,
) -> RateLimitResponse {
    client
        .should_rate_limit(request)
        .await
        .unwrap()
        .into_inner()
}

fn header<'r>(response: &'r RateLimitResponse, name: &str) -> Option<&'r str> {
    response
        .response_headers_to_add
        .iter()
        .find(|h| h.key == name)
        .map(|h| h.value.as_str())
}

fn code(status: &DescriptorStatus) -> Code {
    Code::try_from(status.code).unwrap()
}

#[tokio::test]
async fn a_descriptor_is_limited_by_its_rule_then_over_limit_with_envoys_answers() {
    let service = Service::start(CONFIG).await;
    let mut client = client(&service).await;
    let ip = || request(vec![descriptor(&[("remote_address", "203.0.113.7")])]);
    for left in [2, 1, 0] {
        let answer = ask(&mut client, ip()).await;
        assert_eq!(Code::try_from(answer.overall_code), Ok(Code::Ok));
        let status = &answer.statuses[0];
        assert_eq!(code(status), Code::Ok);
        assert_eq!(status.limit_remaining, left);
        let limit = status.current_limit.as_ref().unwrap();
        assert_eq!(
            (limit.name.as_str(), limit.requests_per_unit),
            ("per-ip", 3)
        );
        assert_eq!(Unit::try_from(limit.unit), Ok(Unit::Hour));
        let reset = status.duration_until_reset.as_ref().unwrap();
        assert!(reset.seconds > 0 && reset.seconds <= 3600, "{reset:?}");
        // The draft's headers, exactly as an HTTP route sends them.
        let policy = sfv::Parser::new(header(&answer, "ratelimit-policy").unwrap())
            .parse::<sfv::List>()
            .unwrap();
        assert_eq!(policy.len(), 1);
        assert_eq!(
            header(&answer, "ratelimit-policy"),
            Some("\"per-ip\";q=3;w=3600")
        );
        let state = header(&answer, "ratelimit").unwrap();
        assert!(
            state.starts_with(&format!("\"per-ip\";r={left};t=")),
            "{state}"
        );
        assert!(header(&answer, "retry-after").is_none());
        assert!(answer.raw_body.is_empty());
    }
    let over = ask(&mut client, ip()).await;
    assert_eq!(Code::try_from(over.overall_code), Ok(Code::OverLimit));
    assert_eq!(code(&over.statuses[0]), Code::OverLimit);
    assert_eq!(over.statuses[0].limit_remaining, 0);
    let retry: u64 = header(&over, "retry-after").unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry));
    assert_eq!(
        header(&over, "content-type"),
        Some("application/problem+json")
    );
    let problem: serde_json::Value = serde_json::from_slice(&over.raw_body).unwrap();
    assert_eq!(problem["status"], 429);
    assert_eq!(problem["violated-policies"], serde_json::json!(["per-ip"]));
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .ends_with("#quota-exceeded")
    );
    let metadata = over.dynamic_metadata.unwrap();
    let Some(Kind::ListValue(violated)) = &metadata.fields["violated_policies"].kind else {
        panic!("violated_policies is not a list: {metadata:?}");
    };
    assert_eq!(violated.values.len(), 1);
    // Another address has its own quota.
    let other = ask(
        &mut client,
        request(vec![descriptor(&[("remote_address", "198.51.100.1")])]),
    )
    .await;
    assert_eq!(Code::try_from(other.overall_code), Ok(Code::Ok));
}

#[tokio::test]
async fn the_pinned_plan_picks_the_tier() {
    let service = Service::start(CONFIG).await;
    let mut client = client(&service).await;
    let on = |plan: &str| request(vec![descriptor(&[("plan", plan), ("user", "ann")])]);
    let mut free = Vec::new();
    let mut pro = Vec::new();
    for _ in 0..4 {
        free.push(ask(&mut client, on("free")).await.overall_code);
        pro.push(ask(&mut client, on("pro")).await.overall_code);
    }
    let (ok, over) = (Code::Ok as i32, Code::OverLimit as i32);
    assert_eq!(free, [ok, over, over, over]);
    assert_eq!(pro, [ok, ok, ok, over]);
    // A plan no rule pins is not limited.
    let answer = ask(&mut client, on("enterprise")).await;
    assert_eq!(answer.statuses[0].current_limit, None);
    assert_eq!(code(&answer.statuses[0]), Code::Ok);
}

#[tokio::test]
async fn hits_count_at_both_levels_and_negative_hits_give_back() {
    let service = Service::start(CONFIG).await;
    let mut client = client(&service).await;
    let ip = descriptor(&[("remote_address", "192.0.2.1")]);
    // The request's hits_addend applies to every descriptor without its own.
    let mut two = request(vec![ip.clone()]);
    two.hits_addend = 2;
    assert_eq!(ask(&mut client, two).await.statuses[0].limit_remaining, 1);
    // An explicit 0 checks without consuming.
    let mut peek = ip.clone();
    peek.hits_addend = Some(UInt64Value { value: 0 });
    let mut with_request_hits = request(vec![peek]);
    with_request_hits.hits_addend = 3;
    let peeked = ask(&mut client, with_request_hits).await;
    assert_eq!(Code::try_from(peeked.overall_code), Ok(Code::Ok));
    assert_eq!(peeked.statuses[0].limit_remaining, 1);
    // Negative hits refund, never past a full quota, and are always OK.
    let mut refund = ip.clone();
    refund.hits_addend = Some(UInt64Value { value: 5 });
    refund.is_negative_hits = true;
    let refunded = ask(&mut client, request(vec![refund])).await;
    assert_eq!(Code::try_from(refunded.overall_code), Ok(Code::Ok));
    assert_eq!(refunded.statuses[0].limit_remaining, 3);
    // The descriptor's own hits: 3 at once takes the whole quota.
    let mut three = ip.clone();
    three.hits_addend = Some(UInt64Value { value: 3 });
    assert_eq!(
        ask(&mut client, request(vec![three])).await.statuses[0].limit_remaining,
        0
    );
    // More than the policy could ever admit: over the limit, nothing consumed, no Retry-After.
    let mut huge = descriptor(&[("remote_address", "192.0.2.2")]);
    huge.hits_addend = Some(UInt64Value { value: 4 });
    let refused = ask(&mut client, request(vec![huge])).await;
    assert_eq!(Code::try_from(refused.overall_code), Ok(Code::OverLimit));
    assert!(header(&refused, "retry-after").is_none());
    let problem: serde_json::Value = serde_json::from_slice(&refused.raw_body).unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("hits_addend 4"),
        "{problem}"
    );
    let after = ask(
        &mut client,
        request(vec![descriptor(&[("remote_address", "192.0.2.2")])]),
    )
    .await;
    assert_eq!(after.statuses[0].limit_remaining, 2);
}

#[tokio::test]
async fn unknown_descriptors_pass_and_bad_requests_are_invalid_arguments() {
    let service = Service::start(CONFIG).await;
    let mut client = client(&service).await;
    let unknown = ask(
        &mut client,
        request(vec![descriptor(&[("header_match", "x")])]),
    )
    .await;
    assert_eq!(Code::try_from(unknown.overall_code), Ok(Code::Ok));
    assert_eq!(unknown.statuses.len(), 1);
    assert!(unknown.response_headers_to_add.is_empty());
    let mut elsewhere = request(vec![descriptor(&[("remote_address", "192.0.2.9")])]);
    elsewhere.domain = "internal".to_owned();
    assert_eq!(
        ask(&mut client, elsewhere).await.statuses[0].current_limit,
        None
    );

    let mut no_domain = request(vec![descriptor(&[("remote_address", "1")])]);
    no_domain.domain.clear();
    let no_entry_key = request(vec![descriptor(&[("", "x")])]);
    for (bad, says) in [
        (no_domain, "domain is empty"),
        (request(vec![]), "no descriptors"),
        (no_entry_key, "empty key"),
        (request(vec![descriptor(&[])]), "no entries"),
        (request(vec![descriptor(&[("a", "b")]); 65]), "at most 64"),
    ] {
        let status = client.should_rate_limit(bad).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains(says), "{}", status.message());
    }
}

#[tokio::test]
async fn a_request_over_in_one_descriptor_consumes_nothing_in_the_others() {
    let service = Service::start(CONFIG).await;
    let mut client = client(&service).await;
    let ip = descriptor(&[("remote_address", "192.0.2.50")]);
    let user = descriptor(&[("user", "bob")]);
    assert_eq!(
        ask(&mut client, request(vec![user.clone()])).await.statuses[0].limit_remaining,
        0
    );
    let both = ask(&mut client, request(vec![ip.clone(), user.clone()])).await;
    assert_eq!(Code::try_from(both.overall_code), Ok(Code::OverLimit));
    assert_eq!(code(&both.statuses[0]), Code::Ok);
    assert_eq!(code(&both.statuses[1]), Code::OverLimit);
    // Nothing was taken from the address: its 3 are all there.
    assert_eq!(both.statuses[0].limit_remaining, 3);
    let ip_alone = ask(&mut client, request(vec![ip])).await;
    assert_eq!(ip_alone.statuses[0].limit_remaining, 2);
    // One item per matched policy in the headers.
    let items = header(&both, "ratelimit-policy").unwrap();
    assert_eq!(items, "\"per-ip\";q=3;w=3600, \"per-user\";q=1;w=3600");
}

#[tokio::test]
async fn a_store_down_is_unavailable_when_failing_closed_and_ok_when_open() {
    let port = crate::outages::closed_port();
    let config = |on_error: &str| {
        format!(
            "[storage]\nurl = \"redis://127.0.0.1:{port}\"\ntimeout = \"20ms\"\non_error = \"{on_error}\"\n{CONFIG}"
        )
    };
    let closed = Service::start(&config("deny")).await;
    let mut client = client(&closed).await;
    let one = || request(vec![descriptor(&[("remote_address", "192.0.2.1")])]);
    let started = tokio::time::Instant::now();
    let status = client.should_rate_limit(one()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    let open = Service::start(&config("allow")).await;
    let mut client = self::client(&open).await;
    let answer = ask(&mut client, one()).await;
    assert_eq!(Code::try_from(answer.overall_code), Ok(Code::Ok));
    // Nothing was counted, so nothing is claimed about what is left.
    assert!(header(&answer, "ratelimit").is_none());
}

/// The real binary: RLS answers in the Prometheus metrics (by configured domain and code, and
/// as decisions by policy), the standard health service, a SIGHUP that replaces the rules, and
/// a SIGTERM that ends the process with a gRPC connection open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_counts_serves_health_reloads_rules_and_drains() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    let config = format!("[admin]\nlisten = \"127.0.0.1:0\"\n{CONFIG}");
    let file = crate::binary::config_file(&config);
    let mut service = crate::binary::Floodwall::serve_with(Some(file.path()), &[], true);
    let rls = format!("http://{}", service.rls.expect("the RLS listener"));
    let mut client = RateLimitServiceClient::connect(rls.clone()).await.unwrap();
    let ip = || request(vec![descriptor(&[("remote_address", "192.0.2.1")])]);
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(ask(&mut client, ip()).await.overall_code);
    }
    assert_eq!(codes, [1, 1, 1, 2]);
    let mut nameless = ip();
    nameless.domain.clear();
    assert!(client.should_rate_limit(nameless).await.is_err());
    let mut elsewhere = ip();
    elsewhere.domain = "internal".to_owned();
    ask(&mut client, elsewhere).await;

    let channel = Channel::from_shared(rls.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    for name in ["", "envoy.service.ratelimit.v3.RateLimitService"] {
        let answer = health
            .check(HealthCheckRequest {
                service: name.to_owned(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.status, ServingStatus::Serving as i32, "{name:?}");
    }

    let metrics = reqwest::get(service.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        r#"floodwall_rls_requests_total{domain="edge",code="ok"} 3"#,
        r#"floodwall_rls_requests_total{domain="edge",code="over_limit"} 1"#,
        r#"floodwall_rls_requests_total{domain="unknown",code="invalid"} 1"#,
        r#"floodwall_rls_requests_total{domain="unknown",code="ok"} 1"#,
        r#"floodwall_decisions_total{policy="per-ip",outcome="allowed"} 3"#,
        r#"floodwall_decisions_total{policy="per-ip",outcome="denied"} 1"#,
        r#"floodwall_check_duration_seconds_count{route="grpc ShouldRateLimit"} 5"#,
        "# HELP floodwall_rls_requests_total ",
    ] {
        assert!(metrics.contains(series), "no {series} in:\n{metrics}");
    }
    assert!(
        !metrics.contains("internal"),
        "a client's domain became a label:\n{metrics}"
    );

    // SIGHUP: the address's rule now names a looser policy.
    std::fs::write(
        file.path(),
        config.replace("policies = [\"per-ip\"]", "policies = [\"pro-tier\"]"),
    )
    .unwrap();
    service.signal("-HUP");
    service.log_line("configuration reloaded").await;
    let reloaded = ask(&mut client, ip()).await;
    assert_eq!(
        reloaded.statuses[0].current_limit.as_ref().unwrap().name,
        "pro-tier"
    );

    // SIGTERM with the gRPC connection still open: the process finishes and exits 0.
    service.signal("-TERM");
    let exited = tokio::task::spawn_blocking(move || service.wait())
        .await
        .unwrap();
    assert_eq!(exited, Some(0));
    drop(client);
}

/// The algorithms Envoy can use: all but `concurrency`, whose slots Envoy could never release.
fn rate_algorithms() -> impl Iterator<Item = floodwall::Algorithm> {
    floodwall::Algorithm::ALL
        .into_iter()
        .filter(|a| *a != floodwall::Algorithm::Concurrency)
}

/// `[storage] url`, every rate algorithm as a policy of 100 per hour, and a rule per algorithm.
fn shared_config(url: &str) -> String {
    let mut config = format!(
        "[storage]\nurl = \"{url}\"\ntimeout = \"2s\"\non_error = \"deny\"\n[rls]\nlisten = \"127.0.0.1:0\"\n"
    );
    for algorithm in rate_algorithms() {
        config.push_str(&format!(
            "[[policy]]\nname = \"{algorithm}\"\nalgorithm = \"{algorithm}\"\nlimit = 100\nperiod = \"1h\"\n\
             [[rls.rule]]\ndomain = \"edge\"\ndescriptor = [\"algorithm={algorithm}\", \"tenant\"]\npolicies = [\"{algorithm}\"]\n"
        ));
    }
    config
}

/// Two processes on one store, 400 concurrent calls on one descriptor for each rate algorithm:
/// exactly 100 are OK. Then a request whose second descriptor is over its limit takes nothing
/// from its first (on a cluster, whose keys may live on other nodes, by refunding it).
async fn two_processes_admit_exactly_and_all_or_nothing(url: &str) {
    let file = crate::binary::config_file(&shared_config(url));
    let services = [
        crate::binary::Floodwall::serve(Some(file.path())),
        crate::binary::Floodwall::serve(Some(file.path())),
    ];
    let mut clients = Vec::new();
    for service in &services {
        clients.push(connect(service.rls.unwrap()).await);
    }
    for algorithm in rate_algorithms() {
        let name = algorithm.as_str();
        let tasks: Vec<_> = (0..400)
            .map(|i| {
                let mut client = clients[i % 2].clone();
                let call = request(vec![descriptor(&[("algorithm", name), ("tenant", "t7")])]);
                tokio::spawn(async move { ask(&mut client, call).await.overall_code })
            })
            .collect();
        let mut ok = 0;
        for task in tasks {
            let code = task.await.unwrap();
            assert!(
                code == Code::Ok as i32 || code == Code::OverLimit as i32,
                "{code}"
            );
            ok += usize::from(code == Code::Ok as i32);
        }
        assert_eq!(ok, 100, "{algorithm}");
    }
    // t7 is spent under every policy; t8 is fresh. Together: over, and t8 keeps its 100.
    let fresh = descriptor(&[("algorithm", "gcra"), ("tenant", "t8")]);
    let spent = descriptor(&[("algorithm", "fixed_window"), ("tenant", "t7")]);
    let both = ask(&mut clients[0], request(vec![fresh.clone(), spent])).await;
    assert_eq!(Code::try_from(both.overall_code), Ok(Code::OverLimit));
    assert_eq!(both.statuses[0].limit_remaining, 100);
    let alone = ask(&mut clients[1], request(vec![fresh])).await;
    assert_eq!(alone.statuses[0].limit_remaining, 99);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_redis_answer_envoy_exactly() {
    let redis = floodwall_testkit::RedisServer::start().unwrap();
    two_processes_admit_exactly_and_all_or_nothing(&redis.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_a_cluster_answer_envoy_exactly() {
    let cluster = floodwall_testkit::RedisCluster::start().unwrap();
    two_processes_admit_exactly_and_all_or_nothing(&cluster.url()).await;
}

/// A descriptor's own `limit` counts only with `allow_overrides`, each distinct override apart
/// from the rule's policy, and at most `max_overrides` of them: past that, the rule's own limit.
#[tokio::test]
async fn limit_overrides_only_when_allowed_and_bounded() {
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::RateLimitOverride;
    use envoy_types::pb::envoy::r#type::v3::RateLimitUnit;

    let with_limit = |address: &str, requests: u32| {
        let mut d = descriptor(&[("remote_address", address)]);
        d.limit = Some(RateLimitOverride {
            requests_per_unit: requests,
            unit: RateLimitUnit::Minute as i32,
        });
        request(vec![d])
    };
    // Not allowed (the default): the rule's 3 per hour, whatever the descriptor says.
    let plain = Service::start(CONFIG).await;
    let mut refusing = client(&plain).await;
    let answer = ask(&mut refusing, with_limit("192.0.2.1", 50)).await;
    let limit = answer.statuses[0].current_limit.as_ref().unwrap();
    assert_eq!(
        (limit.name.as_str(), limit.requests_per_unit),
        ("per-ip", 3)
    );

    let allowing = CONFIG.replace(
        "listen = \"127.0.0.1:0\"\n",
        "listen = \"127.0.0.1:0\"\nallow_overrides = true\nmax_overrides = 2\n",
    );
    let service = Service::start(&allowing).await;
    let mut client = self::client(&service).await;
    let answer = ask(&mut client, with_limit("192.0.2.1", 50)).await;
    let limit = answer.statuses[0].current_limit.as_ref().unwrap();
    assert_eq!(limit.requests_per_unit, 50);
    assert_eq!(Unit::try_from(limit.unit), Ok(Unit::Minute));
    assert!(limit.name.starts_with("per-ip.override-"), "{}", limit.name);
    assert_eq!(answer.statuses[0].limit_remaining, 49);
    // Counted apart from the rule's own policy.
    let own = ask(
        &mut client,
        request(vec![descriptor(&[("remote_address", "192.0.2.1")])]),
    )
    .await;
    assert_eq!(own.statuses[0].limit_remaining, 2);
    // A second distinct override is made; a third is past max_overrides.
    let second = ask(&mut client, with_limit("192.0.2.1", 60)).await;
    assert_eq!(
        second.statuses[0]
            .current_limit
            .as_ref()
            .unwrap()
            .requests_per_unit,
        60
    );
    let third = ask(&mut client, with_limit("192.0.2.1", 70)).await;
    assert_eq!(
        third.statuses[0]
            .current_limit
            .as_ref()
            .unwrap()
            .requests_per_unit,
        3
    );
    // The first override is still there, with its count.
    let again = ask(&mut client, with_limit("192.0.2.1", 50)).await;
    assert_eq!(again.statuses[0].limit_remaining, 48);
}
