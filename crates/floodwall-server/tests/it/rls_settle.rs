//! Settles over RLS (Envoy's `apply_on_stream_done` calls, which report a cost after the
//! response): always OK, always charged, into debt past what is left; the key is then denied
//! until refill has paid the debt. Against the memory store and a real Redis, with the caller
//! walking away mid-settle while Redis hangs.

use std::time::Duration;

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::google::protobuf::UInt64Value;
use floodwall_testkit::RedisServer;

use crate::in_process::Service;
use crate::rls::{ask, client, descriptor, request};

const ADDRESS: &str = "203.0.113.7";

/// 100 tokens a day per address (a refill too slow to matter here) and 10 requests an hour;
/// the request-time rule asks without consuming, the settling rule charges the usage.
fn config(storage: &str) -> String {
    format!(
        r#"
{storage}

[[policy]]
name = "tokens"
algorithm = "token_bucket"
limit = 100
period = "1d"

[[policy]]
name = "requests"
algorithm = "fixed_window"
limit = 1
period = "1d"

[rls]
listen = "127.0.0.1:0"

[[rls.rule]]
domain = "edge"
descriptor = ["remote_address"]
policies = ["tokens"]

[[rls.rule]]
domain = "edge"
descriptor = ["user"]
policies = ["requests"]

[[rls.rule]]
domain = "edge"
descriptor = ["usage=reported", "remote_address"]
policies = ["tokens"]
settle = true
"#
    )
}

/// The request-time descriptor, asking for `units` (0: only whether anything is left).
fn asking(units: u64) -> RateLimitDescriptor {
    RateLimitDescriptor {
        hits_addend: Some(UInt64Value { value: units }),
        ..descriptor(&[("remote_address", ADDRESS)])
    }
}

/// The stream-done descriptor, reporting `usage`.
fn reporting(usage: u64) -> RateLimitDescriptor {
    RateLimitDescriptor {
        hits_addend: Some(UInt64Value { value: usage }),
        ..descriptor(&[("usage", "reported"), ("remote_address", ADDRESS)])
    }
}

fn code(code: i32) -> Code {
    Code::try_from(code).unwrap()
}

#[tokio::test]
async fn a_settle_past_what_is_left_is_ok_charged_and_denies_until_paid() {
    let service = Service::start(&config("")).await;
    let mut rls = client(&service).await;
    let answer = ask(&mut rls, request(vec![asking(0)])).await;
    assert_eq!(code(answer.overall_code), Code::Ok);
    assert_eq!(answer.statuses[0].limit_remaining, 100);
    // The response used 150 tokens: 50 more than were left.
    let settled = ask(&mut rls, request(vec![reporting(150)])).await;
    assert_eq!(
        code(settled.overall_code),
        Code::Ok,
        "a settle is never denied"
    );
    assert_eq!(code(settled.statuses[0].code), Code::Ok);
    assert_eq!(settled.statuses[0].limit_remaining, 0);
    let reset = settled.statuses[0].duration_until_reset.as_ref().unwrap();
    // Back to full when the 50 owed and the 100 spent have refilled: 150 × 864 s.
    assert!((129_500..=129_600).contains(&reset.seconds), "{reset:?}");
    assert!(settled.response_headers_to_add.is_empty() || settled.raw_body.is_empty());
    let denied = ask(&mut rls, request(vec![asking(0)])).await;
    assert_eq!(
        code(denied.overall_code),
        Code::OverLimit,
        "the key owes 50"
    );
    let problem: serde_json::Value = serde_json::from_slice(&denied.raw_body).unwrap();
    assert_eq!(problem["debt"], serde_json::json!({"tokens": 50}));
    // The check API counts an address as RLS does, and says what it owes.
    let checked = reqwest::Client::new()
        .post(service.url("/v1/check"))
        .json(&serde_json::json!({"policy": "tokens", "key": ADDRESS, "cost": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(checked.status(), reqwest::StatusCode::TOO_MANY_REQUESTS);
    let body: serde_json::Value = checked.json().await.unwrap();
    assert_eq!(
        (body["remaining"].as_u64(), body["debt"].as_u64()),
        (Some(0), Some(50))
    );
    // Another settle while in debt is charged all the same, up to max_debt (one capacity).
    let more = ask(&mut rls, request(vec![reporting(500)])).await;
    assert_eq!(code(more.overall_code), Code::Ok);
}

#[tokio::test]
async fn a_settle_is_charged_when_the_rest_of_its_request_is_denied() {
    let service = Service::start(&config("")).await;
    let mut rls = client(&service).await;
    let user = || descriptor(&[("user", "ada")]);
    assert_eq!(
        code(ask(&mut rls, request(vec![user()])).await.overall_code),
        Code::Ok
    );
    // The user's requests are spent: that descriptor is over, the settle is still charged.
    let mixed = ask(&mut rls, request(vec![user(), reporting(60)])).await;
    assert_eq!(code(mixed.overall_code), Code::OverLimit);
    assert_eq!(code(mixed.statuses[0].code), Code::OverLimit);
    assert_eq!(code(mixed.statuses[1].code), Code::Ok);
    assert_eq!(mixed.statuses[1].limit_remaining, 40);
    assert_eq!(
        code(ask(&mut rls, request(vec![asking(41)])).await.overall_code),
        Code::OverLimit
    );
    assert_eq!(
        code(ask(&mut rls, request(vec![asking(40)])).await.overall_code),
        Code::Ok
    );
}

/// Envoy stops waiting for a stream-done call after its timeout; a settle it gave up on while
/// Redis hung is charged once Redis answers, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settle_whose_caller_leaves_during_a_redis_stall_is_charged_once() {
    let redis = RedisServer::start().unwrap();
    let storage = format!("[storage]\nurl = \"{}\"\ntimeout = \"500ms\"", redis.url());
    let service = Service::start(&config(&storage)).await;
    let mut rls = client(&service).await;
    assert_eq!(
        code(ask(&mut rls, request(vec![asking(0)])).await.overall_code),
        Code::Ok
    );
    redis.pause().unwrap();
    let gave_up = tokio::time::timeout(
        Duration::from_millis(5),
        ask(&mut rls, request(vec![reporting(60)])),
    )
    .await;
    assert!(gave_up.is_err(), "answered while Redis hung");
    tokio::time::sleep(Duration::from_millis(50)).await;
    redis.resume().unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut rls = client(&service).await;
    assert_eq!(
        code(ask(&mut rls, request(vec![asking(41)])).await.overall_code),
        Code::OverLimit,
        "the abandoned settle was not charged"
    );
    assert_eq!(
        code(ask(&mut rls, request(vec![asking(40)])).await.overall_code),
        Code::Ok,
        "the abandoned settle was charged more than once"
    );
}
