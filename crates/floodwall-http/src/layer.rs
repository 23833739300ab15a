//! [`RateLimitLayer`]: the configuration, shared by every service it makes.

use std::fmt;
use std::sync::Arc;

use floodwall::Limiter;
use floodwall::Policy;
use floodwall::gate::{Front, Gate, Observer};
use http::header::{ACCESS_CONTROL_REQUEST_METHOD, ORIGIN};
use http::request::Parts;
use http::{HeaderName, Method, StatusCode};
use tower_layer::Layer;

use crate::headers::{HeaderMode, RateLimitHeaders};
use crate::key::{ClientIp, KeyExtractor};
use crate::metrics::{DecisionCounters, SettleCounters};
use crate::service::RateLimit;

type CostFn = dyn Fn(&Parts) -> u64 + Send + Sync;
type ExemptFn = dyn Fn(&Parts) -> bool + Send + Sync;
type RefundFn = dyn Fn(StatusCode) -> bool + Send + Sync;

/// What every [`RateLimit`] service of one layer shares, behind one `Arc`.
pub(crate) struct Config {
    /// The limiter, as the HTTP front end passes through it, with the layer's decision
    /// counters and any observer of the builder's watching.
    pub(crate) gate: Gate,
    /// At least one; several are checked together, all-or-nothing, for the same key.
    pub(crate) policies: Vec<Policy>,
    pub(crate) key: Box<dyn KeyExtractor>,
    pub(crate) cost: Box<CostFn>,
    pub(crate) exempt: Box<ExemptFn>,
    /// When it holds for the inner service's status, the request's units are given back.
    pub(crate) refund: Option<Box<RefundFn>>,
    /// The response header that reports what a request actually cost, and the settle counters.
    pub(crate) settle_from: Option<(HeaderName, SettleCounters)>,
    pub(crate) headers: RateLimitHeaders,
    /// Whether a policy is `concurrency`: each admitted request then holds a lease.
    pub(crate) holds: bool,
    /// Resolves the client address screened against the limiter's allow and deny lists.
    pub(crate) screen: Option<ClientIp>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("policies", &self.policies)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

/// A tower [`Layer`] that rate-limits requests: the Rust form of a `@rate_limit` decorator.
///
/// Each request is keyed (by default by client IP), then checked against the layer's policies in
/// one store call, all-or-nothing. Allowed requests reach the inner service and get the
/// rate-limit headers on the way out. Denied ones are answered 429 with `Retry-After`, the
/// headers and a problem+json body, and a store that is down under `on_error = "deny"` is answered
/// 503. The service's error type stays the inner one's (`Infallible` for axum), so no
/// `HandleErrorLayer` is needed. Every clone of the layer and of its services shares one
/// configuration and one limiter.
///
/// ```
/// use std::time::Duration;
/// use axum::{Router, routing::get};
/// use floodwall::{Algorithm, Limiter, MemoryStore, Policy};
/// use floodwall_http::RateLimitLayer;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let limiter = Limiter::new(MemoryStore::new());
/// let per_ip = Policy::new("per-ip", Algorithm::SlidingWindow, 10, Duration::from_secs(60))?;
/// let app: Router = Router::new()
///     .route("/", get(|| async { "Hello, World!" }))
///     .route_layer(RateLimitLayer::new(limiter, per_ip));
/// # let _ = app; Ok(()) }
/// ```
pub struct RateLimitLayer {
    config: Arc<Config>,
}

impl Clone for RateLimitLayer {
    fn clone(&self) -> Self {
        RateLimitLayer {
            config: Arc::clone(&self.config),
        }
    }
}

impl fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("config", &self.config)
            .finish()
    }
}

impl RateLimitLayer {
    /// A layer checking `policy` per client IP (the TCP peer; see [`ClientIp`]), with the draft
    /// headers.
    pub fn new(limiter: Limiter, policy: Policy) -> Self {
        Self::builder(limiter, policy).build()
    }

    /// A builder for a layer checking `policy` (add more with [`RateLimitLayerBuilder::policy`]).
    pub fn builder(limiter: Limiter, policy: Policy) -> RateLimitLayerBuilder {
        RateLimitLayerBuilder {
            limiter,
            policies: vec![policy],
            key: Box::new(ClientIp::new()),
            cost: Box::new(|_| 1),
            exempt: Box::new(is_cors_preflight),
            refund: None,
            settle_from: None,
            headers: HeaderMode::default(),
            observers: Vec::new(),
            screen: None,
        }
    }

    /// The policies this layer checks.
    pub fn policies(&self) -> &[Policy] {
        &self.config.policies
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(inner, Arc::clone(&self.config))
    }
}

/// Options for a [`RateLimitLayer`].
pub struct RateLimitLayerBuilder {
    limiter: Limiter,
    policies: Vec<Policy>,
    key: Box<dyn KeyExtractor>,
    cost: Box<CostFn>,
    exempt: Box<ExemptFn>,
    refund: Option<Box<RefundFn>>,
    settle_from: Option<HeaderName>,
    headers: HeaderMode,
    observers: Vec<Arc<dyn Observer>>,
    screen: Option<ClientIp>,
}

impl fmt::Debug for RateLimitLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayerBuilder")
            .field("policies", &self.policies)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

impl RateLimitLayerBuilder {
    /// Also checks `policy`, together with the others in one store call: a request is admitted
    /// only if every enforced policy admits it (e.g. 10 per second *and* 1000 per day). A
    /// policy of the same name and algorithm as one already added replaces it: one layer
    /// counts each policy once.
    #[must_use]
    pub fn policy(mut self, policy: Policy) -> Self {
        let same = |p: &Policy| p.name() == policy.name() && p.algorithm() == policy.algorithm();
        match self.policies.iter_mut().find(|p| same(p)) {
            Some(existing) => *existing = policy,
            None => self.policies.push(policy),
        }
        self
    }

    /// Keys requests with `key` instead of the client IP. A request without that key is answered
    /// 401; use [`KeyExtractorExt::or`](crate::key::KeyExtractorExt::or) to fall back instead.
    #[must_use]
    pub fn key(mut self, key: impl KeyExtractor) -> Self {
        self.key = Box::new(key);
        self
    }

    /// Charges each request `cost(request)` units instead of 1. A cost above a policy's capacity
    /// is answered 422; a cost of 0 only reads the state.
    #[must_use]
    pub fn cost(mut self, cost: impl Fn(&Parts) -> u64 + Send + Sync + 'static) -> Self {
        self.cost = Box::new(cost);
        self
    }

    /// Passes requests for which `exempt(request)` holds straight through, never counted nor
    /// limited (health checks, say). CORS preflights stay exempt whatever the predicate.
    #[must_use]
    pub fn exempt(mut self, exempt: impl Fn(&Parts) -> bool + Send + Sync + 'static) -> Self {
        self.exempt = Box::new(move |request| is_cors_preflight(request) || exempt(request));
        self
    }

    /// Gives a request's units back when the inner service answers a status for which
    /// `refund(status)` holds, e.g. `|status| status.is_server_error()`: a request the API failed
    /// to serve then does not count against the client. Answers the layer gives itself (429,
    /// 503) never consumed anything. The refund is a second store call after the response; if it
    /// fails, the request stays counted (never the other way round). A policy whose quota came
    /// back while the request was served (its window ended, say) is not refunded: the request no
    /// longer counts there, and its units would go to the next period.
    #[must_use]
    pub fn refund_when(
        mut self,
        refund: impl Fn(StatusCode) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.refund = Some(Box::new(refund));
        self
    }

    /// Settles each admitted request at the cost its response reports in `header` (a whole
    /// number, as an LLM API reports the tokens it used): the request was admitted on its
    /// [`cost`](Self::cost), the estimate, and once the inner service has answered, the
    /// difference is charged (into debt past what is left, up to each policy's `max_debt`)
    /// or, when less, given back under the refund rule of [`refund_when`](Self::refund_when).
    /// The rate-limit headers then show the state after the settle, and `header` is removed
    /// from the response. A response without it, or with anything but a whole number, is
    /// settled at the estimate; so is a request refunded by `refund_when`, which counts
    /// nothing. The settle runs on a task of its own: a client that leaves meanwhile does not
    /// stop it. `concurrency` policies hold units, not a cost, and are left alone.
    #[must_use]
    pub fn settle_from(mut self, header: HeaderName) -> Self {
        self.settle_from = Some(header);
        self
    }

    /// Screens each request's client address, as `client` resolves it, against the limiter's
    /// allow and deny lists ([`Limiter::list`](floodwall::Limiter::list)) before its key: a deny-listed client is answered
    /// 403, an allow-listed one goes through unchecked. Without it only keys are screened (a key
    /// that is an address is screened either way). It costs nothing while the lists are empty.
    #[must_use]
    pub fn screen_clients(mut self, client: ClientIp) -> Self {
        self.screen = Some(client);
        self
    }

    /// Which rate-limit headers to send (default [`HeaderMode::Draft`]).
    #[must_use]
    pub fn headers(mut self, headers: HeaderMode) -> Self {
        self.headers = headers;
        self
    }

    /// Tells `observer` of every decision the layer makes ([`Observed`](floodwall::gate::Observed):
    /// the pairs and costs, the verdict or error, and the time the decision took), after the
    /// layer's own counters and before the request goes on: for latency histograms or a
    /// decision log. It runs on the request's task, so it should be quick.
    #[must_use]
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observers.push(observer);
        self
    }

    /// Builds the layer. Its `floodwall_decisions_total` counters are registered now, with the
    /// `metrics` recorder installed at this point (if any).
    pub fn build(self) -> RateLimitLayer {
        RateLimitLayer {
            config: Arc::new(Config {
                holds: self
                    .policies
                    .iter()
                    .any(|p| p.algorithm() == floodwall::Algorithm::Concurrency),
                headers: RateLimitHeaders::new(self.headers, &self.policies),
                gate: self.observers.into_iter().fold(
                    Gate::new(self.limiter, Front::Http)
                        .observed_by(Arc::new(DecisionCounters::new(&self.policies))),
                    Gate::observed_by,
                ),
                policies: self.policies,
                key: self.key,
                cost: self.cost,
                exempt: self.exempt,
                refund: self.refund,
                settle_from: self
                    .settle_from
                    .map(|header| (header, SettleCounters::new("http"))),
                screen: self.screen,
            }),
        }
    }
}

/// A CORS preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method`. Browsers send
/// it on their own before the real request, so counting it would charge clients twice.
pub fn is_cors_preflight(request: &Parts) -> bool {
    request.method == Method::OPTIONS
        && request.headers.contains_key(ORIGIN)
        && request.headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
}
