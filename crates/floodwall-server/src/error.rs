//! Every answer the service gives instead of a decision or an upstream's response, as one type
//! with one mapping to RFC 9457 problem+json.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use floodwall::Policy;
use floodwall_http::problem::{limiter_error, problem};
use http::header::WWW_AUTHENTICATE;
use http::{HeaderValue, StatusCode};

use crate::check::MAX_CHECK_BODY;

/// What went wrong with a request, and so how it is answered.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// 400: the body is not a check request; the text says what is expected.
    BadCheck(String),
    /// 413: a check body over [`MAX_CHECK_BODY`].
    CheckTooLarge,
    /// 408: the request body stopped arriving for longer than `[server] body_timeout`.
    BodyTimeout,
    /// 400: the request body could not be read: malformed chunked framing, or cut off.
    BadBody,
    /// 404: no policy of that name; the configured ones are listed.
    UnknownPolicy {
        /// The name asked for.
        name: String,
        /// The names configured.
        defined: Vec<String>,
    },
    /// 404: no reservation is kept under the id a settle names.
    UnknownReservation,
    /// 404: no route takes the request.
    NoRoute {
        /// The request's method.
        method: http::Method,
        /// The request's path (never its query).
        path: String,
    },
    /// 401: the admin or check API needs its bearer token.
    Unauthorized(crate::auth::Api),
    /// 400: a header or query parameter that must appear at most once (one that keys the
    /// request, `Host`, `Authorization`) appeared more than once; the text names it.
    Ambiguous(String),
    /// 405: a method the resource does not serve; `allow` lists those it does.
    MethodNotAllowed {
        /// The method asked for.
        method: http::Method,
        /// The `Allow` header's value.
        allow: &'static str,
    },
    /// Any other refusal that is a fixed status with a fixed explanation.
    Status {
        /// The status.
        status: StatusCode,
        /// The problem's title.
        title: &'static str,
        /// What to do about it.
        detail: &'static str,
    },
    /// 400: a path no route can be chosen for safely.
    BadPath(crate::path::PathError),
    /// The limiter could not decide under these policies: 503 for a store outage failing
    /// closed, 422 for a cost no policy admits, 400 for a policy named twice.
    Limiter(floodwall::Error, Vec<Policy>),
    /// 502: the upstream could not be reached, or its answer broke off.
    BadGateway(&'static str),
    /// 504: the upstream did not start answering in time.
    UpstreamTimeout(Duration),
    /// 503: `/metrics` without the service's recorder (another was installed first).
    MetricsUnavailable,
    /// 400: an admin action's body or parameters; the text says what is expected.
    BadAction(String),
    /// An admin action the controls refused: 422 for what can never work, 409 for what the
    /// current state forbids, 503 when the store could not record it.
    Control(floodwall::ControlError),
}

impl ApiError {
    /// The answer to a failure reading a check request's body: 413 past its size limit, 408
    /// when it stalled, 400 when it was malformed or cut off.
    pub(crate) fn reading_body(error: &(dyn std::error::Error + 'static)) -> Self {
        let mut cause = Some(error);
        while let Some(error) = cause {
            if error.is::<http_body_util::LengthLimitError>() {
                return ApiError::CheckTooLarge;
            }
            if error.is::<crate::connections::BodyStalled>() {
                return ApiError::BodyTimeout;
            }
            cause = error.source();
        }
        ApiError::BadBody
    }

    /// The 404 for `name`, listing the policies of `policies`.
    pub(crate) fn unknown_policy(name: &str, policies: &[Policy]) -> Self {
        ApiError::UnknownPolicy {
            name: name.to_owned(),
            defined: policies.iter().map(|p| p.name().to_owned()).collect(),
        }
    }
}

fn about_blank(status: StatusCode, title: &str, detail: &str) -> Response {
    problem(status, "about:blank", title, detail, None).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::BadCheck(detail) => {
                about_blank(StatusCode::BAD_REQUEST, "Bad check request", &detail)
            }
            ApiError::CheckTooLarge => about_blank(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Check request too large",
                &format!("a check request body is at most {MAX_CHECK_BODY} bytes"),
            ),
            ApiError::Ambiguous(what) => about_blank(
                StatusCode::BAD_REQUEST,
                "Ambiguous request",
                &format!("{what} must appear at most once"),
            ),
            ApiError::MethodNotAllowed { method, allow } => {
                let mut response = about_blank(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "Method not allowed",
                    &format!("{method} is not served here; allowed: {allow}"),
                );
                response
                    .headers_mut()
                    .insert(http::header::ALLOW, HeaderValue::from_static(allow));
                response
            }
            ApiError::Status {
                status,
                title,
                detail,
            } => about_blank(status, title, detail),
            ApiError::BadPath(error) => about_blank(
                StatusCode::BAD_REQUEST,
                "Bad path",
                &format!("{error}; send the path as the resource is named"),
            ),
            ApiError::BodyTimeout => about_blank(
                StatusCode::REQUEST_TIMEOUT,
                "Request body timed out",
                "the request body stopped arriving; send it without long pauses",
            ),
            ApiError::BadBody => about_blank(
                StatusCode::BAD_REQUEST,
                "Malformed request body",
                "the request body could not be read: malformed chunked encoding, or cut off",
            ),
            ApiError::UnknownPolicy { name, defined } => about_blank(
                StatusCode::NOT_FOUND,
                "Unknown policy",
                &format!("no policy named {name:?}; defined: {}", defined.join(", ")),
            ),
            ApiError::UnknownReservation => about_blank(
                StatusCode::NOT_FOUND,
                "Unknown reservation",
                "no reservation is kept under that id: it was never made, is settled already, or expired (and was settled at its estimate)",
            ),
            ApiError::NoRoute { method, path } => about_blank(
                StatusCode::NOT_FOUND,
                "Not Found",
                &format!("no route matches {method} {path}"),
            ),
            ApiError::Unauthorized(api) => {
                let detail = match api {
                    crate::auth::Api::Admin => {
                        "the admin API needs Authorization: Bearer <token> (the token is in the variable named by [admin] token_env)"
                    }
                    crate::auth::Api::Check => {
                        "the check API needs Authorization: Bearer <token> (the token is in the variable named by [check] token_env)"
                    }
                };
                let mut response = about_blank(StatusCode::UNAUTHORIZED, "Unauthorized", detail);
                let headers = response.headers_mut();
                headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                // A browser opening the dashboard prompts for the token as a password.
                if api == crate::auth::Api::Admin {
                    headers.append(
                        WWW_AUTHENTICATE,
                        HeaderValue::from_static(
                            "Basic realm=\"floodwall admin\", charset=\"UTF-8\"",
                        ),
                    );
                }
                response
            }
            ApiError::Limiter(error, policies) => limiter_error(&error, &policies).into_response(),
            ApiError::BadGateway(detail) => {
                about_blank(StatusCode::BAD_GATEWAY, "Bad gateway", detail)
            }
            ApiError::UpstreamTimeout(timeout) => about_blank(
                StatusCode::GATEWAY_TIMEOUT,
                "Upstream timed out",
                &format!("the upstream did not answer within {timeout:?}"),
            ),
            ApiError::MetricsUnavailable => about_blank(
                StatusCode::SERVICE_UNAVAILABLE,
                "Metrics unavailable",
                "another metrics recorder was installed in this process",
            ),
            ApiError::BadAction(detail) => {
                about_blank(StatusCode::BAD_REQUEST, "Bad admin request", &detail)
            }
            ApiError::Control(error) => {
                use floodwall::ControlError;
                let (status, title) = match &error {
                    ControlError::Full { .. }
                    | ControlError::FullOfBytes { .. }
                    | ControlError::FromConfig { .. } => (StatusCode::CONFLICT, "Control refused"),
                    ControlError::Store(_) => {
                        (StatusCode::SERVICE_UNAVAILABLE, "Store unavailable")
                    }
                    _ => (StatusCode::UNPROCESSABLE_ENTITY, "Control refused"),
                };
                about_blank(status, title, &error.to_string())
            }
        }
    }
}
