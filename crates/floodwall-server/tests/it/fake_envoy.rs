//! A fake Envoy in front of floodwall's RLS: descriptors built from `rate_limits` actions as
//! Envoy's HTTP ratelimit filter builds them, each call made with Envoy's default 20 ms timeout,
//! and the answer applied as the filter applies it: OVER_LIMIT is a 429 with the service's
//! headers and raw body, OK passes the request on with the headers added, and an error or a
//! timeout passes it on too unless `failure_mode_deny` (then 500). With Redis killed mid-test.

use std::collections::HashMap;
use std::time::Duration;

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use floodwall_testkit::RedisServer;
use tonic::transport::Channel;

use crate::rls::descriptor;

/// One action of a `rate_limits` entry.
enum Action {
    RemoteAddress,
    RequestHeaders {
        header: &'static str,
        key: &'static str,
    },
    GenericKey {
        value: &'static str,
    },
}

/// A downstream request as the filter sees it.
struct Downstream {
    peer: &'static str,
    headers: HashMap<&'static str, &'static str>,
}

/// What the downstream client gets.
#[derive(Debug)]
struct Answered {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Envoy's descriptors: one per `rate_limits` entry, each action an entry; an entry whose header
/// is absent produces no descriptor at all.
fn descriptors(rate_limits: &[Vec<Action>], request: &Downstream) -> Vec<RateLimitDescriptor> {
    rate_limits
        .iter()
        .filter_map(|actions| {
            let entries: Option<Vec<(&str, &str)>> = actions
                .iter()
                .map(|action| match action {
                    Action::RemoteAddress => Some(("remote_address", request.peer)),
                    Action::RequestHeaders { header, key } => {
                        request.headers.get(header).map(|value| (*key, *value))
                    }
                    Action::GenericKey { value } => Some(("generic_key", *value)),
                })
                .collect();
            entries.map(|entries| descriptor(&entries))
        })
        .collect()
}

async fn envoy(
    client: &mut RateLimitServiceClient<Channel>,
    rate_limits: &[Vec<Action>],
    request: &Downstream,
    failure_mode_deny: bool,
) -> Answered {
    let descriptors = descriptors(rate_limits, request);
    let pass = |headers| Answered {
        status: 200,
        headers,
        body: b"upstream".to_vec(),
    };
    if descriptors.is_empty() {
        return pass(Vec::new());
    }
    let call = RateLimitRequest {
        domain: "edge".to_owned(),
        descriptors,
        hits_addend: 0,
    };
    let answer = tokio::time::timeout(Duration::from_millis(20), client.should_rate_limit(call));
    match answer.await {
        Ok(Ok(response)) => {
            let response = response.into_inner();
            let headers = response
                .response_headers_to_add
                .iter()
                .map(|h| (h.key.clone(), h.value.clone()))
                .collect();
            if response.overall_code == Code::OverLimit as i32 {
                Answered {
                    status: 429,
                    headers,
                    body: response.raw_body,
                }
            } else {
                pass(headers)
            }
        }
        // An error answer or no answer within the timeout.
        _ if failure_mode_deny => Answered {
            status: 500,
            headers: Vec::new(),
            body: Vec::new(),
        },
        _ => pass(Vec::new()),
    }
}

const CONFIG: &str = r#"
[[policy]]
name = "per-ip"
algorithm = "sliding_window"
limit = 2
period = "1h"

[[policy]]
name = "per-user"
algorithm = "gcra"
limit = 5
period = "1h"

[rls]
listen = "127.0.0.1:0"

[[rls.rule]]
domain = "edge"
descriptor = ["remote_address"]
policies = ["per-ip"]

[[rls.rule]]
domain = "edge"
descriptor = ["generic_key=api", "x-user"]
policies = ["per-user"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_applies_the_answers_and_survives_a_killed_redis() {
    let mut redis = RedisServer::start().unwrap();
    let config = format!(
        "[storage]\nurl = \"{}\"\ntimeout = \"10ms\"\non_error = \"deny\"\n{CONFIG}",
        redis.url()
    );
    let service = crate::in_process::Service::start(&config).await;
    let mut client = crate::rls::client(&service).await;
    let rate_limits = [
        vec![Action::RemoteAddress],
        vec![
            Action::GenericKey { value: "api" },
            Action::RequestHeaders {
                header: "x-user",
                key: "x-user",
            },
        ],
    ];
    let ann = Downstream {
        peer: "203.0.113.9",
        headers: HashMap::from([("x-user", "ann")]),
    };
    let anonymous = Downstream {
        peer: "203.0.113.10",
        headers: HashMap::new(),
    };
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(envoy(&mut client, &rate_limits, &ann, false).await.status);
    }
    assert_eq!(statuses, [200, 200, 429]);
    let denied = envoy(&mut client, &rate_limits, &ann, false).await;
    let header = |name: &str| {
        denied
            .headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    assert!(header("retry-after").is_some(), "{denied:?}");
    assert_eq!(
        header("ratelimit-policy").as_deref(),
        Some("\"per-ip\";q=2;w=3600, \"per-user\";q=5;w=3600")
    );
    assert_eq!(
        header("content-type").as_deref(),
        Some("application/problem+json")
    );
    let problem: serde_json::Value = serde_json::from_slice(&denied.body).unwrap();
    assert_eq!(problem["violated-policies"], serde_json::json!(["per-ip"]));
    // Without the header, the filter sends only the address's descriptor.
    let passed = envoy(&mut client, &rate_limits, &anonymous, false).await;
    assert_eq!(passed.status, 200);
    assert!(
        passed
            .headers
            .iter()
            .any(|(k, v)| k == "ratelimit-policy" && v == "\"per-ip\";q=2;w=3600")
    );

    // Redis dies: floodwall answers UNAVAILABLE inside Envoy's 20 ms, and the filter decides.
    redis.kill();
    let fresh = Downstream {
        peer: "198.51.100.20",
        headers: HashMap::from([("x-user", "bo")]),
    };
    for _ in 0..5 {
        let started = tokio::time::Instant::now();
        assert_eq!(
            envoy(&mut client, &rate_limits, &fresh, false).await.status,
            200
        );
        assert_eq!(
            envoy(&mut client, &rate_limits, &fresh, true).await.status,
            500
        );
        // Two calls, each cut off at 20 ms by the fake Envoy; generous for a busy machine.
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "{:?}",
            started.elapsed()
        );
    }
    // floodwall answers itself, well inside its deadline, rather than being cut off.
    let started = tokio::time::Instant::now();
    let direct = client
        .should_rate_limit(RateLimitRequest {
            domain: "edge".to_owned(),
            descriptors: descriptors(&rate_limits, &fresh),
            hits_addend: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(direct.code(), tonic::Code::Unavailable);
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );

    // Back: enforcing again, with the counts Redis kept before it died gone with it.
    redis.restart().unwrap();
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let call = RateLimitRequest {
            domain: "edge".to_owned(),
            descriptors: descriptors(&rate_limits, &fresh),
            hits_addend: 0,
        };
        if client.should_rate_limit(call).await.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "floodwall never reconnected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(envoy(&mut client, &rate_limits, &fresh, true).await.status);
    }
    assert_eq!(statuses, [200, 429, 429]);
}
