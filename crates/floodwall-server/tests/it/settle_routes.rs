//! Routes that settle from the upstream's answer (`settle_from = "header:x-usage"`): the
//! request is admitted on the route's `cost`, then charged what the upstream reports, into
//! debt past what is left; the header never reaches the client. A client that leaves while
//! the settle waits on a hung Redis leaves it running: it is charged once Redis answers.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::get;
use floodwall_testkit::RedisServer;
use reqwest::{Client, StatusCode};
use serde_json::Value;

use crate::in_process::Service;

/// Empties Redis's script cache, then stalls it for 400 ms (without waiting for it): a script
/// sent meanwhile is answered NOSCRIPT when the stall ends, and must be sent again.
fn flush_scripts_then_stall(redis: &RedisServer) {
    let mut connection =
        std::net::TcpStream::connect(("127.0.0.1", redis.port().unwrap())).unwrap();
    connection.write_all(b"SCRIPT FLUSH\r\n").unwrap();
    let mut flushed = [0u8; 5];
    connection.read_exact(&mut flushed).unwrap();
    assert_eq!(&flushed, b"+OK\r\n");
    // Redis writes replies once it has run what it read, so this one comes after the stall.
    connection.write_all(b"DEBUG SLEEP 0.4\r\n").unwrap();
    // The connection stays open until the stall ends, so Redis is not told to give up on it.
    std::thread::spawn(move || {
        let mut slept = [0u8; 5];
        let _ = connection.read_exact(&mut slept);
    });
}

/// An upstream answering `/up/metered` with the usage the request asks it to report
/// (`x-report-usage`) in `x-usage`; with `x-stall`, it stalls `redis` first.
async fn upstream(redis: Option<Arc<RedisServer>>) -> SocketAddr {
    let app = Router::new().route(
        "/up/metered",
        get(move |headers: HeaderMap| {
            let redis = redis.clone();
            async move {
                if let (Some(redis), true) = (&redis, headers.contains_key("x-stall")) {
                    flush_scripts_then_stall(redis);
                }
                let mut response = "done".into_response();
                if let Some(usage) = headers.get("x-report-usage") {
                    response.headers_mut().insert("x-usage", usage.clone());
                }
                response
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    address
}

/// 100 tokens a day, one count for everyone; `/probe/N` asks for N without reaching anything.
fn config(storage: &str, up: SocketAddr) -> String {
    format!(
        r#"
{storage}

[[policy]]
name = "tokens"
algorithm = "token_bucket"
limit = 100
period = "1d"

[[route]]
match = "GET /up/*"
key = "global"
policies = ["tokens"]
upstream = "http://{up}"
settle_from = "header:x-usage"

[[route]]
match = "GET /probe/41"
key = "global"
policies = ["tokens"]
cost = 41
respond = {{ status = 200 }}

[[route]]
match = "GET /probe/40"
key = "global"
policies = ["tokens"]
cost = 40
respond = {{ status = 200 }}
"#
    )
}

async fn metered(client: &Client, service: &Service, usage: &str) -> reqwest::Response {
    client
        .get(service.url("/up/metered"))
        .header("x-report-usage", usage)
        .send()
        .await
        .unwrap()
}

async fn status(client: &Client, service: &Service, path: &str) -> StatusCode {
    client.get(service.url(path)).send().await.unwrap().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_charges_what_the_upstream_reports_into_debt() {
    let up = upstream(None).await;
    let service = Service::start(&config("", up)).await;
    let client = Client::new();
    let settled = metered(&client, &service, "150").await;
    assert_eq!(settled.status(), StatusCode::OK);
    assert!(
        settled.headers().get("x-usage").is_none(),
        "the usage header is ours"
    );
    let ratelimit = settled.headers()["ratelimit"].to_str().unwrap().to_owned();
    assert!(ratelimit.contains(";r=0;"), "{ratelimit}");
    let denied = metered(&client, &service, "1").await;
    assert_eq!(denied.status(), StatusCode::TOO_MANY_REQUESTS);
    let problem: Value = denied.json().await.unwrap();
    assert_eq!(problem["violated-policies"], serde_json::json!(["tokens"]));
    assert_eq!(
        status(&client, &service, "/probe/40").await,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settle_whose_client_leaves_during_a_redis_stall_is_charged_once() {
    let redis = Arc::new(RedisServer::start().unwrap());
    let up = upstream(Some(Arc::clone(&redis))).await;
    let storage = format!("[storage]\nurl = \"{}\"\ntimeout = \"2s\"", redis.url());
    let service = Service::start(&config(&storage, up)).await;
    let client = Client::new();
    // Admitted on the route's cost (1); the upstream stalls Redis, then reports 60. The settle's
    // script is answered NOSCRIPT after the client has gone: only a settle that outlives its
    // caller sends it again.
    let gave_up = client
        .get(service.url("/up/metered"))
        .header("x-report-usage", "60")
        .header("x-stall", "1")
        .timeout(Duration::from_millis(100))
        .send()
        .await;
    assert!(gave_up.is_err(), "answered while Redis hung");
    tokio::time::sleep(Duration::from_millis(600)).await;
    // 1 + 59 charged: exactly 40 left.
    assert_eq!(
        status(&client, &service, "/probe/41").await,
        StatusCode::TOO_MANY_REQUESTS,
        "the abandoned settle was not charged"
    );
    assert_eq!(
        status(&client, &service, "/probe/40").await,
        StatusCode::OK,
        "the abandoned settle was charged more than once"
    );
}
