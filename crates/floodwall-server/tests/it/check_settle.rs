//! Reservations through the check API: `"reserve": true` admits on an estimate and answers an
//! unguessable id; `POST /v1/settle` charges the actual cost once, on any instance sharing the
//! store, into debt past what is left. Many clients through two instances on one Redis charge
//! exactly the sum of their actual costs, and a settle whose client leaves is still charged.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use floodwall_testkit::RedisServer;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::in_process::Service;

/// 1 000 tokens a day (a refill too slow to matter here, none for a window of 366 days), up
/// to 1 000 owed; and an in-flight cap.
fn config(storage: &str) -> String {
    format!(
        r#"
{storage}

[[policy]]
name = "tokens"
algorithm = "token_bucket"
limit = 1000
period = "1d"

[[policy]]
name = "yearly"
algorithm = "fixed_window"
limit = 1000000
period = "366d"

[[policy]]
name = "in-flight"
algorithm = "concurrency"
limit = 2
period = "1m"
"#
    )
}

async fn post(client: &Client, service: &Service, path: &str, body: Value) -> (StatusCode, Value) {
    let answer = client
        .post(service.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = answer.status();
    (status, answer.json().await.unwrap())
}

#[tokio::test]
async fn a_reservation_is_settled_once_into_debt_and_the_answers_say_so() {
    let service = Service::start(&config("")).await;
    let client = Client::new();
    let reserve = json!({"policy": "tokens", "key": "org-1", "cost": 60, "reserve": true});
    let (status, reserved) = post(&client, &service, "/v1/check", reserve).await;
    assert_eq!(status, StatusCode::OK);
    let id = reserved["reservation"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(reserved["reservation_ttl_ms"], 900_000);
    assert_eq!(reserved["remaining"], 940);
    // The answer used 1 100 tokens: 1 040 more than estimated, 100 past what was left.
    let settle = json!({"reservation": id, "cost": 1100});
    let (status, settled) = post(&client, &service, "/v1/settle", settle.clone()).await;
    assert_eq!(status, StatusCode::OK, "{settled}");
    assert_eq!(
        (settled["estimate"].as_u64(), settled["cost"].as_u64()),
        (Some(60), Some(1100))
    );
    let decision = &settled["decisions"][0];
    assert_eq!(
        (decision["remaining"].as_u64(), decision["debt"].as_u64()),
        (Some(0), Some(100))
    );
    // Once only.
    let (status, again) = post(&client, &service, "/v1/settle", settle).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(again["title"], "Unknown reservation");
    let check = json!({"policy": "tokens", "key": "org-1", "cost": 0});
    let (status, owed) = post(&client, &service, "/v1/check", check).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(owed["debt"], 100);
}

#[tokio::test]
async fn what_cannot_be_reserved_or_settled_is_refused_clearly() {
    let service = Service::start(&config("")).await;
    let client = Client::new();
    let held = json!({"policy": "in-flight", "key": "k", "reserve": true});
    let (status, refused) = post(&client, &service, "/v1/check", held).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("cannot be reserved")
    );
    // Denied: nothing reserved, nothing to settle.
    let too_much = json!({"policy": "tokens", "key": "k", "cost": 1000, "reserve": true});
    assert_eq!(
        post(&client, &service, "/v1/check", too_much.clone())
            .await
            .0,
        StatusCode::OK
    );
    let (status, denied) = post(&client, &service, "/v1/check", too_much).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        (
            denied["reservation"].clone(),
            denied["reservation_ttl_ms"].clone()
        ),
        (Value::Null, Value::Null)
    );
    for body in [
        json!({"reservation": "0123456789abcdef0123456789abcdef", "cost": 5}),
        json!({"reservation": "../../etc", "cost": 5}),
    ] {
        assert_eq!(
            post(&client, &service, "/v1/settle", body).await.0,
            StatusCode::NOT_FOUND
        );
    }
    for body in [
        json!({"reservation": "x"}),
        json!({"cost": 5}),
        json!({"reservation": "x", "cost": -1}),
    ] {
        let (status, problem) = post(&client, &service, "/v1/settle", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    }
}

/// 16 clients, 10 requests each, reserving through one instance and settling through the
/// other: the key is charged exactly the sum of actual costs, whatever the estimates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_across_two_instances_charge_exactly_the_actual_costs() {
    let redis = RedisServer::start().unwrap();
    let storage = format!("[storage]\nurl = \"{}\"\ntimeout = \"2s\"", redis.url());
    let instances = Arc::new([
        Service::start(&config(&storage)).await,
        Service::start(&config(&storage)).await,
    ]);
    let total = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..16u64)
        .map(|c| {
            let (instances, total) = (Arc::clone(&instances), Arc::clone(&total));
            tokio::spawn(async move {
                let client = Client::new();
                for n in 0..10u64 {
                    let estimate = 1 + (c * 11 + n * 5) % 40;
                    let actual = (c * 3 + n * 17) % 60;
                    let reserve = json!({"policy": "yearly", "key": "org", "cost": estimate, "reserve": true});
                    let by = &instances[(c % 2) as usize];
                    let (status, reserved) = post(&client, by, "/v1/check", reserve).await;
                    assert_eq!(status, StatusCode::OK, "{reserved}");
                    let settle = json!({"reservation": reserved["reservation"], "cost": actual});
                    let other = &instances[((c + 1) % 2) as usize];
                    let (status, settled) = post(&client, other, "/v1/settle", settle).await;
                    assert_eq!(status, StatusCode::OK, "{settled}");
                    total.fetch_add(actual, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    let check = json!({"policy": "yearly", "key": "org", "cost": 0});
    let (_, after) = post(&Client::new(), &instances[0], "/v1/check", check).await;
    assert_eq!(
        after["remaining"].as_u64(),
        Some(1_000_000 - total.load(Ordering::Relaxed))
    );
}

/// A settle whose client gives up while Redis stalls is charged once Redis answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settle_whose_client_leaves_during_a_redis_stall_is_charged_once() {
    let redis = RedisServer::start().unwrap();
    let storage = format!("[storage]\nurl = \"{}\"\ntimeout = \"2s\"", redis.url());
    let service = Service::start(&config(&storage)).await;
    let client = Client::new();
    let reserve = json!({"policy": "yearly", "key": "org", "cost": 10, "reserve": true});
    let (_, reserved) = post(&client, &service, "/v1/check", reserve).await;
    redis.pause().unwrap();
    let gave_up = client
        .post(service.url("/v1/settle"))
        .json(&json!({"reservation": reserved["reservation"], "cost": 70}))
        .timeout(Duration::from_millis(100))
        .send()
        .await;
    assert!(gave_up.is_err(), "answered while Redis hung");
    redis.resume().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let check = json!({"policy": "yearly", "key": "org", "cost": 0});
    let (_, after) = post(&client, &service, "/v1/check", check).await;
    assert_eq!(after["remaining"].as_u64(), Some(1_000_000 - 70));
}
