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

use crate::in_process::Service;

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
    let service = Service::start(&format!(
        "[[policy]]\nname = \"two\"\nalgorithm = \"fixed_window\"\nlimit = 2\nperiod = \"1h\"\n\
         [[route]]\nmatch = \"GET /up/limited\"\npolicies = [\"two\"]\nupstream = \"http://{up}\"\n\
         [[route]]\nmatch = \"* /up/*\"\nupstream = \"http://{up}\"\nupstream_timeout = \"300ms\"\n\
         [[route]]\nmatch = \"* /down/*\"\nupstream = \"http://{closed}\"\n"
    ))
    .await;
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
    assert_eq!(echoed.headers()["via"], "1.1 floodwall");
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
    assert_eq!(seen["via"], "1.1 floodwall");

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

/// A keep-alive HTTP/1.1 upstream that counts the connections it accepts. `/small` answers 2
/// bytes, `/large` 200 000 (more than the proxy buffers, so it streams), and `/last` answers and
/// then closes the connection without saying so, as an upstream's idle timeout would.
async fn counting_upstream(connections: Arc<AtomicUsize>) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            connections.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut pending = Vec::new();
                let mut buffer = [0u8; 4096];
                loop {
                    let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match socket.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => pending.extend_from_slice(&buffer[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&pending[..end]).into_owned();
                    pending.drain(..end + 4);
                    let body = if head.starts_with("GET /large") {
                        vec![b'x'; 200_000]
                    } else {
                        b"ok".to_vec()
                    };
                    let answer =
                        format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                    socket.write_all(answer.as_bytes()).await.unwrap();
                    socket.write_all(&body).await.unwrap();
                    if head.starts_with("GET /last") {
                        return;
                    }
                }
            });
        }
    });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused_and_a_closed_one_is_replaced() {
    let connections = Arc::new(AtomicUsize::new(0));
    let up = counting_upstream(Arc::clone(&connections)).await;
    let service = Service::start(&format!(
        "[[route]]\nmatch = \"GET /*\"\nupstream = \"http://{up}\"\n\
         [[route]]\nmatch = \"POST /*\"\nupstream = \"http://{up}\"\n"
    ))
    .await;
    let client = Client::new();
    let get = |path: &'static str| {
        let (client, url) = (client.clone(), service.url(path));
        async move {
            let response = client.get(url).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            response.bytes().await.unwrap()
        }
    };

    // One request at a time, small and streamed answers alike, through two routes to the same
    // upstream: every one reuses the first connection.
    for round in 0..5 {
        assert_eq!(get("/small").await.as_ref(), b"ok");
        let posted = client.post(service.url("/small")).send().await.unwrap();
        assert_eq!(posted.bytes().await.unwrap().as_ref(), b"ok");
        let large = get("/large").await;
        assert!(
            large.len() == 200_000 && large.iter().all(|&b| b == b'x'),
            "round {round}: the streamed answer changed"
        );
    }
    assert_eq!(connections.load(Ordering::SeqCst), 1);

    // The upstream drops the connection after answering; the next request gets a new one.
    assert_eq!(get("/last").await.as_ref(), b"ok");
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..3 {
        assert_eq!(get("/small").await.as_ref(), b"ok");
    }
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}
