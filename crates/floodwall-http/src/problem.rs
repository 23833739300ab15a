//! RFC 9457 problem+json answers, public for services built beside the layer: 429 quota
//! exceeded, 503 store unavailable, 401 no client key, 422 impossible cost, 500 misconfiguration,
//! and [`limiter_error`], the one mapping of a limiter's errors to answers.

use bytes::Bytes;
use floodwall::{Error, Policy, Verdict};
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::json;

use crate::headers::{RateLimitHeaders, retry_after_seconds};
use crate::reply::Reply;

/// The problem type of a quota denial (draft-ietf-httpapi-ratelimit-headers).
pub const QUOTA_EXCEEDED: &str = "https://iana.org/assignments/http-problem-types#quota-exceeded";
/// The problem type of a store outage answered by failing closed.
pub const TEMPORARY_REDUCED_CAPACITY: &str =
    "https://iana.org/assignments/http-problem-types#temporary-reduced-capacity";

/// An RFC 9457 `application/problem+json` response, never cached: `type`, `title`, `status`,
/// `detail`, and `violated-policies` when given.
pub fn problem(
    status: StatusCode,
    kind: &str,
    title: &str,
    detail: &str,
    violated: Option<&[&str]>,
) -> Response<Full<Bytes>> {
    problem_response(
        status,
        problem_body(status, kind, title, detail, violated, &[]),
    )
}

/// `body` as an `application/problem+json` response of `status`, never cached.
fn problem_response(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The JSON of a problem: `type`, `title`, `status`, `detail`, `violated-policies` when given,
/// and `debt` (units owed, by policy) when any is owed.
fn problem_body(
    status: StatusCode,
    kind: &str,
    title: &str,
    detail: &str,
    violated: Option<&[&str]>,
    owed: &[(&str, u64)],
) -> Bytes {
    let mut body = json!({
        "type": kind,
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
    });
    if let Some(object) = body.as_object_mut() {
        if let Some(violated) = violated {
            object.insert("violated-policies".into(), json!(violated));
        }
        if !owed.is_empty() {
            let debt: serde_json::Map<String, serde_json::Value> = owed
                .iter()
                .map(|(policy, units)| ((*policy).to_owned(), json!(units)))
                .collect();
            object.insert("debt".into(), serde_json::Value::Object(debt));
        }
    }
    Bytes::from(body.to_string())
}

/// 429: the enforced policies that denied, what each owes (`owed`: policy and units, for
/// those in debt), and when to retry.
pub fn quota_exceeded(
    violated: &[&str],
    owed: &[(&str, u64)],
    retry_after_seconds: u64,
) -> Response<Full<Bytes>> {
    problem_response(
        StatusCode::TOO_MANY_REQUESTS,
        quota_exceeded_body(violated, owed, retry_after_seconds),
    )
}

/// The policies of `verdict` that deny while their key owes units, and how many: what a 429
/// reports as `debt`.
pub fn owed(verdict: &Verdict) -> Vec<(&str, u64)> {
    verdict
        .iter()
        .filter(|(policy, decision)| {
            !decision.allowed && decision.debt > 0 && policy.mode() == floodwall::Mode::Enforce
        })
        .map(|(policy, decision)| (policy.name(), decision.debt))
        .collect()
}

const QUOTA_EXCEEDED_TITLE: &str = "Request quota exceeded";

fn quota_exceeded_detail(
    violated: &[&str],
    owed: &[(&str, u64)],
    retry_after_seconds: u64,
) -> String {
    let debt = match owed {
        [] => String::new(),
        owed => {
            let each: Vec<String> = owed
                .iter()
                .map(|(policy, units)| format!("{units} units to {policy:?}"))
                .collect();
            format!(" The quota is in debt: {}.", each.join(", "))
        }
    };
    format!(
        "Too many requests under {}: retry after {retry_after_seconds} s.{debt}",
        quoted_list(violated)
    )
}

/// 403: the client is on the deny list. No `Retry-After`: waiting does not help.
pub fn deny_listed() -> Response<Full<Bytes>> {
    problem(
        StatusCode::FORBIDDEN,
        "about:blank",
        "Client refused",
        "This client is on the service's deny list; its requests are refused whatever the rate.",
        None,
    )
}

/// The whole answer to a denied verdict: the 429 of [`quota_exceeded`] with the verdict's
/// rate-limit headers and `Retry-After`, as the layer sends it; the 403 of [`deny_listed`] when
/// the verdict comes from the deny list.
pub fn denied(verdict: &Verdict, headers: &RateLimitHeaders) -> Response<Full<Bytes>> {
    if Reply::of(Ok(verdict)) == Reply::DenyListed {
        return deny_listed();
    }
    let violated: Vec<&str> = verdict.violated().map(Policy::name).collect();
    let mut response = quota_exceeded(&violated, &owed(verdict), retry_after_seconds(verdict));
    headers.write(response.headers_mut(), verdict);
    response
}

/// The body of [`quota_exceeded`] alone, for a proxy that answers the 429 itself (Envoy, from a
/// RateLimitService's `raw_body`).
pub fn quota_exceeded_body(
    violated: &[&str],
    owed: &[(&str, u64)],
    retry_after_seconds: u64,
) -> Bytes {
    problem_body(
        StatusCode::TOO_MANY_REQUESTS,
        QUOTA_EXCEEDED,
        QUOTA_EXCEEDED_TITLE,
        &quota_exceeded_detail(violated, owed, retry_after_seconds),
        Some(violated),
        owed,
    )
}

/// The answer to a check the limiter could not make: 503 for a store outage under
/// `on_error = "deny"` (never a 429), 422 for a cost no policy can admit, 400 for a policy named
/// twice, 500 for any other failure.
pub fn limiter_error<'p>(
    error: &Error,
    policies: impl IntoIterator<Item = &'p Policy>,
) -> Response<Full<Bytes>> {
    let reply = Reply::of(Err(error));
    match reply {
        Reply::StoreUnavailable => store_unavailable(policies),
        Reply::ImpossibleCost => impossible_cost(&error.to_string()),
        Reply::PolicyTwice => problem(
            reply.status(),
            "about:blank",
            "Policy named twice",
            &error.to_string(),
            None,
        ),
        _ => misconfigured(&error.to_string()),
    }
}

/// 503: the store is down and these policies fail closed. Never a 429: an outage is not quota.
pub fn store_unavailable<'p>(
    policies: impl IntoIterator<Item = &'p Policy>,
) -> Response<Full<Bytes>> {
    let names: Vec<&str> = policies.into_iter().map(Policy::name).collect();
    let detail = format!(
        "The rate-limit store is unavailable and {} fail closed; retry shortly.",
        quoted_list(&names)
    );
    let mut response = problem(
        StatusCode::SERVICE_UNAVAILABLE,
        TEMPORARY_REDUCED_CAPACITY,
        "Temporarily reduced capacity",
        &detail,
        Some(&names),
    );
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// 401: the request lacks the client key this route is limited by.
pub fn missing_key(detail: &str) -> Response<Full<Bytes>> {
    let mut response = problem(
        StatusCode::UNAUTHORIZED,
        "about:blank",
        "Unauthorized",
        detail,
        None,
    );
    // RFC 9110 requires a challenge on every 401.
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("ApiKey"));
    response
}

/// 422: a request whose cost exceeds what a policy can ever admit.
pub fn impossible_cost(detail: &str) -> Response<Full<Bytes>> {
    problem(
        StatusCode::UNPROCESSABLE_ENTITY,
        "about:blank",
        "Request cost exceeds the limit",
        detail,
        None,
    )
}

/// The body of [`impossible_cost`] alone, for a proxy that answers itself.
pub fn impossible_cost_body(detail: &str) -> Bytes {
    problem_body(
        StatusCode::UNPROCESSABLE_ENTITY,
        "about:blank",
        "Request cost exceeds the limit",
        detail,
        None,
        &[],
    )
}

/// 500: the server is set up so that no key can be read (no peer address recorded).
pub fn misconfigured(detail: &str) -> Response<Full<Bytes>> {
    problem(
        StatusCode::INTERNAL_SERVER_ERROR,
        "about:blank",
        "Rate limiter misconfigured",
        detail,
        None,
    )
}

fn quoted_list(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    match quoted.len() {
        1 => format!("policy {}", quoted[0]),
        _ => format!("policies {}", quoted.join(", ")),
    }
}
