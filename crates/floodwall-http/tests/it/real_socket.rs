//! The example app over real sockets, driven by a real HTTP client: alone on the memory store,
//! and two instances sharing one limit through one redis-server.

use floodwall::{Limiter, MemoryStore, RedisConfig, RedisStore};
use floodwall_testkit::RedisServer;
use reqwest::StatusCode;

use crate::support::serve;

#[path = "../../examples/hello_api.rs"]
#[allow(dead_code)]
mod hello_api;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_says_hello_ten_times_a_minute_then_429() {
    let address = serve(hello_api::app(Limiter::new(MemoryStore::new())).unwrap()).await;
    let client = reqwest::Client::new();
    for _ in 0..10 {
        let response = client
            .get(format!("http://{address}/"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers().contains_key("ratelimit"));
        let body: serde_json::Value =
            serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        assert_eq!(body, serde_json::json!({ "message": "Hello, World!" }));
    }
    let denied = client
        .get(format!("http://{address}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(denied.headers()["content-type"], "application/problem+json");
    assert!(denied.headers().contains_key("retry-after"));

    // The API-key route: 401 without a key; a bucket of 10 per key.
    let no_key = client
        .get(format!("http://{address}/api"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_key.status(), StatusCode::UNAUTHORIZED);
    let mut admitted = 0;
    for _ in 0..12 {
        let response = client
            .get(format!("http://{address}/api"))
            .header("x-api-key", "k1")
            .send()
            .await
            .unwrap();
        admitted += u32::from(response.status() == StatusCode::OK);
    }
    // 10 from the bucket, plus at most what 2 per second refilled while the loop ran.
    assert!((10..=12).contains(&admitted), "{admitted}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_redis_share_the_limit_exactly() {
    let server = RedisServer::start().unwrap();
    let mut addresses = Vec::new();
    for _ in 0..2 {
        // Separate stores: separate connections, as two processes would have.
        let store = RedisStore::connect(RedisConfig::new(server.url()))
            .await
            .unwrap();
        addresses.push(serve(hello_api::app(Limiter::new(store)).unwrap()).await);
    }
    let client = reqwest::Client::new();
    let requests = (0..40).map(|i| {
        let (client, address) = (client.clone(), addresses[i % 2]);
        tokio::spawn(async move {
            client
                .get(format!("http://{address}/"))
                .send()
                .await
                .unwrap()
                .status()
        })
    });
    let mut statuses = Vec::new();
    for request in requests.collect::<Vec<_>>() {
        statuses.push(request.await.unwrap());
    }
    let admitted = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let denied = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((admitted, denied), (10, 30), "{statuses:?}");
}
