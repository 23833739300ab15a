//! The admin listener: `/metrics` (Prometheus text), the limits API, top offenders and the
//! operator's actions, on its own socket so the main listener never exposes them.

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use floodwall::client_key::{Escaped, percent_decoded, percent_encoded};
use floodwall::{Limiter, Policy};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use tokio::sync::watch;

mod actions;
mod dashboard;

use crate::check::single_decision_body;
use crate::config::Config;
use crate::error::ApiError;
use crate::telemetry::{prometheus, refresh_limiter_metrics};

struct AdminState {
    limiter: Limiter,
    /// The live configuration, replaced on reload.
    config: watch::Receiver<Arc<Config>>,
}

impl AdminState {
    /// The name of the caller, once `headers` carry an admin token (when one is set): 401
    /// without one.
    fn caller(&self, headers: &HeaderMap) -> Result<String, ApiError> {
        let config = Arc::clone(&self.config.borrow());
        crate::auth::admin_caller(headers, config.admin.as_ref())
    }

    /// The configured policy `name` and the caller's name, once `headers` carry an admin
    /// token: 401 without it, 404 for a policy not configured.
    fn authorised_policy(
        &self,
        headers: &HeaderMap,
        name: &str,
    ) -> Result<(Policy, String), ApiError> {
        let config = Arc::clone(&self.config.borrow());
        let caller = crate::auth::admin_caller(headers, config.admin.as_ref())?;
        let policy = config
            .policy(name)
            .cloned()
            .ok_or_else(|| ApiError::unknown_policy(name, &config.policies))?;
        Ok((policy, caller))
    }
}

/// The policy and the key named by `/v1/{what}/{policy}/{key}[/…]`: the policy a configured
/// name, the key any bytes, each percent-encoded as the admin API shows keys. Read from the
/// path itself, so that a key that is not UTF-8 is named as it is.
fn policy_and_key(uri: &Uri, form: &str) -> Result<(String, Vec<u8>), ApiError> {
    let (policy, key) = two_segments(uri, form)?;
    let policy = String::from_utf8(percent_decoded(policy)).map_err(|_| {
        ApiError::BadAction(format!(
            "the policy in {form} is not a policy name: names are ASCII"
        ))
    })?;
    Ok((policy, percent_decoded(key)))
}

/// The two segments after `/v1/{what}/` of `uri`'s path, still percent-encoded: what the
/// `{…}/{…}` of `form` name.
fn two_segments<'u>(uri: &'u Uri, form: &str) -> Result<(&'u str, &'u str), ApiError> {
    let mut segments = uri.path().split('/').skip(3);
    match (segments.next(), segments.next()) {
        (Some(first), Some(second)) => Ok((first, second)),
        _ => Err(ApiError::BadAction(format!("expected {form}"))),
    }
}

/// A client key as the admin API shows it: `key` percent-encoded (what its paths take), and
/// `shown`, for a person, with invisible and look-alike characters escaped.
fn key_fields(key: &[u8]) -> (String, String) {
    (percent_encoded(key), Escaped(key).to_string())
}

pub(crate) fn app(config: watch::Receiver<Arc<Config>>, limiter: Limiter) -> Router {
    let state = Arc::new(AdminState { limiter, config });
    Router::new()
        .route("/metrics", get(metrics).fallback(crate::only("GET, HEAD")))
        .route(
            "/v1/limits/{policy}/{key}",
            get(limits)
                .delete(limits)
                .fallback(crate::only("GET, HEAD, DELETE")),
        )
        .route(
            "/v1/offenders/{policy}",
            get(offenders).fallback(crate::only("GET, HEAD")),
        )
        .merge(actions::routes())
        .merge(dashboard::routes())
        .fallback(crate::no_route)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            same_site_only,
        ))
        .with_state(state)
}

/// Without a token, the admin listener refuses what another site's page could make a browser
/// send it (a foreign `Host` as DNS rebinding sends, another `Origin`); with one, the token
/// (and, for a browser's Basic credentials, their own origin check) guards it.
async fn same_site_only(
    State(state): State<Arc<AdminState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let admin = state.config.borrow().admin.clone();
    if let Some(admin) = admin.filter(|admin| !admin.guarded()) {
        let authority = request.uri().authority().map(|a| a.as_str());
        if let Err(refused) =
            crate::auth::tokenless_admin_request(request.headers(), authority, admin.listen.ip())
        {
            return refused.into_response();
        }
    }
    next.run(request).await
}

/// The most keys `GET /v1/offenders/{policy}` lists.
const MOST_OFFENDERS: usize = 50;

/// `GET /v1/offenders/{policy}`: the keys the policy denied most over the last minutes, with
/// each count's possible overcount. Needs the token when one is configured.
async fn offenders(
    State(state): State<Arc<AdminState>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path(policy) = path.map_err(|_| ApiError::Status {
        status: StatusCode::BAD_REQUEST,
        title: "Bad path",
        detail: "the policy in /v1/offenders/{policy} must be percent-encoded UTF-8",
    })?;
    let (policy, _) = state.authorised_policy(&headers, &policy)?;
    let offenders: Vec<_> = state
        .limiter
        .top_offenders(policy.name(), MOST_OFFENDERS)
        .into_iter()
        .map(|offender| {
            let (key, shown) = key_fields(&offender.key);
            serde_json::json!({
                "key": key,
                "shown": shown,
                "denied": offender.count,
                "error": offender.error,
            })
        })
        .collect();
    Ok(axum::Json(serde_json::json!({
        "policy": policy.name(),
        "window_s": Limiter::OFFENDER_WINDOW_SECONDS,
        "offenders": offenders,
    }))
    .into_response())
}

async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    refresh_limiter_metrics(&state.limiter);
    let Some(handle) = prometheus() else {
        return ApiError::MetricsUnavailable.into_response();
    };
    handle.run_upkeep();
    let mut response = handle.render().into_response();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// `GET` reads a key's state without consuming; `DELETE` resets it. Both need the token when
/// one is configured, and name a configured policy.
async fn limits(
    State(state): State<Arc<AdminState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (policy, key) = policy_and_key(&uri, "/v1/limits/{policy}/{key}")?;
    let (policy, caller) = state.authorised_policy(&headers, &policy)?;
    let answered = if method == Method::DELETE {
        let reset = state.limiter.reset(&policy, &key).await;
        if reset.is_ok() {
            actions::record(&caller, "reset", policy.name(), &key);
        }
        reset.map(|()| StatusCode::NO_CONTENT.into_response())
    } else {
        let peeked = state.limiter.peek(&policy, &key).await;
        peeked.map(|verdict| axum::Json(single_decision_body(&verdict)).into_response())
    };
    answered.map_err(|error| ApiError::Limiter(error, vec![policy.clone()]))
}
