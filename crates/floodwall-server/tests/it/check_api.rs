//! `[check]`: the check API turned off, moved to its own listener, behind a token, and bounded
//! in how many policies one check may name.

use reqwest::{Client, StatusCode};
use serde_json::Value;

use crate::binary::{Floodwall, config_file};
use crate::in_process::Service;

const POLICIES: &str = r#"
[[policy]]
name = "login"
algorithm = "sliding_window"
limit = 3
period = "1h"

[[policy]]
name = "daily"
algorithm = "fixed_window"
limit = 100
period = "1d"

[[policy]]
name = "burst"
algorithm = "gcra"
limit = 10
period = "1m"

[[route]]
match = "POST /login"
key = "ip"
policies = ["login"]
respond = { status = 200, json = { ok = true } }
"#;

const VICTIM: &str = r#"{"policy": "login", "key": "127.0.0.1", "cost": 3}"#;

#[tokio::test]
async fn turned_off_the_check_api_is_not_served() {
    let service = Service::start(&format!("[check]\nenabled = false\n{POLICIES}")).await;
    let client = Client::new();
    let burn = client
        .post(service.url("/v1/check"))
        .body(VICTIM)
        .send()
        .await
        .unwrap();
    assert_eq!(burn.status(), StatusCode::NOT_FOUND);
    // So nobody burnt the route's quota.
    for _ in 0..3 {
        let login = client.post(service.url("/login")).send().await.unwrap();
        assert_eq!(login.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn moved_the_check_api_answers_only_on_its_own_listener() {
    let service = Service::start(&format!("[check]\nlisten = \"127.0.0.1:0\"\n{POLICIES}")).await;
    let client = Client::new();
    let on_main = client
        .post(service.url("/v1/check"))
        .body(VICTIM)
        .send()
        .await
        .unwrap();
    assert_eq!(on_main.status(), StatusCode::NOT_FOUND);
    let check_url = format!("http://{}/v1/check", service.check_address.unwrap());
    let answer = client
        .post(&check_url)
        .body(r#"{"policy": "daily", "key": "k"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let elsewhere = client
        .get(format!("http://{}/login", service.check_address.unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_check_names_at_most_max_policies_and_none_twice() {
    let service = Service::start(&format!("[check]\nmax_policies = 2\n{POLICIES}")).await;
    let client = Client::new();
    let url = service.url("/v1/check");
    let ask = |body: &'static str| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let answer = client.post(url).body(body).send().await.unwrap();
            let status = answer.status();
            let content_type = answer.headers()["content-type"]
                .to_str()
                .unwrap()
                .to_owned();
            (status, content_type, answer.json::<Value>().await.unwrap())
        }
    };
    let (status, content_type, problem) =
        ask(r#"{"policies": ["login", "daily", "burst"], "key": "k"}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(content_type, "application/problem+json");
    assert!(
        problem["detail"].as_str().unwrap().contains("at most 2"),
        "{problem}"
    );
    let (status, _, problem) = ask(r#"{"policies": ["daily", "daily"], "key": "k"}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    let (status, _, _) = ask(r#"{"policies": ["login", "daily"], "key": "k"}"#).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_token_the_check_api_refuses_everyone_else() {
    let config = config_file(&format!(
        "[check]\ntoken_env = \"TEST_CHECK_TOKEN\"\n{POLICIES}"
    ));
    let service = Floodwall::serve_with(
        Some(config.path()),
        &[("TEST_CHECK_TOKEN", "s3cret")],
        false,
    );
    let client = Client::new();
    let url = service.url("/v1/check");
    for authorization in [None, Some("Bearer wrong"), Some("s3cret")] {
        let mut request = client.post(&url).body(VICTIM);
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let refused = request.send().await.unwrap();
        assert_eq!(
            refused.status(),
            StatusCode::UNAUTHORIZED,
            "{authorization:?}"
        );
        assert_eq!(refused.headers()["www-authenticate"], "Bearer");
        assert_eq!(
            refused.headers()["content-type"],
            "application/problem+json"
        );
    }
    let twice = client
        .post(&url)
        .body(VICTIM)
        .header("authorization", "Bearer s3cret")
        .header("authorization", "Bearer s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(twice.status(), StatusCode::BAD_REQUEST);
    // The victim's quota is untouched by all of that.
    for _ in 0..3 {
        let login = client.post(service.url("/login")).send().await.unwrap();
        assert_eq!(login.status(), StatusCode::OK);
    }
    let allowed = client
        .post(&url)
        .header("authorization", "Bearer s3cret")
        .body(r#"{"policy": "daily", "key": "k"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), StatusCode::OK);
    // With a token, nothing to warn about.
    assert!(!service.logged("needs no token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_check_api_beside_routes_is_announced_loudly() {
    let config = config_file(POLICIES);
    let service = Floodwall::serve(Some(config.path()));
    let warning = service.log_line("needs no token").await;
    assert!(warning.contains("WARN"), "{warning}");
}

#[tokio::test]
async fn an_escaped_key_or_policy_name_is_the_same_key_and_policy() {
    let service = Service::start(POLICIES).await;
    let client = Client::new();
    let check = |body: &'static str| {
        let request = client.post(service.url("/v1/check")).body(body);
        async move {
            let answer = request.send().await.unwrap();
            let status = answer.status();
            (status, answer.json::<Value>().await.unwrap())
        }
    };
    // "log\u0069n" is "login" and "k\u00e9y" is "kéy": the escaped spelling spends the plain
    // one's quota.
    let (status, first) = check(r#"{"policy": "login", "key": "kéy", "cost": 2}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["remaining"], 1);
    let (status, second) = check(r#"{"policy": "log\u0069n", "key": "k\u00e9y", "cost": 1}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(second["policy"], "login");
    assert_eq!(second["remaining"], 0);
    let (status, _) = check(r#"{"policy": "login", "key": "kéy"}"#).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
}
