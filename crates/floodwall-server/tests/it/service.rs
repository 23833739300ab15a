//! The service over real sockets: the embedded demo, the check API, and two processes sharing
//! one redis-server exactly (J1).

use std::time::Duration;

use floodwall::Algorithm;
use floodwall_testkit::RedisServer;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use floodwall_server::config::Config;

use crate::binary::Floodwall;
use crate::in_process::Service;

async fn post(
    client: &Client,
    url: &str,
    body: &str,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let response = client.post(url).body(body.to_owned()).send().await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let body = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    (status, headers, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_default_says_hello_ten_times_then_429() {
    let service = Service::start_config(Config::embedded_default()).await;
    let client = Client::new();
    for _ in 0..10 {
        let response = client.get(service.url("/")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["ratelimit-policy"],
            "\"per-ip\";q=10;w=60"
        );
        let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        assert_eq!(body, json!({ "message": "Hello, World!" }));
    }
    let denied = client.get(service.url("/")).send().await.unwrap();
    assert_eq!(denied.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(denied.headers()["content-type"], "application/problem+json");
    assert!(denied.headers().contains_key("retry-after"));
    assert!(
        denied.headers()["ratelimit"]
            .to_str()
            .unwrap()
            .contains("r=0")
    );
    let problem: Value = serde_json::from_slice(&denied.bytes().await.unwrap()).unwrap();
    assert_eq!(problem["violated-policies"], json!(["per-ip"]));

    let missing = client.get(service.url("/nothing")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            client.get(service.url(path)).send().await.unwrap().status(),
            StatusCode::OK
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_api_answers_single_and_multi_policy_checks_and_rejects_bad_input() {
    let service = Service::start(
        "[[policy]]\nname = \"burst\"\nalgorithm = \"gcra\"\nlimit = 2\nperiod = \"1h\"\n\
         [[policy]]\nname = \"daily\"\nalgorithm = \"fixed_window\"\nlimit = 3\nperiod = \"1d\"\n",
    )
    .await;
    let client = Client::new();
    let url = service.url("/v1/check");

    let (status, headers, body) = post(&client, &url, r#"{"policy": "burst", "key": "u1"}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["allowed"], true);
    assert_eq!(body["policy"], "burst");
    assert_eq!(body["limit"], 2);
    assert_eq!(body["remaining"], 1);
    assert!(body["reset_after_ms"].as_u64().unwrap() > 0);
    assert_eq!(body["retry_after_ms"], Value::Null);
    assert!(headers.contains_key("ratelimit"));
    // Exactly the documented fields, no more: other programs parse them.
    let mut fields: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "allowed",
            "debt",
            "limit",
            "policy",
            "remaining",
            "reset_after_ms",
            "retry_after_ms"
        ]
    );

    let (status, _, body) = post(
        &client,
        &url,
        r#"{"policy": "burst", "key": "u1", "cost": 2}"#,
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["allowed"], false);
    assert!(body["retry_after_ms"].as_u64().unwrap() > 0);

    // All-or-nothing: "burst" denies u1, so "daily" consumes nothing.
    let multi = r#"{"policies": ["daily", "burst"], "key": "u1"}"#;
    let (status, headers, body) = post(&client, &url, multi).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["decisions"][0]["remaining"], 2);
    assert_eq!(body["decisions"][1]["remaining"], 0);
    assert!(headers["ratelimit"].to_str().unwrap().contains("\"daily\""));
    let (status, _, body) = post(&client, &url, multi).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        body["decisions"][0]["remaining"], 2,
        "a denial consumed: {body}"
    );

    let bad: [(&str, StatusCode, &str); 7] = [
        ("not json", StatusCode::BAD_REQUEST, "must be JSON"),
        (
            r#"{"policy": "burst", "key": "k", "extra": 1}"#,
            StatusCode::BAD_REQUEST,
            "unknown field",
        ),
        (r#"{"key": "k"}"#, StatusCode::BAD_REQUEST, "either"),
        (
            r#"{"policy": "hourly", "key": "k"}"#,
            StatusCode::NOT_FOUND,
            "defined: burst, daily",
        ),
        (
            r#"{"policy": "burst", "key": "k", "cost": 3}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "can never be admitted",
        ),
        (
            r#"{"policy": "burst", "key": "k", "cost": -1}"#,
            StatusCode::BAD_REQUEST,
            "must be JSON",
        ),
        (
            r#"{"policies": ["daily", "daily"], "key": "k"}"#,
            StatusCode::BAD_REQUEST,
            "named twice",
        ),
    ];
    for (body, expected, detail) in bad {
        let (status, headers, problem) = post(&client, &url, body).await;
        assert_eq!(status, expected, "{body}: {problem}");
        assert_eq!(headers["content-type"], "application/problem+json");
        assert!(
            problem["detail"].as_str().unwrap().contains(detail),
            "{body}: {problem}"
        );
    }
    let huge = format!(r#"{{"policy": "burst", "key": "{}"}}"#, "k".repeat(100_000));
    let (status, _, _) = post(&client, &url, &huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_redis_admit_exactly_the_limit_for_every_algorithm() {
    let redis = RedisServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shared.toml");
    let mut config = format!(
        "[storage]\nurl = \"{}\"\ntimeout = \"2s\"\non_error = \"deny\"\n",
        redis.url()
    );
    for algorithm in Algorithm::ALL {
        config.push_str(&format!(
            "[[policy]]\nname = \"{algorithm}\"\nalgorithm = \"{algorithm}\"\nlimit = 100\nperiod = \"1h\"\n"
        ));
    }
    std::fs::write(&file, config).unwrap();
    let services = [Floodwall::serve(Some(&file)), Floodwall::serve(Some(&file))];
    let urls = [services[0].url("/v1/check"), services[1].url("/v1/check")];
    let client = Client::new();
    for algorithm in Algorithm::ALL {
        let body = format!(r#"{{"policy": "{algorithm}", "key": "shared"}}"#);
        let tasks: Vec<_> = (0..400)
            .map(|i| {
                let (client, url, body) = (client.clone(), urls[i % 2].clone(), body.clone());
                tokio::spawn(
                    async move { client.post(url).body(body).send().await.unwrap().status() },
                )
            })
            .collect();
        let mut admitted = 0;
        for task in tasks {
            let status = task.await.unwrap();
            assert!(
                status == StatusCode::OK || status == StatusCode::TOO_MANY_REQUESTS,
                "{status}"
            );
            admitted += usize::from(status == StatusCode::OK);
        }
        assert_eq!(admitted, 100, "{algorithm}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_a_cluster_admit_exactly_the_limit() {
    let cluster = floodwall_testkit::RedisCluster::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cluster.toml");
    std::fs::write(
        &file,
        format!(
            "[storage]\nurl = \"{}\"\ntimeout = \"2s\"\non_error = \"deny\"\n\
             [[policy]]\nname = \"log\"\nalgorithm = \"sliding_log\"\nlimit = 100\nperiod = \"1h\"\n",
            cluster.url()
        ),
    )
    .unwrap();
    let services = [Floodwall::serve(Some(&file)), Floodwall::serve(Some(&file))];
    let client = Client::new();
    let tasks: Vec<_> = (0..400)
        .map(|i| {
            let (client, url) = (client.clone(), services[i % 2].url("/v1/check"));
            tokio::spawn(async move {
                let body = r#"{"policy": "log", "key": "tenant-7"}"#;
                client.post(url).body(body).send().await.unwrap().status()
            })
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        admitted += usize::from(task.await.unwrap() == StatusCode::OK);
    }
    assert_eq!(admitted, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_redis_is_answered_per_on_error_and_enforcing_resumes_after_restart() {
    let mut redis = RedisServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("outage.toml");
    std::fs::write(
        &file,
        format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n\
             [storage]\nurl = \"{}\"\ntimeout = \"50ms\"\non_error = \"allow\"\n\
             [[policy]]\nname = \"open\"\nalgorithm = \"gcra\"\nlimit = 1000\nperiod = \"1h\"\n\
             [[policy]]\nname = \"closed\"\nalgorithm = \"gcra\"\nlimit = 1000\nperiod = \"1h\"\non_error = \"deny\"\n",
            redis.url()
        ),
    )
    .unwrap();
    let service = Floodwall::serve_with(Some(&file), &[], true);
    let client = Client::new();
    let url = service.url("/v1/check");
    let check = |policy: &'static str| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let body = format!(r#"{{"policy": "{policy}", "key": "k"}}"#);
            let started = tokio::time::Instant::now();
            let status = client.post(url).body(body).send().await.unwrap().status();
            (status, started.elapsed())
        }
    };
    assert_eq!(check("closed").await.0, StatusCode::OK);

    redis.kill();
    for _ in 0..20 {
        let (open, open_took) = check("open").await;
        let (closed, closed_took) = check("closed").await;
        assert_eq!(open, StatusCode::OK);
        assert_eq!(closed, StatusCode::SERVICE_UNAVAILABLE);
        // The 50 ms deadline plus loopback HTTP and a debug build's slack.
        assert!(
            open_took.max(closed_took) < Duration::from_millis(250),
            "{open_took:?} {closed_took:?}"
        );
    }

    let metrics = client
        .get(service.admin_url("/metrics"))
        .send()
        .await
        .unwrap();
    let text = metrics.text().await.unwrap();
    assert!(text.contains("floodwall_breaker_open 1"), "{text}");
    // Each of the 40 checks during the outage met one store failure, counted by kind.
    let store_errors: f64 = text
        .lines()
        .filter(|line| line.starts_with("floodwall_store_errors_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(store_errors, 40.0, "{text}");
    assert!(
        text.contains(r#"floodwall_store_errors_total{kind="circuit_open"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"floodwall_decisions_total{policy="closed",outcome="error"} 20"#),
        "{text}"
    );
    // An answer admitted without counting says so: no remaining or reset is made up.
    let open = client
        .post(&url)
        .body(r#"{"policy": "open", "key": "k"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), StatusCode::OK);
    assert!(open.headers().get("ratelimit").is_none());
    assert!(open.headers().get("ratelimit-policy").is_some());
    let body: serde_json::Value = open.json().await.unwrap();
    assert_eq!(body["allowed"], true);
    assert!(body["remaining"].is_null(), "{body}");
    assert!(body["reset_after_ms"].is_null(), "{body}");

    // The outage is logged once, as it begins, and again when it ends.
    let down = service.log_line("store unavailable").await;
    assert!(down.contains("WARN"), "{down}");
    redis.restart().unwrap();
    let back = tokio::time::Instant::now();
    while check("closed").await.0 != StatusCode::OK {
        assert!(
            back.elapsed() < Duration::from_secs(1),
            "still failing 1 s after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let metrics = client
        .get(service.admin_url("/metrics"))
        .send()
        .await
        .unwrap();
    assert!(
        metrics
            .text()
            .await
            .unwrap()
            .contains("floodwall_breaker_open 0")
    );
    let up = service.log_line("store available again").await;
    assert!(up.contains("failed_open="), "{up}");
}
