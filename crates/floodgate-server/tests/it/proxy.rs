//! Proxy mode against a real upstream started here: bodies byte-identical both ways, hop-by-hop
//! headers removed, forwarding headers added, 502 and 504 as problems, denials never reaching
//! the upstream.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use reqwest::{Client, StatusCode};
use serde_json::Value;

use crate::binary::Floodgate;

/// An upstream on a free port: `/up/echo` returns the request body, `/up/headers` the request
/// headers, `/up/slow` answers after 2 s, `/up/limited` counts its calls.
async fn upstream(calls: Arc<AtomicUsize>) -> SocketAddr {
    let app = Router::new()
        .route("/up/echo", post(|body: Body| async move { body }))
        .route(
            "/up/headers",
            get(|headers: HeaderMap| async move {
                let map: BTreeMap<String, String> = headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                    .collect();
                axum::Json(map)
            }),
        )
        .route(
            "/up/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(2)).await;
                "late"
            }),
        )
        .route(
            "/up/limited",
            get(move || {
                calls.fetch_add(1, Ordering::Relaxed);
                async { "counted" }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_forwards_faithfully_and_fails_as_problems() {
    let calls = Arc::new(AtomicUsize::new(0));
    let up = upstream(Arc::clone(&calls)).await;
    // A port with nothing behind it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.toml");
    std::fs::write(
        &file,
        format!(
            "[[policy]]\nname = \"two\"\nalgorithm = \"fixed_window\"\nlimit = 2\nperiod = \"1h\"\n\
             [[route]]\nmatch = \"GET /up/limited\"\npolicies = [\"two\"]\nupstream = \"http://{up}\"\n\
             [[route]]\nmatch = \"* /up/*\"\nupstream = \"http://{up}\"\nupstream_timeout = \"300ms\"\n\
             [[route]]\nmatch = \"* /down/*\"\nupstream = \"http://{closed}\"\n"
        ),
    )
    .unwrap();
    let service = Floodgate::serve(Some(&file));
    let client = Client::new();

    // 1 MB of varied bytes, both ways, unchanged.
    let sent: Vec<u8> = (0..1_048_576u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let echoed = client
        .post(service.url("/up/echo"))
        .body(sent.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.status(), StatusCode::OK);
    assert_eq!(echoed.headers()["via"], "1.1 floodgate");
    assert!(
        echoed.bytes().await.unwrap() == sent,
        "the body changed on the way"
    );

    let seen: Value = client
        .get(service.url("/up/headers?x=1"))
        .header("connection", "x-hop")
        .header("x-hop", "secret")
        .header("x-forwarded-for", "6.6.6.6")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        seen.get("x-hop").is_none(),
        "a hop-by-hop header was forwarded: {seen}"
    );
    assert_eq!(seen["x-forwarded-for"], "6.6.6.6, 127.0.0.1");
    assert!(
        seen["forwarded"]
            .as_str()
            .unwrap()
            .contains("for=127.0.0.1;proto=http"),
        "{seen}"
    );
    assert_eq!(seen["via"], "1.1 floodgate");

    let slow = client.get(service.url("/up/slow")).send().await.unwrap();
    assert_eq!(slow.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(slow.headers()["content-type"], "application/problem+json");
    let down = client
        .get(service.url("/down/anything"))
        .send()
        .await
        .unwrap();
    assert_eq!(down.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(down.headers()["content-type"], "application/problem+json");

    let mut statuses = Vec::new();
    for _ in 0..4 {
        let response = client.get(service.url("/up/limited")).send().await.unwrap();
        statuses.push(response.status());
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    assert_eq!(
        calls.load(Ordering::Relaxed),
        2,
        "a denied request reached the upstream"
    );
}
