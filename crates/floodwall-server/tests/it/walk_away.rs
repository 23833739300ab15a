//! Callers who walk away through every front end (docs/testing.md: L1–L6): clients that
//! reset or give up mid-call against real Redis processes, stalled with SIGSTOP; the breaker
//! recovers, no in-flight slot stays held, a stopping service gives back what its unfinished
//! requests held, and every abandoned call is counted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use floodwall_testkit::{RedisCluster, RedisServer};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use crate::binary::{Floodwall, config_file};
use crate::in_process::Service;
use crate::rlqs::{API_ACME, EnvoyStream};
use crate::rls::{ask, client as rls_client, descriptor, request};

/// A shared cap of 20 in flight, held 10 minutes unless released, behind a route, the check
/// API, the lease API and RLS; and an hourly rate for probing, shared through RLQS too.
fn config(redis_url: &str) -> String {
    format!(
        r#"
[storage]
url = "{redis_url}"
timeout = "50ms"

[[policy]]
name = "cap"
algorithm = "concurrency"
limit = 20
period = "10m"

[[policy]]
name = "hourly"
algorithm = "gcra"
limit = 100000
period = "1h"

[[route]]
match = "GET /capped"
key = "global"
policies = ["cap"]
respond = {{ status = 200, json = {{ ok = true }} }}

[[route]]
match = "GET /limited"
key = "global"
policies = ["hourly"]
respond = {{ status = 200, json = {{ ok = true }} }}

[rls]
listen = "127.0.0.1:0"

[[rls.rule]]
domain = "edge"
descriptor = ["remote_address"]
policies = ["hourly"]

[rlqs]
listen = "127.0.0.1:0"

[[rlqs.bucket]]
domain = "edge"
bucket = ["name=api", "tenant"]
policies = ["hourly"]
"#
    )
}

/// The check API's answer on `hourly`: whether Redis decided it (a counted decision has a
/// `remaining`).
async fn decided_by_redis(client: &Client, service: &Service) -> bool {
    let answer = client
        .post(service.url("/v1/check"))
        .json(&json!({"policy": "hourly", "key": "probe-check"}))
        .send()
        .await
        .unwrap();
    let body: Value = answer.json().await.unwrap();
    body["remaining"].is_u64()
}

/// Sends a request with `send` and gives up after 5 ms, as Envoy or an impatient client does.
async fn abandon<F: Future>(send: F) {
    let gave_up = tokio::time::timeout(Duration::from_millis(5), send).await;
    assert!(gave_up.is_err(), "answered while Redis hung");
}

/// Reports on a new RLQS stream and ends the stream 5 ms later, before its answer, as an
/// Envoy that goes away does.
async fn abandon_report(mut stream: EnvoyStream) {
    abandon(stream.report("edge", API_ACME, 10)).await;
    drop(stream);
}

/// How many slots of `cap` on "global" a lease client can take now (then releases them), once
/// checks reach Redis (the breaker may still be open after a stall).
async fn free_slots(client: &Client, url: impl Fn(&str) -> String) -> usize {
    let started = Instant::now();
    loop {
        let answer = client
            .post(url("/v1/check"))
            .json(&json!({"policy": "hourly", "key": "probe-slots"}))
            .send()
            .await
            .unwrap();
        let body: Value = answer.json().await.unwrap();
        if body["remaining"].is_u64() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "Redis never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut ids = Vec::new();
    for _ in 0..21 {
        let answer = client
            .post(url("/v1/leases"))
            .json(&json!({"policy": "cap", "key": "global"}))
            .send()
            .await
            .unwrap();
        let status = answer.status();
        let body: Value = answer.json().await.unwrap();
        match status {
            StatusCode::OK => ids.push(body["lease"].as_str().unwrap().to_owned()),
            StatusCode::TOO_MANY_REQUESTS => break,
            other => panic!("{other}: {body}"),
        }
    }
    for id in &ids {
        let path = format!("/v1/leases/{id}");
        let released = client.delete(url(&path)).send().await.unwrap();
        assert_eq!(released.status(), StatusCode::NO_CONTENT);
    }
    ids.len()
}

/// One abandoned probe per front end while Redis hangs: after each, Redis resumes and checks
/// reach it again within about one probe interval (a wedged breaker never would).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_probe_through_any_front_end_does_not_wedge_the_breaker() {
    let redis = RedisServer::start().unwrap();
    let service = Service::start(&config(&redis.url())).await;
    let client = Client::new();
    let mut rls = rls_client(&service).await;
    assert!(decided_by_redis(&client, &service).await);
    for front in ["check", "route", "leases", "rls", "rlqs", "readyz"] {
        redis.pause().unwrap();
        // Three failures open the breaker; past the probe interval the next call probes.
        for _ in 0..3 {
            let _ = decided_by_redis(&client, &service).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        match front {
            "check" => {
                let body = json!({"policy": "hourly", "key": "gone"});
                abandon(client.post(service.url("/v1/check")).json(&body).send()).await;
            }
            "route" => abandon(client.get(service.url("/limited")).send()).await,
            "leases" => {
                let body = json!({"policy": "hourly", "key": "gone"});
                abandon(client.post(service.url("/v1/leases")).json(&body).send()).await;
            }
            "rls" => {
                let asked = request(vec![descriptor(&[("remote_address", "10.0.0.1")])]);
                abandon(ask(&mut rls, asked)).await;
            }
            "rlqs" => abandon_report(EnvoyStream::open(&service).await).await,
            _ => abandon(client.get(service.url("/readyz")).send()).await,
        }
        redis.resume().unwrap();
        let resumed = Instant::now();
        while !decided_by_redis(&client, &service).await {
            assert!(
                resumed.elapsed() < Duration::from_secs(3),
                "the breaker stayed open after an abandoned probe through {front}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let took = resumed.elapsed();
        // At worst the abandoned probe's own deadline (50 ms), then one probe interval (250 ms);
        // the rest is slack for a loaded machine.
        assert!(
            took < Duration::from_millis(750),
            "{front}: back after {took:?}"
        );
    }
}

/// Sends `GET /capped` on a fresh connection and resets it after `after` (SO_LINGER 0: an RST,
/// not a FIN), as a client that gives up does.
async fn reset_request(address: SocketAddr, after: Duration) {
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let _ = stream.set_zero_linger();
    let mut stream = stream;
    let head = "GET /capped HTTP/1.1\r\nhost: t\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(after).await;
    drop(stream);
}

async fn resets_leave_no_slot_held(redis_url: &str) {
    let service = Service::start(&config(redis_url)).await;
    let client = Client::new();
    assert_eq!(free_slots(&client, |p| service.url(p)).await, 20);
    let address = service.address;
    // 1 000 requests, 50 at a time, each reset 0–800 µs after it was sent.
    for wave in 0..20u64 {
        let resets: Vec<_> = (0..50u64)
            .map(|i| {
                let after = Duration::from_micros(((wave * 50 + i) * 7_919) % 800);
                tokio::spawn(reset_request(address, after))
            })
            .collect();
        for reset in resets {
            reset.await.unwrap();
        }
    }
    // Releases of what those requests took go on tasks of their own: give them a moment.
    let started = Instant::now();
    let mut free = free_slots(&client, |p| service.url(p)).await;
    while free < 20 && started.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        free = free_slots(&client, |p| service.url(p)).await;
    }
    assert_eq!(free, 20, "slots held by requests whose clients reset");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_reset_requests_leave_no_slot_held_on_one_node() {
    let redis = RedisServer::start().unwrap();
    resets_leave_no_slot_held(&redis.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_reset_requests_leave_no_slot_held_on_a_cluster() {
    let cluster = RedisCluster::start().unwrap();
    resets_leave_no_slot_held(&cluster.url()).await;
}

/// `POST /v1/leases` calls that time out while Redis hangs run when it resumes; what they took
/// is given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_calls_timed_out_in_a_stall_leave_no_slot_held() {
    let redis = RedisServer::start().unwrap();
    let service = Service::start(&config(&redis.url())).await;
    let client = Client::new();
    assert_eq!(free_slots(&client, |p| service.url(p)).await, 20);
    redis.pause().unwrap();
    for _ in 0..2 {
        let answer = client
            .post(service.url("/v1/leases"))
            .json(&json!({"policy": "cap", "key": "global"}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        let body: Value = answer.json().await.unwrap();
        // Failed open: admitted, nothing held, no id.
        assert_eq!(body["lease"], Value::Null, "{body}");
    }
    let body = json!({"policy": "cap", "key": "global"});
    abandon(client.post(service.url("/v1/leases")).json(&body).send()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    redis.resume().unwrap();
    let started = Instant::now();
    let mut free = free_slots(&client, |p| service.url(p)).await;
    while free < 20 && started.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        free = free_slots(&client, |p| service.url(p)).await;
    }
    assert_eq!(free, 20);
}

/// An upstream whose every request hangs; counts the requests it has.
async fn hanging_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let reached = Arc::new(AtomicUsize::new(0));
    let seen = reached.clone();
    let app = Router::new().route(
        "/slow",
        get(move || async move {
            seen.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<&'static str>().await
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (address, reached)
}

/// SIGTERM with five requests in flight longer than the drain: the service closes them at the
/// drain deadline, gives their slots back, and exits 0; another instance then has every slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_with_slow_requests_in_flight_leaves_no_slot_held() {
    let redis = RedisServer::start().unwrap();
    let (up, reached) = hanging_upstream().await;
    let text = format!(
        "[storage]\nurl = \"{}\"\n\
         [[policy]]\nname = \"cap\"\nalgorithm = \"concurrency\"\nlimit = 5\nperiod = \"10m\"\n\
         [[route]]\nmatch = \"GET /slow\"\nkey = \"global\"\npolicies = [\"cap\"]\n\
         upstream = \"http://{up}\"\nupstream_timeout = \"1m\"\n",
        redis.url()
    );
    let file = config_file(&text);
    let mut stopping = Floodwall::serve(Some(file.path()));
    let client = Client::new();
    let url = stopping.url("/slow");
    let slow: Vec<_> = (0..5)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move { client.get(url).send().await })
        })
        .collect();
    let started = Instant::now();
    while reached.load(Ordering::SeqCst) < 5 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "requests never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stopping.signal("-TERM");
    let exit = tokio::task::spawn_blocking(move || stopping.wait())
        .await
        .unwrap();
    assert_eq!(exit, Some(0));
    for request in slow {
        assert!(
            request.await.unwrap().is_err(),
            "a slow request was answered"
        );
    }
    let other = Floodwall::serve(Some(file.path()));
    let lease_url = |path: &str| other.url(path);
    assert_eq!(
        free_lease_slots(&client, lease_url, "cap").await,
        5,
        "slots left held by the stopped instance"
    );
}

/// [`free_slots`] for a policy of any name.
async fn free_lease_slots(client: &Client, url: impl Fn(&str) -> String, policy: &str) -> usize {
    let mut taken = 0;
    for _ in 0..100 {
        let answer = client
            .post(url("/v1/leases"))
            .json(&json!({"policy": policy, "key": "global"}))
            .send()
            .await
            .unwrap();
        if answer.status() != StatusCode::OK {
            break;
        }
        taken += 1;
    }
    taken
}

/// Calls abandoned while Redis hangs are counted by front end, exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_calls_are_counted_by_front_end() {
    let redis = RedisServer::start().unwrap();
    let text = format!(
        "{}\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        config(&redis.url())
    );
    let file = config_file(&text);
    let service = Floodwall::serve_with(Some(file.path()), &[], true);
    let client = Client::new();
    let body = json!({"policy": "hourly", "key": "k"});
    let warm = client
        .post(service.url("/v1/check"))
        .json(&body)
        .send()
        .await;
    assert_eq!(warm.unwrap().status(), StatusCode::OK);
    let rlqs = service.rlqs.expect("an RLQS listener");
    // Opened before the stall: the calls below must all start within the store's 50 ms.
    let mut streams = Vec::new();
    for _ in 0..2 {
        streams.push(EnvoyStream::open_at(rlqs).await);
    }
    redis.pause().unwrap();
    for stream in streams {
        abandon(client.post(service.url("/v1/check")).json(&body).send()).await;
        abandon(client.get(service.url("/limited")).send()).await;
        abandon_report(stream).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    redis.resume().unwrap();
    let metrics = service.metrics().await;
    let counts = [
        ("check", 2),
        ("http", 2),
        ("leases", 0),
        ("rls", 0),
        ("rlqs", 2),
    ];
    for (front, expected) in counts {
        let line = format!("floodwall_abandoned_total{{front=\"{front}\"}} {expected}");
        assert!(metrics.contains(&line), "no {line} in:\n{metrics}");
    }
}

async fn readyz(client: &Client, service: &Service) -> Value {
    let answer = client.get(service.url("/readyz")).send().await.unwrap();
    answer.json().await.unwrap()
}

/// `/readyz` tells the truth about the store: Redis back while the breaker is still open (before
/// its next probe) is reported up, and a hung Redis down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_a_store_that_is_back_before_the_breaker_probes_it() {
    let redis = RedisServer::start().unwrap();
    let service = Service::start(&config(&redis.url())).await;
    let client = Client::new();
    assert!(decided_by_redis(&client, &service).await);
    redis.pause().unwrap();
    for _ in 0..3 {
        let _ = decided_by_redis(&client, &service).await;
    }
    let down = readyz(&client, &service).await;
    assert_eq!(down["store"]["state"], "down", "{down}");
    redis.resume().unwrap();
    let up = readyz(&client, &service).await;
    assert_eq!(up["store"]["state"], "up", "{up}");
}
