//! Client keys in the admin API, over real sockets: any key a route decides (not UTF-8, 300
//! bytes long) is shown percent-encoded and escaped, and acted on as shown; a key that would
//! forge a log line is written escaped.

use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::binary::{Floodwall, config_file};
use crate::controls::{ENV, admin};

/// A route keyed by a header, with one-second windows: a key's next window comes soon.
const HEADER_KEYED: &str = r#"
[admin]
listen = "127.0.0.1:0"
token_env = "TEST_ADMIN_TOKEN"
tokens = { ops = "TEST_OPS_TOKEN" }

[[policy]]
name = "per-user"
algorithm = "fixed_window"
limit = 2
period = "1s"

[[route]]
match = "GET /"
key = "header:x-user"
policies = ["per-user"]
respond = { status = 200, json = { message = "hello" } }
"#;

async fn as_user(client: &Client, service: &Floodwall, user: &[u8]) -> StatusCode {
    let user = reqwest::header::HeaderValue::from_bytes(user).unwrap();
    let response = client
        .get(service.url("/"))
        .header("x-user", user)
        .send()
        .await
        .unwrap();
    response.status()
}

/// Any key a route decides, a key that is not UTF-8 and one of 300 bytes included, is shown by
/// `/v1/offenders` in a form its paths take as it is: blocked that way, it stays refused in
/// every new window, and is inspected, penalised and unblocked the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offenders_of_any_bytes_and_length_are_blocked_as_shown() {
    let file = config_file(HEADER_KEYED);
    let service = Floodwall::serve_with(Some(file.path()), ENV, true);
    let client = Client::new();
    let long: Vec<u8> = (0..300u32)
        .map(|i| b"user-~!*:@"[i as usize % 10])
        .collect();
    let hostile: &[u8] = &[0xFF, 0xFE];
    for (user, shown) in [
        (hostile, "\\xff\\xfe".to_owned()),
        (&long[..], String::from_utf8(long.clone()).unwrap()),
    ] {
        let mut statuses = Vec::new();
        for _ in 0..4 {
            statuses.push(as_user(&client, &service, user).await);
        }
        assert!(
            statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
            "{statuses:?}"
        );
        let (status, offenders) = admin(
            &client,
            &service,
            reqwest::Method::GET,
            "/v1/offenders/per-user",
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{offenders}");
        let offenders: Value = serde_json::from_str(&offenders).unwrap();
        let offender = offenders["offenders"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["shown"] == shown.as_str())
            .unwrap_or_else(|| panic!("{shown:?} not in {offenders}"))
            .clone();
        let key = offender["key"].as_str().unwrap().to_owned();

        let (status, body) = admin(
            &client,
            &service,
            reqwest::Method::PUT,
            &format!("/v1/blocks/per-user/{key}"),
            Some(json!({ "duration": "1h" })),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["key"], key);
        // Past the window the client was limited in: still refused, by the block.
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        assert_eq!(
            as_user(&client, &service, user).await,
            StatusCode::TOO_MANY_REQUESTS
        );
        let (_, blocks) = admin(&client, &service, reqwest::Method::GET, "/v1/blocks", None).await;
        let blocks: Value = serde_json::from_str(&blocks).unwrap();
        assert!(
            blocks["blocks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|b| b["key"] == key.as_str() && b["shown"] == shown.as_str()),
            "{blocks}"
        );
        for (method, path, body) in [
            (
                reqwest::Method::GET,
                format!("/v1/limits/per-user/{key}"),
                None,
            ),
            (
                reqwest::Method::POST,
                format!("/v1/limits/per-user/{key}/penalty"),
                Some(json!({ "units": 1 })),
            ),
        ] {
            let (status, body) = admin(&client, &service, method, &path, body).await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
        }
        let (status, _) = admin(
            &client,
            &service,
            reqwest::Method::DELETE,
            &format!("/v1/blocks/per-user/{key}"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        assert_eq!(as_user(&client, &service, user).await, StatusCode::OK);
    }
}

/// A key that holds a line break cannot forge a log line: the admin-action log escapes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_that_would_forge_log_lines_are_escaped() {
    let file = config_file(HEADER_KEYED);
    let service = Floodwall::serve_with(Some(file.path()), ENV, true);
    let client = Client::new();
    let (status, body) = admin(
        &client,
        &service,
        reqwest::Method::PUT,
        "/v1/blocks/per-user/evil%0AERROR%20forged%20line%00%E2%80%AE",
        Some(json!({ "duration": "1m" })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let line = service.log_line("admin action").await;
    assert!(
        line.contains(r"evil\nERROR forged line\0\u{202e}"),
        "{line}"
    );
    assert!(!service.logged("ERROR forged line\u{0}"));
    assert!(
        service
            .log_lines("forged")
            .iter()
            .all(|l| l.contains("admin action")),
        "{:#?}",
        service.log_lines("forged")
    );
}
