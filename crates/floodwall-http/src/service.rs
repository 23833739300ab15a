//! [`RateLimit`]: the service that decides each request before the inner one sees it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use floodwall::gate::{Passage, Passing};
use floodwall::{Algorithm, Check, List, Policy};
use http::{Request, Response};
use http_body::Body;
use http_body_util::{Either, Full};
use tower_service::Service;

use crate::held::HeldBody;
use crate::key::KeyError;
use crate::layer::Config;
use crate::problem;

/// The body of a rate-limited service's responses: the inner service's (holding the request's
/// in-flight units, if a policy is `concurrency`, until it is sent), or one of ours.
pub type RateLimitBody<B> = Either<HeldBody<B>, Full<Bytes>>;

/// The future of a [`RateLimit`] call.
pub type ResponseFuture<B, E> =
    Pin<Box<dyn Future<Output = Result<Response<RateLimitBody<B>>, E>> + Send>>;

/// A service rate-limited by a [`RateLimitLayer`](crate::RateLimitLayer).
///
/// Readiness is the inner service's; nothing is reserved until `call`, so a service made ready
/// and dropped costs no quota. A call's future decides once: dropped before the store answers,
/// it may or may not have counted, but it is never counted twice.
pub struct RateLimit<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> RateLimit<S> {
    pub(crate) fn new(inner: S, config: Arc<Config>) -> Self {
        RateLimit { inner, config }
    }
}

impl<S: Clone> Clone for RateLimit<S> {
    fn clone(&self) -> Self {
        RateLimit {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for RateLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimit<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    ReqBody: Send + 'static,
    ResBody: Body + Send,
{
    type Response = Response<RateLimitBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The ready service goes into the future; a fresh clone stays for the next poll_ready.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let config = Arc::clone(&self.config);
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            if (config.exempt)(&parts) {
                let response = inner.call(Request::from_parts(parts, body)).await?;
                return Ok(response.map(|body| Either::Left(HeldBody::new(body, None))));
            }
            if let Some(client) = &config.screen {
                match client.screen(config.gate.limiter(), &parts) {
                    Some(List::Deny) => return Ok(ours(problem::deny_listed())),
                    Some(List::Allow) => {
                        let response = inner.call(Request::from_parts(parts, body)).await?;
                        return Ok(response.map(|body| Either::Left(HeldBody::new(body, None))));
                    }
                    None => {}
                }
            }
            let key = match config.key.extract(&parts) {
                Ok(key) => key,
                Err(error @ KeyError::Missing { .. }) => {
                    return Ok(ours(problem::missing_key(&error.to_string())));
                }
                Err(error) => return Ok(ours(problem::misconfigured(&error.to_string()))),
            };
            let cost = (config.cost)(&parts);
            // An in-flight limit holds its units until the response has been sent.
            let passing = Passing {
                hold: config.holds,
                ..Passing::default()
            };
            let check = Check::new(&config.policies, &key, cost);
            let passage = config.gate.pass(check, passing).await;
            let verdict = match passage.outcome() {
                Ok(verdict) => verdict,
                Err(error) => return Ok(ours(problem::limiter_error(error, &config.policies))),
            };
            if verdict.allowed() {
                let mut response = inner.call(Request::from_parts(parts, body)).await?;
                config.headers.write(response.headers_mut(), verdict);
                let mut passage = passage;
                let refunded =
                    cost > 0 && config.refund.as_ref().is_some_and(|r| r(response.status()));
                if config.settle_from.is_some() {
                    settle(&config, &passage, &key, cost, refunded, &mut response).await;
                }
                if refunded {
                    // The rates the refund rule allows; in-flight units go back with the body,
                    // and only the holder's own.
                    let consumed = passage
                        .refundable()
                        .filter_map(|index| config.policies.get(index))
                        .filter(|policy| policy.algorithm() != Algorithm::Concurrency)
                        .map(|policy| (policy, key.as_slice()));
                    let given_back = match Check::each(consumed, cost) {
                        Ok(check) => config.gate.limiter().give_back(&check).await,
                        Err(error) => Err(error.into()),
                    };
                    if let Err(error) = given_back {
                        tracing::debug!(%error, "refund failed; the request stays counted");
                    }
                }
                let held = passage.take_held();
                return Ok(response.map(|body| Either::Left(HeldBody::new(body, held))));
            }
            // One line per denial, at debug: policy and path, never the client key.
            tracing::debug!(
                policies = ?verdict.violated().map(Policy::name).collect::<Vec<_>>(),
                path = parts.uri.path(),
                "rate limited"
            );
            Ok(ours(problem::denied(verdict, &config.headers)))
        })
    }
}

/// Settles an admitted request at the cost its response reports (in the layer's `settle_from`
/// header, which is removed) and writes the headers of the state after it. Nothing to settle
/// when the response reports no whole cost, reports the estimate, or was refunded.
async fn settle<B>(
    config: &Config,
    passage: &Passage,
    key: &[u8],
    estimate: u64,
    refunded: bool,
    response: &mut Response<B>,
) {
    let Some((header, counters)) = &config.settle_from else {
        return;
    };
    let reported = response.headers_mut().remove(header);
    let actual = reported.as_ref().and_then(whole_number);
    if reported.is_some() && actual.is_none() {
        tracing::debug!(%header, "a response reported no whole cost; settled at the estimate");
    }
    let Some(actual) = actual.filter(|actual| !refunded && *actual != estimate) else {
        return;
    };
    let Some(reservation) = config.gate.reservation(passage, key, estimate) else {
        return;
    };
    // On a task of its own: a client that leaves does not stop it.
    let settled = match tokio::spawn(reservation.settle(actual)).await {
        Ok(settled) => settled.map_err(|error| error.to_string()),
        Err(failed) => Err(failed.to_string()),
    };
    counters.count(settled.is_ok());
    match settled {
        Ok(settled) => config.headers.write(response.headers_mut(), &settled),
        Err(error) => {
            tracing::debug!(%error, "settle failed; the request stays counted at its estimate");
        }
    }
}

/// A header value that is a whole number of units.
fn whole_number(value: &http::HeaderValue) -> Option<u64> {
    value.to_str().ok()?.trim().parse().ok()
}

fn ours<B>(response: Response<Full<Bytes>>) -> Response<RateLimitBody<B>> {
    response.map(Either::Right)
}
