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
