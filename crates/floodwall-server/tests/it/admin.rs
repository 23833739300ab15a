//! The admin listener: metrics and the limits API, never reachable through the main listener.

use reqwest::{Client, StatusCode};

use crate::binary::Floodwall;

const CONFIG: &str = r#"
[admin]
listen = "127.0.0.1:0"
token_env = "TEST_ADMIN_TOKEN"

[[policy]]
name = "per-ip"
algorithm = "fixed_window"
limit = 2
period = "1h"

[[route]]
match = "GET /"
policies = ["per-ip"]
respond = { status = 200, json = { message = "Hello, World!" } }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_limits_live_on_the_admin_listener_only() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("admin.toml");
    std::fs::write(&file, CONFIG).unwrap();
    let service = Floodwall::serve_with(Some(&file), &[("TEST_ADMIN_TOKEN", "s3cret")], true);
    let client = Client::new();
    let statuses: Vec<StatusCode> = {
        let mut statuses = Vec::new();
        for _ in 0..3 {
            statuses.push(client.get(service.url("/")).send().await.unwrap().status());
        }
        statuses
    };
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );

    // I3: the main listener has neither.
    for path in ["/metrics", "/v1/limits/per-ip/127.0.0.1"] {
        let response = client.get(service.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }

    let metrics = client
        .get(service.admin_url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains(r#"floodwall_decisions_total{policy="per-ip",outcome="allowed"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"floodwall_decisions_total{policy="per-ip",outcome="denied"} 1"#),
        "{text}"
    );
    assert!(text.contains("floodwall_memory_keys"), "{text}");
    assert!(
        !text.contains("127.0.0.1"),
        "a client key leaked into the metrics:\n{text}"
    );

    // The limits API needs the token.
    let state_url = service.admin_url("/v1/limits/per-ip/127.0.0.1");
    let anonymous = client.get(&state_url).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let wrong = client
        .get(&state_url)
        .bearer_auth("guess")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let state = client
        .get(&state_url)
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(state.status(), StatusCode::OK);
    let body: serde_json::Value = serde_json::from_slice(&state.bytes().await.unwrap()).unwrap();
    assert_eq!(
        (body["allowed"].clone(), body["remaining"].clone()),
        (false.into(), 0.into())
    );
    let unknown = client
        .get(service.admin_url("/v1/limits/nope/127.0.0.1"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

    // A reset lets the client in again.
    let reset = client
        .delete(&state_url)
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        client.get(service.url("/")).send().await.unwrap().status(),
        StatusCode::OK
    );
}

/// Every metric has its `# HELP`; the decision latency covers routes as well as the check API,
/// from 2 µs up; answers are counted per route template and status class, never per raw path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_describe_themselves_and_cover_every_route() {
    let config = format!(
        "{CONFIG}\n[[route]]\nmatch = \"* /api/*\"\nrespond = {{ status = 200, json = {{ ok = true }} }}\n"
    );
    let file = crate::binary::config_file(&config);
    let service = Floodwall::serve_with(Some(file.path()), &[("TEST_ADMIN_TOKEN", "s3cret")], true);
    let client = Client::new();
    let mut statuses = Vec::new();
    for path in [
        "/",
        "/",
        "/",
        "/api/orders/17",
        "/nope/secret-token-in-path",
    ] {
        statuses.push(
            client
                .get(service.url(path))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 200, 429, 200, 404]);
    let (refused, _) = crate::paths::raw(
        service.address,
        "GET /a/%2e%2e/%2e%2e/etc HTTP/1.1\r\nHost: x",
    )
    .await;
    assert_eq!(refused, 400);
    let checked = client
        .post(service.url("/v1/check"))
        .json(&serde_json::json!({"policy": "per-ip", "key": "k"}))
        .send()
        .await
        .unwrap();
    assert_eq!(checked.status(), StatusCode::OK);

    let text = service.metrics().await;
    for metric in [
        "floodwall_decisions_total",
        "floodwall_check_duration_seconds",
        "floodwall_requests_total",
        "floodwall_memory_keys",
        "floodwall_memory_evicted_total",
    ] {
        assert!(
            text.contains(&format!("# HELP {metric} ")),
            "no HELP for {metric}:\n{text}"
        );
    }
    for series in [
        r#"floodwall_requests_total{route="GET /",status="2xx"} 2"#,
        r#"floodwall_requests_total{route="GET /",status="4xx"} 1"#,
        r#"floodwall_requests_total{route="* /api/*",status="2xx"} 1"#,
        r#"floodwall_requests_total{route="unmatched",status="4xx"} 2"#,
        r#"floodwall_requests_total{route="POST /v1/check",status="2xx"} 1"#,
        r#"floodwall_check_duration_seconds_bucket{route="GET /",le="0.000002"}"#,
        r#"floodwall_check_duration_seconds_count{route="GET /"} 3"#,
        r#"floodwall_check_duration_seconds_count{route="POST /v1/check"} 1"#,
    ] {
        assert!(text.contains(series), "no {series} in:\n{text}");
    }
    assert!(
        !text.contains("secret-token-in-path"),
        "a raw path leaked into the metrics:\n{text}"
    );
}

/// The top offenders: keys ranked by denials over the last minutes, from routes and the check
/// API alike, behind the admin token, only for configured policies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keys_denied_most_are_listed_per_policy() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("admin.toml");
    std::fs::write(&file, CONFIG).unwrap();
    let service = Floodwall::serve_with(Some(&file), &[("TEST_ADMIN_TOKEN", "s3cret")], true);
    let client = Client::new();
    let check = |key: &'static str| {
        client
            .post(service.url("/v1/check"))
            .body(format!(r#"{{"policy": "per-ip", "key": "{key}"}}"#))
            .send()
    };
    // The route's client (127.0.0.1) is denied 3 times, "203.0.113.9" 5 times, "quiet" never.
    for _ in 0..5 {
        client.get(service.url("/")).send().await.unwrap();
    }
    for _ in 0..7 {
        check("203.0.113.9").await.unwrap();
    }
    check("quiet").await.unwrap();

    let url = service.admin_url("/v1/offenders/per-ip");
    let refused = client.get(&url).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let listed: serde_json::Value = client
        .get(&url)
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["policy"], "per-ip");
    assert_eq!(listed["window_s"], 300);
    assert_eq!(
        listed["offenders"],
        serde_json::json!([
            {"key": "203.0.113.9", "shown": "203.0.113.9", "denied": 5, "error": 0},
            {"key": "127.0.0.1", "shown": "127.0.0.1", "denied": 3, "error": 0},
        ])
    );
    let unknown = client
        .get(service.admin_url("/v1/offenders/nope"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

/// Without a token, the admin listener is open to whoever reaches its address, so it must not
/// be reachable through a browser by another site: a foreign `Host` (DNS rebinding) and another
/// origin's requests are refused, its own pages and programs answered, and the start says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tokenless_admin_refuses_other_sites_and_foreign_hosts() {
    let tokenless = CONFIG.replace("token_env = \"TEST_ADMIN_TOKEN\"\n", "");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("admin.toml");
    std::fs::write(&file, tokenless).unwrap();
    let service = Floodwall::serve_with(Some(&file), &[], true);
    let line = service.log_line("has no token_env").await;
    assert!(line.contains("WARN"), "{line}");
    let client = Client::new();
    let admin = service.admin_url("");
    let own_host = admin.trim_start_matches("http://").to_owned();
    let penalty = service.admin_url("/v1/limits/per-ip/127.0.0.1/penalty");
    let remaining = || async {
        let peeked: serde_json::Value = client
            .get(service.admin_url("/v1/limits/per-ip/127.0.0.1"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        peeked["remaining"].clone()
    };
    assert_eq!(remaining().await, 2);

    // What a page on another origin (another port of the same loopback address included) sends.
    for (origin, site) in [
        ("http://127.0.0.1:1", "same-site"),
        ("http://evil.example", "cross-site"),
    ] {
        let refused = client
            .post(&penalty)
            .header("content-type", "text/plain")
            .header("origin", origin)
            .header("sec-fetch-site", site)
            .body(r#"{"units": 2}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN, "{origin}");
        assert_eq!(
            refused.headers()["content-type"],
            "application/problem+json"
        );
    }
    let only_fetch_metadata = client
        .post(&penalty)
        .header("sec-fetch-site", "cross-site")
        .body(r#"{"units": 2}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(only_fetch_metadata.status(), StatusCode::FORBIDDEN);
    assert_eq!(remaining().await, 2, "nothing was drained");

    // DNS rebinding: the browser sends the attacker's name as Host.
    for path in ["/v1/dashboard", "/", "/metrics", "/v1/blocks"] {
        let rebound = client
            .get(service.admin_url(path))
            .header("host", "evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(rebound.status(), StatusCode::MISDIRECTED_REQUEST, "{path}");
    }

    // Its own page, a program, and localhost are answered.
    let own = client
        .post(&penalty)
        .header("origin", format!("http://{own_host}"))
        .header("sec-fetch-site", "same-origin")
        .json(&serde_json::json!({ "units": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), StatusCode::OK);
    let port = own_host.rsplit_once(':').unwrap().1;
    let local = client
        .get(service.admin_url("/v1/dashboard"))
        .header("host", format!("localhost:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(local.status(), StatusCode::OK);
    assert_eq!(remaining().await, 1);
}
