//! Settling from a response header (`settle_from`): a request admitted on its estimate is
//! charged what its response reports, into debt past what is left, or given back the
//! difference under the refund rule; the header never reaches the client.

use std::time::Duration;

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::get;
use floodwall::{Algorithm, Limiter, ManualClock, MemoryStore, Policy};
use floodwall_http::RateLimitLayer;
use http::{HeaderMap, HeaderName, StatusCode};
use tower::ServiceExt;

use crate::support::{cost_from_header, get_from, json_body, parse_list};

const START_US: u64 = 1_700_000_000_000_000;
const USAGE: HeaderName = HeaderName::from_static("x-usage");

/// 100 tokens, one back a second.
fn tokens() -> Policy {
    Policy::new(
        "tokens",
        Algorithm::TokenBucket,
        100,
        Duration::from_secs(100),
    )
    .unwrap()
}

/// Answers with the usage the request asks it to report (`x-report-usage`), if any.
async fn metered(headers: HeaderMap) -> impl IntoResponse {
    let mut response = "done".into_response();
    if let Some(usage) = headers.get("x-report-usage") {
        response.headers_mut().insert(USAGE, usage.clone());
    }
    response
}

/// Fails, reporting a usage all the same.
async fn failing(headers: HeaderMap) -> impl IntoResponse {
    let mut response = metered(headers).await.into_response();
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}

fn app(clock: &ManualClock) -> Router {
    let limiter = Limiter::new(MemoryStore::builder().clock(clock.clone()).build());
    let layer = RateLimitLayer::builder(limiter, tokens())
        .cost(cost_from_header)
        .settle_from(USAGE)
        .refund_when(|status| status.is_server_error())
        .build();
    Router::new()
        .route("/", get(metered))
        .route("/fail", get(failing))
        .route_layer(layer)
}

/// A GET estimating `estimate` tokens (`None`: the default, 1) whose answer reports `usage`.
async fn ask(
    app: &Router,
    path: &str,
    estimate: Option<u64>,
    usage: Option<&str>,
) -> http::Response<axum::body::Body> {
    let mut request = get_from(path, "192.0.2.1:5000");
    if let Some(estimate) = estimate {
        request
            .headers_mut()
            .insert("x-cost", estimate.to_string().parse().unwrap());
    }
    if let Some(usage) = usage {
        request
            .headers_mut()
            .insert("x-report-usage", usage.parse().unwrap());
    }
    app.clone().oneshot(request).await.unwrap().into_response()
}

fn remaining(headers: &HeaderMap) -> i64 {
    parse_list(headers, "ratelimit")[0].param("r")
}

#[tokio::test]
async fn a_usage_past_what_is_left_is_owed_and_denies_until_refill_pays_it() {
    let clock = ManualClock::new(START_US);
    let app = app(&clock);
    // Admitted on the default estimate (1), settled at 150: 50 past the bucket.
    let settled = ask(&app, "/", None, Some("150")).await;
    assert_eq!(settled.status(), StatusCode::OK);
    assert!(
        !settled.headers().contains_key(USAGE),
        "the usage header is ours"
    );
    assert_eq!(remaining(settled.headers()), 0);
    let denied = ask(&app, "/", None, None).await;
    assert_eq!(denied.status(), StatusCode::TOO_MANY_REQUESTS);
    // 50 owed and one token to take, at one a second.
    assert_eq!(denied.headers()["retry-after"], "51");
    let problem = json_body(denied).await;
    assert_eq!(problem["violated-policies"], serde_json::json!(["tokens"]));
    // The clock has not moved: all 50 are still owed.
    assert_eq!(problem["debt"], serde_json::json!({"tokens": 50}));
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("in debt: 50 units to \"tokens\""),
        "{detail}"
    );
    clock.advance(Duration::from_secs(50));
    assert_eq!(
        ask(&app, "/", None, None).await.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "admitted while owing"
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(ask(&app, "/", None, None).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_usage_below_the_estimate_gives_the_difference_back() {
    let clock = ManualClock::new(START_US);
    let app = app(&clock);
    let settled = ask(&app, "/", Some(60), Some("10")).await;
    assert_eq!(settled.status(), StatusCode::OK);
    assert_eq!(remaining(settled.headers()), 90);
    // Exactly 90 are left: the 60 estimated were not kept.
    assert_eq!(
        ask(&app, "/", Some(91), None).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        ask(&app, "/", Some(90), None).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn no_whole_usage_settles_at_the_estimate_and_a_refunded_failure_at_nothing() {
    let clock = ManualClock::new(START_US);
    let app = app(&clock);
    for usage in [None, Some("lots"), Some("-5"), Some("1.5")] {
        let answer = ask(&app, "/", Some(10), usage).await;
        assert_eq!(answer.status(), StatusCode::OK);
        assert!(!answer.headers().contains_key(USAGE));
    }
    // The failure is refunded whatever it reports.
    let failed = ask(&app, "/fail", Some(10), Some("99")).await;
    assert_eq!(failed.status(), StatusCode::BAD_GATEWAY);
    assert!(!failed.headers().contains_key(USAGE));
    // Four estimates of 10 stayed charged.
    assert_eq!(
        ask(&app, "/", Some(61), None).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        ask(&app, "/", Some(60), None).await.status(),
        StatusCode::OK
    );
}
