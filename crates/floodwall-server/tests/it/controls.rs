//! The operator's actions on the admin listener, over real sockets: blocks, penalties and
//! rewards, allow and deny lists (configured and at run time), each logged with the token's
//! name and counted; agreed by two instances on one Redis; and `floodwall admin`.

use std::time::Duration;

use floodwall_testkit::RedisServer;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::binary::{Floodwall, config_file, floodwall};

fn config(storage: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
token_env = "TEST_ADMIN_TOKEN"
tokens = {{ ops = "TEST_OPS_TOKEN" }}

[access]
deny = ["banned-key"]

{storage}

[[policy]]
name = "per-key"
algorithm = "sliding_window"
limit = 3
period = "1m"

[[route]]
match = "GET /"
key = "ip"
policies = ["per-key"]
respond = {{ status = 200, json = {{ message = "hello" }} }}

[[route]]
match = "GET /open"
respond = {{ status = 200, json = {{ message = "unlimited" }} }}
"#
    )
}

pub(crate) const ENV: &[(&str, &str)] = &[
    ("TEST_ADMIN_TOKEN", "main-secret"),
    ("TEST_OPS_TOKEN", "ops-secret"),
];

async fn check(
    client: &Client,
    service: &Floodwall,
    key: &str,
) -> (StatusCode, Value, Option<u64>) {
    let response = client
        .post(service.url("/v1/check"))
        .json(&json!({ "policy": "per-key", "key": key }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (status, response.json().await.unwrap(), retry)
}

pub(crate) async fn admin(
    client: &Client,
    service: &Floodwall,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, String) {
    let mut request = client
        .request(method, service.admin_url(path))
        .bearer_auth("ops-secret");
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_penalties_rewards_and_lists_through_the_admin_api() {
    let file = config_file(&config(""));
    let service = Floodwall::serve_with(Some(file.path()), ENV, true);
    let client = Client::new();
    use reqwest::Method;

    // Block: denied at once with the block's wait, listed with who did it, and back after.
    let (status, body) = admin(
        &client,
        &service,
        Method::PUT,
        "/v1/blocks/per-key/user%2F7",
        Some(json!({ "duration": "1h" })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body, retry) = check(&client, &service, "user/7").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!((3590..=3600).contains(&retry.unwrap()), "{retry:?}");
    assert_eq!(check(&client, &service, "user/8").await.0, StatusCode::OK);
    let (_, blocks) = admin(&client, &service, Method::GET, "/v1/blocks", None).await;
    let blocks: Value = serde_json::from_str(&blocks).unwrap();
    assert_eq!(blocks["blocks"][0]["key"], "user%2F7");
    assert_eq!(blocks["blocks"][0]["shown"], "user/7");
    assert_eq!(blocks["blocks"][0]["by"], "ops");
    let (status, _) = admin(
        &client,
        &service,
        Method::DELETE,
        "/v1/blocks/per-key/user%2F7",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(check(&client, &service, "user/7").await.0, StatusCode::OK);

    // Penalty and reward move the key's quota of 3 (one already spent above).
    let (status, body) = admin(
        &client,
        &service,
        Method::POST,
        "/v1/limits/per-key/user%2F7/penalty",
        Some(json!({ "units": 5 })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["remaining"],
        0
    );
    assert_eq!(
        check(&client, &service, "user/7").await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    let (_, body) = admin(
        &client,
        &service,
        Method::POST,
        "/v1/limits/per-key/user%2F7/reward",
        Some(json!({ "units": 2 })),
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["remaining"],
        2,
        "{body}"
    );

    // The configured deny list: 403, and it cannot be removed at run time.
    let (status, body, _) = check(&client, &service, "banned-key").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = admin(
        &client,
        &service,
        Method::DELETE,
        "/v1/lists/deny/banned-key",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body.contains("configuration file"), "{body}");

    // A deny-listed network refuses the route's clients with a 403 problem; taken off, they
    // are limited as before. The allow list then lets them past the limit.
    let (status, _) = admin(
        &client,
        &service,
        Method::PUT,
        "/v1/lists/deny/127.0.0.0%2F8",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let refused = client.get(service.url("/")).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    assert!(refused.headers().get("retry-after").is_none());
    // A route without policies refuses them too.
    let open = client.get(service.url("/open")).send().await.unwrap();
    assert_eq!(open.status(), StatusCode::FORBIDDEN);
    let (status, _) = admin(
        &client,
        &service,
        Method::DELETE,
        "/v1/lists/deny/127.0.0.0%2F8",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let open = client.get(service.url("/open")).send().await.unwrap();
    assert_eq!(open.status(), StatusCode::OK);
    admin(
        &client,
        &service,
        Method::PUT,
        "/v1/lists/allow/127.0.0.1",
        None,
    )
    .await;
    for _ in 0..10 {
        assert_eq!(
            client.get(service.url("/")).send().await.unwrap().status(),
            StatusCode::OK
        );
    }
    let (_, lists) = admin(&client, &service, Method::GET, "/v1/lists", None).await;
    let lists: Value = serde_json::from_str(&lists).unwrap();
    assert_eq!(lists["allow"][0]["entry"], "127.0.0.1%2F32");
    assert_eq!(lists["allow"][0]["shown"], "127.0.0.1/32");
    assert_eq!(lists["deny"][0]["from_config"], true);

    // Bad input is a problem, and every action needs a token.
    for (method, path, body) in [
        (
            Method::PUT,
            "/v1/blocks/per-key/k",
            Some(json!({ "duration": "soon" })),
        ),
        (
            Method::PUT,
            "/v1/blocks/per-key/k",
            Some(json!({ "for": "1h" })),
        ),
        (
            Method::POST,
            "/v1/limits/per-key/k/penalty",
            Some(json!({ "units": 0 })),
        ),
        (Method::PUT, "/v1/lists/grey/k", None),
        // Typos of networks are refused, not listed as keys that would never match.
        (Method::PUT, "/v1/lists/deny/10.0.0.0%2F33", None),
        (Method::PUT, "/v1/lists/deny/1.2.3.4%2F32%2F1", None),
        (Method::PUT, "/v1/lists/allow/10.0.0.256", None),
    ] {
        let (status, body) = admin(&client, &service, method, path, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
    }
    let (status, _) = admin(
        &client,
        &service,
        Method::PUT,
        "/v1/blocks/nope/k",
        Some(json!({ "duration": "1h" })),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let anonymous = client
        .get(service.admin_url("/v1/blocks"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    // Logged with the token's name, and counted.
    let line = service.log_line("admin action").await;
    assert!(line.contains("ops"), "{line}");
    let metrics = service.metrics().await;
    for action in [
        "block", "unblock", "penalise", "reward", "deny", "undeny", "allow",
    ] {
        let counted = format!(r#"floodwall_admin_actions_total{{action="{action}",by="ops"}} 1"#);
        assert!(metrics.contains(&counted), "{counted} in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_made_on_one_instance_is_enforced_by_another_within_seconds() {
    let redis = RedisServer::start().unwrap();
    let storage = format!("[storage]\nurl = \"{}\"\ntimeout = \"2s\"", redis.url());
    let file = config_file(&config(&storage));
    let one = Floodwall::serve_with(Some(file.path()), ENV, true);
    let other = Floodwall::serve_with(Some(file.path()), ENV, true);
    let client = Client::new();
    assert_eq!(check(&client, &other, "tenant-1").await.0, StatusCode::OK);
    let (status, body) = admin(
        &client,
        &one,
        reqwest::Method::PUT,
        "/v1/blocks/per-key/tenant-1",
        Some(json!({ "duration": "10m" })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    admin(
        &client,
        &one,
        reqwest::Method::PUT,
        "/v1/lists/deny/tenant-2",
        None,
    )
    .await;
    let since = tokio::time::Instant::now();
    while check(&client, &other, "tenant-1").await.0 == StatusCode::OK
        || check(&client, &other, "tenant-2").await.0 != StatusCode::FORBIDDEN
    {
        assert!(
            since.elapsed() < Duration::from_secs(5),
            "the other instance never saw them"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _, retry) = check(&client, &other, "tenant-1").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(retry.unwrap() > 590, "{retry:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floodwall_admin_drives_a_running_service() {
    let file = config_file(&config(""));
    let service = Floodwall::serve_with(Some(file.path()), ENV, true);
    let server = service.admin_url("");
    let admin = |args: &[&str]| {
        let mut all = vec![
            "admin",
            "--server",
            &server,
            "--token-env",
            "TEST_OPS_TOKEN_CLI",
        ];
        all.extend_from_slice(args);
        std::process::Command::new(env!("CARGO_BIN_EXE_floodwall"))
            .args(&all)
            .env("TEST_OPS_TOKEN_CLI", "ops-secret")
            .output()
            .unwrap()
    };
    let ok = |output: std::process::Output| {
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    ok(admin(&[
        "block", "--policy", "per-key", "--key", "a b", "--for", "1h",
    ]));
    let blocks = ok(admin(&["blocks"]));
    assert!(blocks.contains(r#""key":"a%20b""#), "{blocks}");
    assert!(blocks.contains(r#""shown":"a b""#), "{blocks}");
    let client = Client::new();
    assert_eq!(
        check(&client, &service, "a b").await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    ok(admin(&["unblock", "--policy", "per-key", "--key", "a b"]));
    ok(admin(&[
        "penalise", "--policy", "per-key", "--key", "a b", "--units", "2",
    ]));
    assert!(
        ok(admin(&["inspect", "--policy", "per-key", "--key", "a b"])).contains(r#""remaining":1"#)
    );
    ok(admin(&[
        "reward", "--policy", "per-key", "--key", "a b", "--units", "1",
    ]));
    ok(admin(&["reset", "--policy", "per-key", "--key", "a b"]));
    ok(admin(&["deny", "10.0.0.0/8"]));
    assert!(ok(admin(&["lists"])).contains("10.0.0.0/8"));
    assert_eq!(
        check(&client, &service, "10.1.2.3").await.0,
        StatusCode::FORBIDDEN
    );
    ok(admin(&["undeny", "10.0.0.0/8"]));
    ok(admin(&["allow", "vip"]));
    ok(admin(&["unallow", "vip"]));
    ok(admin(&["offenders", "--policy", "per-key"]));
    // A refusal is exit 1 with the problem on stderr.
    let refused = admin(&["undeny", "banned-key"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("409"));
    let unreachable = floodwall(&["admin", "--server", "http://127.0.0.1:1", "blocks"]);
    assert_eq!(unreachable.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_behind_the_token_and_runs_only_its_own_code() {
    let file = config_file(&config(""));
    let service = Floodwall::serve_with(Some(file.path()), ENV, true);
    let client = Client::new();
    for path in ["/", "/dashboard.js", "/dashboard.css", "/v1/dashboard"] {
        let refused = client.get(service.admin_url(path)).send().await.unwrap();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "{path}");
        let challenges: Vec<_> = refused
            .headers()
            .get_all("www-authenticate")
            .iter()
            .collect();
        assert!(
            challenges
                .iter()
                .any(|c| c.to_str().unwrap().starts_with("Basic")),
            "{path}"
        );
        // The token as a browser sends it: Basic, any user name.
        let page = client
            .get(service.admin_url(path))
            .basic_auth("anyone", Some("ops-secret"))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), StatusCode::OK, "{path}");
        if path != "/v1/dashboard" {
            let policy = page.headers()["content-security-policy"].to_str().unwrap();
            assert!(
                policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'")
            );
        }
    }
    // Credentials a browser keeps are refused when another site's page sends them.
    let cross_site = client
        .put(service.admin_url("/v1/lists/deny/victim"))
        .basic_auth("anyone", Some("ops-secret"))
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), StatusCode::UNAUTHORIZED);
    let wrong = client
        .get(service.admin_url("/v1/dashboard"))
        .basic_auth("ops", Some("guess"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    // The snapshot: decisions by policy, offenders, store, routes.
    for _ in 0..5 {
        check(&client, &service, "noisy").await;
    }
    let snapshot: Value = client
        .get(service.admin_url("/v1/dashboard"))
        .bearer_auth("main-secret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let policy = &snapshot["policies"][0];
    assert_eq!(policy["name"], "per-key");
    assert_eq!(policy["decisions"]["allowed"], 3, "{snapshot}");
    assert_eq!(policy["decisions"]["denied"], 2, "{snapshot}");
    assert_eq!(policy["offenders"][0]["key"], "noisy");
    assert_eq!(snapshot["store"]["kind"], "memory");
    assert_eq!(snapshot["routes"][0]["match"], "GET /");
    assert_eq!(snapshot["lists"], 1);
}
