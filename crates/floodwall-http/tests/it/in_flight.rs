//! A `concurrency` policy on a route, over real sockets: a request holds its slot until its
//! response body has been sent, a request dropped by its client gives the slot back, and the
//! headers say the quota counts requests in flight.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use bytes::Bytes;
use floodwall::{Algorithm, Limiter, MemoryStore, Policy};
use floodwall_http::RateLimitLayer;
use http_body::Frame;
use reqwest::StatusCode;
use tokio::sync::mpsc;

use crate::support::serve;

fn one_at_a_time() -> RateLimitLayer {
    let policy = Policy::new(
        "exports",
        Algorithm::Concurrency,
        1,
        Duration::from_secs(60),
    );
    RateLimitLayer::new(Limiter::new(MemoryStore::new()), policy.unwrap())
}

/// A body of the chunks a channel delivers, ending when its sender is dropped.
struct Chunks(mpsc::Receiver<Bytes>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|chunk| Ok(Frame::data(chunk))))
    }
}

/// `/stream` answers with a body whose chunks the test sends; `/hang` never answers.
fn app(chunks: mpsc::Receiver<mpsc::Receiver<Bytes>>) -> Router {
    let chunks = std::sync::Arc::new(tokio::sync::Mutex::new(chunks));
    Router::new()
        .route(
            "/stream",
            get(move || {
                let chunks = std::sync::Arc::clone(&chunks);
                async move {
                    let body = chunks.lock().await.recv().await.unwrap();
                    Body::new(Chunks(body))
                }
            }),
        )
        .route("/hang", get(std::future::pending::<&'static str>))
        .route("/quick", get(|| async { "done" }))
        .route_layer(one_at_a_time())
}

/// Asks `/quick` until it is admitted, for at most two seconds.
async fn admitted_again(client: &reqwest::Client, address: SocketAddr) -> bool {
    for _ in 0..200 {
        let answer = client.get(format!("http://{address}/quick")).send().await;
        if answer.is_ok_and(|answer| answer.status() == StatusCode::OK) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_in_flight_until_its_body_has_been_sent() {
    let (bodies, receiver) = mpsc::channel(1);
    let address = serve(app(receiver)).await;
    let client = reqwest::Client::new();
    let (chunks, body) = mpsc::channel(4);
    bodies.send(body).await.unwrap();
    chunks.send(Bytes::from_static(b"first ")).await.unwrap();
    let mut streaming = client
        .get(format!("http://{address}/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(streaming.status(), StatusCode::OK);
    assert_eq!(
        streaming.headers()["ratelimit-policy"],
        r#""exports";q=1;qu="concurrent-requests""#
    );
    assert_eq!(streaming.chunk().await.unwrap().unwrap(), "first ");

    // The headers are out, the body is not: the request is still in flight.
    let refused = client
        .get(format!("http://{address}/quick"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key("retry-after"));

    chunks.send(Bytes::from_static(b"last")).await.unwrap();
    drop(chunks);
    assert_eq!(streaming.chunk().await.unwrap().unwrap(), "last");
    assert!(streaming.chunk().await.unwrap().is_none());
    // The slot went back before the body's end reached the client.
    let quick = client
        .get(format!("http://{address}/quick"))
        .send()
        .await
        .unwrap();
    assert_eq!(quick.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_its_client_gave_up_on_gives_its_slot_back() {
    let (_bodies, receiver) = mpsc::channel(1);
    let address = serve(app(receiver)).await;
    let client = reqwest::Client::new();
    // The handler never answers; the client stops waiting and closes the connection.
    let gave_up = client
        .get(format!("http://{address}/hang"))
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(gave_up.is_err());
    assert!(admitted_again(&client, address).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_its_client_stopped_reading_gives_its_slot_back() {
    let (bodies, receiver) = mpsc::channel(1);
    let address = serve(app(receiver)).await;
    let client = reqwest::Client::new();
    let (chunks, body) = mpsc::channel(4);
    bodies.send(body).await.unwrap();
    chunks.send(Bytes::from_static(b"partial")).await.unwrap();
    let streaming = client
        .get(format!("http://{address}/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(streaming.status(), StatusCode::OK);
    // Dropping the response closes its connection mid-body; the server's next write fails and
    // drops the body, which releases.
    drop(streaming);
    let _ = chunks.send(Bytes::from_static(b"more")).await;
    assert!(admitted_again(&client, address).await);
    drop(chunks);
}
