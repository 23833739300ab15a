//! The layer through `Router::oneshot` on a memory store under a manual clock: answers, bodies,
//! keys, costs, exemptions, stacking and the tower contract.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use floodwall::{Algorithm, Limiter, ManualClock, MemoryStore, Mode, Policy};
use floodwall_http::key::{ClientIp, Header, KeyExtractorExt};
use floodwall_http::{HeaderMode, QUOTA_EXCEEDED, RateLimitLayer};
use http::{HeaderName, Method, Request, StatusCode};
use tokio::sync::Notify;
use tower::{Service, ServiceExt};

use crate::support::{cost_from_header, get_from, json_body, parse_list};

// A multiple of 60 s: fixed windows are aligned to the epoch, so a minute window starts here.
const START_US: u64 = 1_699_999_980_000_000;

fn limiter(clock: &ManualClock) -> Limiter {
    Limiter::new(MemoryStore::builder().clock(clock.clone()).build())
}

fn per_minute(name: &str, limit: u64) -> Policy {
    Policy::new(name, Algorithm::FixedWindow, limit, Duration::from_secs(60)).unwrap()
}

fn app(layer: RateLimitLayer) -> Router {
    Router::new()
        .route("/", get(|| async { "hello" }))
        .route_layer(layer)
}

async fn status_of(app: &Router, request: Request<Body>) -> StatusCode {
    app.clone().oneshot(request).await.unwrap().status()
}

#[tokio::test]
async fn denies_past_the_limit_with_a_problem_that_is_never_cached() {
    let clock = ManualClock::new(START_US);
    let app = app(RateLimitLayer::new(
        limiter(&clock),
        per_minute("per-ip", 3),
    ));
    for _ in 0..3 {
        assert_eq!(
            status_of(&app, get_from("/", "192.0.2.1:5000")).await,
            StatusCode::OK
        );
    }
    let denied = app
        .clone()
        .oneshot(get_from("/", "192.0.2.1:5001"))
        .await
        .unwrap();
    assert_eq!(denied.status(), StatusCode::TOO_MANY_REQUESTS);
    let headers = denied.headers().clone();
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["retry-after"], "60");
    let body = json_body(denied).await;
    assert_eq!(body["type"], QUOTA_EXCEEDED);
    assert_eq!(body["status"], 429);
    assert_eq!(body["violated-policies"], serde_json::json!(["per-ip"]));
    assert!(body["title"].is_string() && body["detail"].as_str().unwrap().contains("per-ip"));
    // Another client is not affected; the first is admitted again after the window.
    assert_eq!(
        status_of(&app, get_from("/", "192.0.2.2:5000")).await,
        StatusCode::OK
    );
    clock.advance(Duration::from_secs(60));
    assert_eq!(
        status_of(&app, get_from("/", "192.0.2.1:5000")).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn every_header_mode_sends_exactly_its_headers() {
    let names = [
        "ratelimit-policy",
        "ratelimit",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    ];
    let cases = [
        (HeaderMode::Draft, [true, true, false, false, false]),
        (HeaderMode::Legacy, [false, false, true, true, true]),
        (HeaderMode::Both, [true; 5]),
        (HeaderMode::None, [false; 5]),
    ];
    for (mode, expected) in cases {
        let clock = ManualClock::new(START_US);
        let layer = RateLimitLayer::builder(limiter(&clock), per_minute("m", 1))
            .headers(mode)
            .build();
        let app = app(layer);
        for status in [StatusCode::OK, StatusCode::TOO_MANY_REQUESTS] {
            let response = app
                .clone()
                .oneshot(get_from("/", "192.0.2.1:1"))
                .await
                .unwrap();
            assert_eq!(response.status(), status, "{mode:?}");
            for (name, present) in names.iter().zip(expected) {
                assert_eq!(
                    response.headers().contains_key(*name),
                    present,
                    "{mode:?} {name}"
                );
            }
            // Retry-After comes with every 429, whatever the mode.
            assert_eq!(
                response.headers().contains_key("retry-after"),
                status == StatusCode::TOO_MANY_REQUESTS
            );
        }
    }
}

#[tokio::test]
async fn legacy_headers_describe_the_policy_closest_to_denying() {
    let clock = ManualClock::new(START_US);
    let layer = RateLimitLayer::builder(limiter(&clock), per_minute("loose", 100))
        .policy(per_minute("tight", 2))
        .headers(HeaderMode::Legacy)
        .build();
    let response = app(layer)
        .oneshot(get_from("/", "192.0.2.1:1"))
        .await
        .unwrap();
    assert_eq!(response.headers()["x-ratelimit-limit"], "2");
    assert_eq!(response.headers()["x-ratelimit-remaining"], "1");
    assert_eq!(response.headers()["x-ratelimit-reset"], "60");
}

#[tokio::test]
async fn several_policies_in_one_layer_are_all_or_nothing() {
    let clock = ManualClock::new(START_US);
    let per_second = Policy::new(
        "per-second",
        Algorithm::FixedWindow,
        2,
        Duration::from_secs(1),
    );
    let limiter = limiter(&clock);
    let layer = RateLimitLayer::builder(limiter.clone(), per_second.unwrap())
        .policy(per_minute("per-minute", 3))
        .build();
    let app = app(layer);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(status_of(&app, get_from("/", "192.0.2.1:1")).await);
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    // The per-second denial consumed nothing of the per-minute quota: one unit is left there.
    clock.advance(Duration::from_secs(1));
    let response = app
        .clone()
        .oneshot(get_from("/", "192.0.2.1:1"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let items = parse_list(response.headers(), "ratelimit");
    assert_eq!(
        items.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        ["per-second", "per-minute"]
    );
    assert_eq!(items[1].param("r"), 0);
    let denied = app
        .clone()
        .oneshot(get_from("/", "192.0.2.1:1"))
        .await
        .unwrap();
    assert_eq!(
        json_body(denied).await["violated-policies"],
        serde_json::json!(["per-minute"])
    );
}

#[tokio::test]
async fn stacked_layers_each_count() {
    let clock = ManualClock::new(START_US);
    let limiter = limiter(&clock);
    let app = Router::new()
        .route("/", get(|| async { "hello" }))
        .route_layer(RateLimitLayer::new(limiter.clone(), per_minute("outer", 3)))
        .route_layer(RateLimitLayer::new(limiter.clone(), per_minute("inner", 2)));
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(status_of(&app, get_from("/", "192.0.2.1:1")).await);
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    let outer_policy = per_minute("outer", 3);
    let outer = limiter.peek(&outer_policy, b"192.0.2.1").await.unwrap();
    // The layer added last runs first: its denial stopped the third request before "outer".
    assert_eq!(outer.decisions()[0].remaining, 1);
}

#[tokio::test]
async fn a_missing_api_key_is_a_401_unless_a_fallback_is_configured() {
    let clock = ManualClock::new(START_US);
    let api_key = || Header::new(HeaderName::from_static("x-api-key"));
    let strict = app(
        RateLimitLayer::builder(limiter(&clock), per_minute("per-key", 5))
            .key(api_key())
            .build(),
    );
    let response = strict
        .clone()
        .oneshot(get_from("/", "192.0.2.1:1"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().contains_key("www-authenticate"));
    let body = json_body(response).await;
    assert!(
        body["detail"].as_str().unwrap().contains("x-api-key"),
        "{body}"
    );

    let mut with_key = get_from("/", "192.0.2.1:1");
    with_key
        .headers_mut()
        .insert("x-api-key", "k1".parse().unwrap());
    assert_eq!(status_of(&strict, with_key).await, StatusCode::OK);

    let lenient = app(
        RateLimitLayer::builder(limiter(&clock), per_minute("per-key", 1))
            .key(api_key().or(ClientIp::new()))
            .build(),
    );
    assert_eq!(
        status_of(&lenient, get_from("/", "192.0.2.1:1")).await,
        StatusCode::OK
    );
    assert_eq!(
        status_of(&lenient, get_from("/", "192.0.2.1:1")).await,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn without_a_peer_address_the_answer_says_how_to_serve() {
    let clock = ManualClock::new(START_US);
    let app = app(RateLimitLayer::new(
        limiter(&clock),
        per_minute("per-ip", 5),
    ));
    let response = app
        .oneshot(Request::get("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = json_body(response).await;
    assert!(
        body["detail"].as_str().unwrap().contains("connect_info"),
        "{body}"
    );
}

#[tokio::test]
async fn costs_are_charged_and_an_impossible_cost_is_a_422() {
    let clock = ManualClock::new(START_US);
    let layer = RateLimitLayer::builder(limiter(&clock), per_minute("units", 5))
        .cost(cost_from_header)
        .build();
    let app = app(layer);
    let with_cost = |cost: &str| {
        let mut request = get_from("/", "192.0.2.1:1");
        request
            .headers_mut()
            .insert("x-cost", cost.parse().unwrap());
        request
    };
    assert_eq!(status_of(&app, with_cost("3")).await, StatusCode::OK);
    assert_eq!(
        status_of(&app, with_cost("3")).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(status_of(&app, with_cost("2")).await, StatusCode::OK);
    let response = app.clone().oneshot(with_cost("6")).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
}

#[tokio::test]
async fn exempt_requests_and_cors_preflights_are_never_counted() {
    let clock = ManualClock::new(START_US);
    let limiter = limiter(&clock);
    let layer = RateLimitLayer::builder(limiter.clone(), per_minute("per-ip", 1))
        .exempt(|request| request.uri.path() == "/health")
        .build();
    let app = Router::new()
        .route("/", get(|| async { "hello" }).options(|| async { "" }))
        .route("/health", get(|| async { "ok" }))
        .route_layer(layer);
    for _ in 0..5 {
        assert_eq!(
            status_of(&app, get_from("/health", "192.0.2.1:1")).await,
            StatusCode::OK
        );
        let mut preflight = get_from("/", "192.0.2.1:1");
        *preflight.method_mut() = Method::OPTIONS;
        preflight
            .headers_mut()
            .insert("origin", "https://example.com".parse().unwrap());
        preflight
            .headers_mut()
            .insert("access-control-request-method", "GET".parse().unwrap());
        let response = app.clone().oneshot(preflight).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(!response.headers().contains_key("ratelimit"));
    }
    assert_eq!(
        status_of(&app, get_from("/", "192.0.2.1:1")).await,
        StatusCode::OK
    );
    assert_eq!(
        status_of(&app, get_from("/", "192.0.2.1:1")).await,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn a_shadow_policy_reports_but_never_denies() {
    let clock = ManualClock::new(START_US);
    let shadow = per_minute("trial", 1).with_mode(Mode::Shadow);
    let app = app(RateLimitLayer::new(limiter(&clock), shadow));
    for _ in 0..3 {
        let response = app
            .clone()
            .oneshot(get_from("/", "192.0.2.1:1"))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(parse_list(response.headers(), "ratelimit")[0].param("r"), 0);
    }
}

#[tokio::test]
async fn a_service_made_ready_and_dropped_reserves_nothing_and_clones_share_one_limit() {
    let clock = ManualClock::new(START_US);
    let limiter = limiter(&clock);
    let policy = per_minute("per-ip", 2);
    let layer = RateLimitLayer::new(limiter.clone(), policy.clone());
    let handler = tower::service_fn(|_: Request<Body>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(Body::empty()))
    });
    let service = tower::Layer::layer(&layer, handler);
    for _ in 0..10 {
        let mut ready = service.clone();
        ready.ready().await.unwrap();
        drop(ready);
    }
    let untouched = limiter.peek(&policy, b"192.0.2.1").await.unwrap();
    assert_eq!(untouched.decisions()[0].remaining, 2);

    let (mut first, mut second) = (service.clone(), service);
    let a = first
        .ready()
        .await
        .unwrap()
        .call(get_from("/", "192.0.2.1:1"))
        .await
        .unwrap();
    let b = second
        .ready()
        .await
        .unwrap()
        .call(get_from("/", "192.0.2.1:1"))
        .await
        .unwrap();
    let c = first
        .ready()
        .await
        .unwrap()
        .call(get_from("/", "192.0.2.1:1"))
        .await
        .unwrap();
    assert_eq!(
        [a.status(), b.status(), c.status()],
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
}

#[tokio::test]
async fn decisions_are_counted_by_policy_and_outcome_with_shadow_denials_apart() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let clock = ManualClock::new(START_US);
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let layer = metrics::with_local_recorder(&recorder, || {
        RateLimitLayer::builder(limiter(&clock), per_minute("enforced", 3))
            .policy(per_minute("trial", 1).with_mode(Mode::Shadow))
            .build()
    });
    let app = app(layer);
    for _ in 0..5 {
        app.clone()
            .oneshot(get_from("/", "192.0.2.1:1"))
            .await
            .unwrap();
    }
    let mut counts = std::collections::BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let labels: Vec<String> = key
            .key()
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        assert!(
            labels.iter().all(|l| !l.contains("192.0.2.1")),
            "a client key in a label"
        );
        if let DebugValue::Counter(count) = value {
            counts.insert(labels.join(","), count);
        }
    }
    let get = |labels: &str| counts.get(labels).copied().unwrap_or(0);
    // Requests 1-3 pass "enforced"; "trial" admits the first and shadow-denies the rest.
    assert_eq!(get("policy=enforced,outcome=allowed"), 3);
    assert_eq!(get("policy=enforced,outcome=denied"), 2);
    assert_eq!(get("policy=trial,outcome=allowed"), 1);
    assert_eq!(get("policy=trial,outcome=shadow_denied"), 4);
    assert_eq!(get("policy=trial,outcome=denied"), 0);
}

#[tokio::test]
async fn responses_the_api_failed_to_serve_are_refunded_when_asked() {
    let clock = ManualClock::new(START_US);
    let layer = RateLimitLayer::builder(limiter(&clock), per_minute("per-ip", 2))
        .refund_when(|status| status.is_server_error())
        .build();
    let app = Router::new()
        .route("/", get(|| async { "hello" }))
        .route("/fail", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
        .route_layer(layer);
    for _ in 0..5 {
        let failed = status_of(&app, get_from("/fail", "192.0.2.1:5000")).await;
        assert_eq!(failed, StatusCode::INTERNAL_SERVER_ERROR);
    }
    // The failures counted nothing: the client still has its two requests, then a 429.
    for expected in [
        StatusCode::OK,
        StatusCode::OK,
        StatusCode::TOO_MANY_REQUESTS,
    ] {
        assert_eq!(
            status_of(&app, get_from("/", "192.0.2.1:5000")).await,
            expected
        );
    }
    // Without the option, a failure counts like any answer.
    let plain = app_failing(RateLimitLayer::new(
        limiter(&clock),
        per_minute("per-ip", 2),
    ));
    for expected in [
        StatusCode::INTERNAL_SERVER_ERROR,
        StatusCode::INTERNAL_SERVER_ERROR,
        StatusCode::TOO_MANY_REQUESTS,
    ] {
        assert_eq!(
            status_of(&plain, get_from("/fail", "192.0.2.1:5000")).await,
            expected
        );
    }
}

#[tokio::test]
async fn a_failure_that_outlives_its_window_is_not_refunded_into_the_next() {
    // The failing request is admitted 10 ms before its window ends, and answers after two
    // requests have used up the next window. Refunding it then would give that window a third.
    let clock = ManualClock::new(START_US + 59_990_000);
    let admitted = Arc::new(Notify::new());
    let answer = Arc::new(Notify::new());
    let layer = RateLimitLayer::builder(limiter(&clock), per_minute("per-ip", 2))
        .refund_when(|status| status.is_server_error())
        .build();
    let slow_failure = {
        let (admitted, answer) = (admitted.clone(), answer.clone());
        move || async move {
            admitted.notify_one();
            answer.notified().await;
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    let app = Router::new()
        .route("/", get(|| async { "hello" }))
        .route("/slow-fail", get(slow_failure))
        .route_layer(layer);
    let failing = tokio::spawn({
        let app = app.clone();
        async move { status_of(&app, get_from("/slow-fail", "192.0.2.1:5000")).await }
    });
    admitted.notified().await;
    clock.advance(Duration::from_secs(1));
    for _ in 0..2 {
        assert_eq!(
            status_of(&app, get_from("/", "192.0.2.1:5000")).await,
            StatusCode::OK
        );
    }
    // Longer than the 10 ms the failing request's window had left when it was admitted.
    tokio::time::sleep(Duration::from_millis(50)).await;
    answer.notify_one();
    assert_eq!(failing.await.unwrap(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        status_of(&app, get_from("/", "192.0.2.1:5000")).await,
        StatusCode::TOO_MANY_REQUESTS
    );
}

fn app_failing(layer: RateLimitLayer) -> Router {
    Router::new()
        .route("/fail", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
        .route_layer(layer)
}
