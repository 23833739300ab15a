//! In-flight limits through the service: `POST /v1/leases` and `DELETE /v1/leases/{id}`, and a
//! proxied route whose requests hold their slot while the upstream works; a SIGKILLed instance's
//! slot comes back after the lease timeout, seen from another instance sharing one Redis.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use floodwall_testkit::RedisServer;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::binary::{Floodwall, config_file};
use crate::in_process::Service;

const POLICIES: &str = r#"
[[policy]]
name = "exports"
algorithm = "concurrency"
limit = 1
period = "1m"

[[policy]]
name = "per-day"
algorithm = "fixed_window"
limit = 100
period = "1d"
"#;

async fn lease(client: &Client, service: &Service, body: Value) -> (StatusCode, Value) {
    let answer = client
        .post(service.url("/v1/leases"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = answer.status();
    if status == StatusCode::OK {
        let quota = answer.headers()["ratelimit-policy"].to_str().unwrap();
        assert!(
            quota.contains(r#""exports";q=1;qu="concurrent-requests""#),
            "{quota}"
        );
    }
    (status, answer.json().await.unwrap())
}

async fn release(client: &Client, service: &Service, id: &str) -> StatusCode {
    let path = format!("/v1/leases/{id}");
    client
        .delete(service.url(&path))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn a_lease_holds_its_slot_until_released_and_a_second_release_frees_nothing() {
    let service = Service::start(POLICIES).await;
    let client = Client::new();
    let one = json!({"policy": "exports", "key": "user-1"});
    let (status, first) = lease(&client, &service, one.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["allowed"], true);
    assert_eq!(first["remaining"], 0);
    assert_eq!(first["timeout_ms"], 60_000);
    let first_id = first["lease"].as_str().unwrap().to_owned();

    let (status, refused) = lease(&client, &service, one.clone()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused["lease"], Value::Null);
    assert!(refused["retry_after_ms"].as_u64().unwrap() <= 60_000);
    // Another key has a slot of its own.
    let (status, _) = lease(
        &client,
        &service,
        json!({"policy": "exports", "key": "user-2"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    assert_eq!(
        release(&client, &service, &first_id).await,
        StatusCode::NO_CONTENT
    );
    let (status, second) = lease(&client, &service, one.clone()).await;
    assert_eq!(status, StatusCode::OK);
    // Releasing the first lease again gives back nothing of the second's.
    assert_eq!(
        release(&client, &service, &first_id).await,
        StatusCode::NO_CONTENT
    );
    let (status, _) = lease(&client, &service, one.clone()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        release(&client, &service, second["lease"].as_str().unwrap()).await,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn a_lease_under_a_rate_too_spends_the_rate_and_holds_the_slot() {
    let service = Service::start(POLICIES).await;
    let client = Client::new();
    let both = json!({"policies": ["per-day", "exports"], "key": "user-1"});
    let (status, held) = lease(&client, &service, both.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(held["decisions"][0]["remaining"], 99);
    assert_eq!(held["decisions"][1]["remaining"], 0);
    let id = held["lease"].as_str().unwrap();
    assert_eq!(release(&client, &service, id).await, StatusCode::NO_CONTENT);
    let (status, again) = lease(&client, &service, both).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        again["decisions"][0]["remaining"], 98,
        "the rate stays spent"
    );
}

#[tokio::test]
async fn bad_lease_requests_are_problems() {
    let service = Service::start(POLICIES).await;
    let client = Client::new();
    for (path, status) in [
        ("/v1/leases/not-a-lease", StatusCode::BAD_REQUEST),
        ("/v1/leases/%FF%FE", StatusCode::BAD_REQUEST),
        (
            "/v1/leases/000000000000000000000000deadbeef~1~6b~nope",
            StatusCode::NOT_FOUND,
        ),
    ] {
        let answer = client.delete(service.url(path)).send().await.unwrap();
        assert_eq!(answer.status(), status, "{path}");
        assert_eq!(answer.headers()["content-type"], "application/problem+json");
    }
    // A lease's holder is 128 random bits: consecutive ids share no counter.
    let holders: Vec<u128> = {
        let mut holders = Vec::new();
        for key in ["a", "b", "c"] {
            let (_, held) =
                lease(&client, &service, json!({"policy": "exports", "key": key})).await;
            let id = held["lease"].as_str().unwrap().to_owned();
            let holder = id.split('~').next().unwrap();
            assert_eq!(holder.len(), 32, "{id}");
            holders.push(u128::from_str_radix(holder, 16).unwrap());
        }
        holders
    };
    for pair in holders.windows(2) {
        let differing = (pair[0] ^ pair[1]).count_ones();
        assert!(differing > 20, "{:032x} then {:032x}", pair[0], pair[1]);
    }
    let answer = client.get(service.url("/v1/leases")).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::METHOD_NOT_ALLOWED);
    let long_key = "k".repeat(257);
    let (status, problem) = lease(
        &client,
        &service,
        json!({"policy": "exports", "key": long_key}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(problem["detail"].as_str().unwrap().contains("256 bytes"));
}

/// An upstream whose `/up/hang` never answers and `/up/quick` answers at once; the flag is set
/// once a request has reached `/up/hang`, that is, once the proxy admitted it.
async fn upstream() -> (SocketAddr, Arc<AtomicBool>) {
    let reached = Arc::new(AtomicBool::new(false));
    let seen = reached.clone();
    let app = Router::new()
        .route(
            "/up/hang",
            get(move || async move {
                seen.store(true, Ordering::SeqCst);
                std::future::pending::<&'static str>().await
            }),
        )
        .route("/up/quick", get(|| async { "quick" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (address, reached)
}

async fn status(client: &Client, url: &str) -> StatusCode {
    client.get(url).send().await.unwrap().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_gives_its_slot_back_after_the_lease_timeout() {
    let redis = RedisServer::start().unwrap();
    let (up, reached) = upstream().await;
    let config = config_file(&format!(
        "[storage]\nurl = \"{}\"\ntimeout = \"2s\"\non_error = \"deny\"\n\
         [[policy]]\nname = \"one-at-a-time\"\nalgorithm = \"concurrency\"\nlimit = 1\nperiod = \"5s\"\n\
         [[route]]\nmatch = \"GET /up/*\"\nkey = \"global\"\npolicies = [\"one-at-a-time\"]\n\
         upstream = \"http://{up}\"\nupstream_timeout = \"1m\"\n",
        redis.url()
    ));
    let holder = Floodwall::serve(Some(config.path()));
    let other = Floodwall::serve(Some(config.path()));
    let client = Client::new();
    // Both connected, and both scripts loaded. The first warm-up's release lands on a task of
    // its own, so the second may find the slot still held for a moment.
    for instance in [&holder, &other] {
        let url = instance.url("/up/quick");
        let mut answered = status(&client, &url).await;
        for _ in 0..500 {
            if answered != StatusCode::TOO_MANY_REQUESTS {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            answered = status(&client, &url).await;
        }
        assert_eq!(answered, StatusCode::OK);
    }

    // A request in flight on the first instance holds the one slot once the upstream has it.
    // The warm-up requests release on a task of their own, so a hanging request that arrives
    // before that release lands is refused and sent again.
    let hang = || {
        let (client, url) = (client.clone(), holder.url("/up/hang"));
        tokio::spawn(async move { client.get(url).send().await })
    };
    let mut hanging = hang();
    for _ in 0..500 {
        if reached.load(Ordering::SeqCst) {
            break;
        }
        if hanging.is_finished() {
            hanging = hang();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        reached.load(Ordering::SeqCst),
        "the hanging request never took the slot: {:?}",
        holder.log_lines("")
    );

    // Killed, it never releases: the slot stays taken until the lease times out.
    holder.signal("-KILL");
    let killed = tokio::time::Instant::now();
    assert!(hanging.await.unwrap().is_err());
    let refused = client.get(other.url("/up/quick")).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=5).contains(&retry), "Retry-After {retry}");
    let mut back = None;
    while killed.elapsed() < Duration::from_secs(10) {
        if status(&client, &other.url("/up/quick")).await == StatusCode::OK {
            back = Some(killed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let back = back.expect("the slot never came back");
    assert!(back <= Duration::from_secs(8), "back after {back:?}");
}
