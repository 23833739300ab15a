//! Configured routes: matched in file order, each behind its own rate-limit layer, answered
//! with a fixed response or forwarded to an upstream. Anything unmatched is a 404 problem.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use floodwall::Limiter;
use floodwall_http::RateLimitLayer;
use floodwall_http::key::{ClientIp, Global, Header, KeyExtractor, Query};
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderValue, Method, Uri};
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

use crate::config::{Config, KeyPart, PathMatch, RouteAction, RouteMatch};
use crate::decision_log::{DecisionLog, PerSecond};
use crate::error::ApiError;
use crate::pool::UpstreamPool;
use crate::proxy;
use crate::telemetry::{DecisionWatch, RouteInstruments, UNMATCHED_ROUTE};

type RouteService = BoxCloneSyncService<Request, Response, Infallible>;

/// The routes, in match order.
#[derive(Clone)]
pub(crate) struct RouteTable {
    routes: Arc<Vec<Route>>,
    /// The answers to requests no route takes.
    unmatched: Arc<RouteInstruments>,
}

/// One route: which requests, what keys them, and the limited service that answers them.
struct Route {
    matcher: RouteMatch,
    key: Vec<KeyPart>,
    service: RouteService,
    instruments: Arc<RouteInstruments>,
}

impl std::fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteTable")
            .field("routes", &self.routes.len())
            .finish()
    }
}

impl RouteMatch {
    /// The route as its `match` is written (`GET /api/*`): its label in metrics and logs.
    pub(crate) fn label(&self) -> String {
        let method = self.method.as_ref().map_or("*", Method::as_str);
        match &self.path {
            PathMatch::Exact(path) => format!("{method} {path}"),
            PathMatch::Prefix(prefix) => format!("{method} {prefix}*"),
        }
    }

    fn matches(&self, request: &Request) -> bool {
        if self.method.as_ref().is_some_and(|m| m != request.method()) {
            return false;
        }
        let path = request.uri().path();
        match &self.path {
            PathMatch::Exact(exact) => path == exact,
            // `/api/*` takes `/api` itself and everything under `/api/`.
            PathMatch::Prefix(prefix) => {
                path.starts_with(prefix.as_str()) || path == prefix.trim_end_matches('/')
            }
        }
    }
}

/// The key extractor of a route.
fn key_extractor(parts: &[KeyPart], config: &Config) -> Box<dyn KeyExtractor> {
    let one = |part: &KeyPart| -> Box<dyn KeyExtractor> {
        match part {
            KeyPart::Ip => Box::new(
                ClientIp::new()
                    .trusted_proxies(config.server.trusted_proxies.iter().copied())
                    .ipv6_prefix(config.server.ipv6_prefix),
            ),
            KeyPart::Header(name) => Box::new(Header::new(name.clone())),
            KeyPart::Query(name) => Box::new(Query::new(name.clone())),
            KeyPart::Global => Box::new(Global),
        }
    };
    let mut parts = parts.iter();
    let first = parts
        .next()
        .map_or_else(|| Box::new(Global) as Box<dyn KeyExtractor>, one);
    parts.fold(first, |key, part| Box::new((key, one(part))))
}

impl RouteTable {
    pub(crate) fn new(config: &Config, limiter: &Limiter) -> Self {
        let mut pools: HashMap<&Uri, UpstreamPool> = HashMap::new();
        let decision_log = DecisionLog::new(&config.log).map(Arc::new);
        let routes = config
            .routes
            .iter()
            .map(|route| {
                let label: Arc<str> = Arc::from(route.matcher.label());
                let instruments = Arc::new(RouteInstruments::new(&label));
                let handler: RouteService = match &route.action {
                    RouteAction::Respond { status, body } => {
                        let (status, body) = (*status, body.clone());
                        BoxCloneSyncService::new(tower::service_fn(move |_request: Request| {
                            let body = body.clone();
                            async move {
                                let mut response = Response::new(Body::from(body));
                                *response.status_mut() = status;
                                response.headers_mut().insert(
                                    CONTENT_TYPE,
                                    HeaderValue::from_static("application/json"),
                                );
                                Ok::<_, Infallible>(response)
                            }
                        }))
                    }
                    RouteAction::Upstream { uri, timeout } => {
                        let pool = pools
                            .entry(uri)
                            .or_insert_with(|| UpstreamPool::new(uri))
                            .clone();
                        let upstream = proxy::Upstream {
                            pool,
                            timeout: *timeout,
                            target: uri.clone(),
                            route: Arc::clone(&label),
                            warnings: Arc::new(PerSecond::new(1)),
                        };
                        BoxCloneSyncService::new(tower::service_fn(move |request: Request| {
                            proxy::forward(upstream.clone(), request)
                        }))
                    }
                };
                let mut policies = route
                    .policies
                    .iter()
                    .filter_map(|name| config.policy(name).cloned());
                let service: RouteService = match policies.next() {
                    Some(first) => {
                        let cost = route.cost;
                        let mut builder = policies
                            .fold(RateLimitLayer::builder(limiter.clone(), first), |b, p| {
                                b.policy(p)
                            });
                        if let Some(header) = &route.settle_from {
                            builder = builder.settle_from(header.clone());
                        }
                        let layer = builder
                            .cost(move |_| cost)
                            .key(key_extractor(&route.key, config))
                            .screen_clients(client_ip(config))
                            .headers(config.server.headers)
                            .observer(Arc::new(DecisionWatch::new(
                                Arc::clone(&label),
                                Arc::clone(&instruments),
                                decision_log.clone(),
                            )))
                            .build();
                        BoxCloneSyncService::new(
                            tower::Layer::layer(&layer, handler)
                                .map_response(IntoResponse::into_response),
                        )
                    }
                    None => screened_only(handler, limiter.clone(), client_ip(config)),
                };
                Route {
                    matcher: route.matcher.clone(),
                    key: route.key.clone(),
                    service,
                    instruments,
                }
            })
            .collect();
        RouteTable {
            routes: Arc::new(routes),
            unmatched: Arc::new(RouteInstruments::new(UNMATCHED_ROUTE)),
        }
    }
}

/// Who the client is, for the allow and deny lists: the address the trusted proxies vouch for.
fn client_ip(config: &Config) -> ClientIp {
    ClientIp::new().trusted_proxies(config.server.trusted_proxies.iter().copied())
}

/// A route without policies still refuses deny-listed clients (403); nothing else is checked.
fn screened_only(handler: RouteService, limiter: Limiter, client: ClientIp) -> RouteService {
    BoxCloneSyncService::new(tower::service_fn(move |request: Request| {
        let (parts, body) = request.into_parts();
        let denied = client.screen(&limiter, &parts) == Some(floodwall::List::Deny);
        let request = Request::from_parts(parts, body);
        let handler = handler.clone();
        async move {
            if denied {
                return Ok(floodwall_http::problem::deny_listed().into_response());
            }
            handler.oneshot(request).await
        }
    }))
}

/// Answers a request with the first matching route, or 404. The route is chosen by the
/// normalised path, and that path is what the route limits and forwards.
pub(crate) async fn dispatch(State(table): State<RouteTable>, request: Request) -> Response {
    let request = match canonical(request) {
        Ok(request) => request,
        Err(error) => return counted(&table.unmatched, error.into_response()),
    };
    let Some(route) = table.routes.iter().find(|r| r.matcher.matches(&request)) else {
        let refused = ApiError::NoRoute {
            method: request.method().clone(),
            path: request.uri().path().to_owned(),
        };
        return counted(&table.unmatched, refused.into_response());
    };
    if let Err(error) = unambiguous_key(&route.key, &request) {
        return counted(&route.instruments, error.into_response());
    }
    match route.service.clone().oneshot(request).await {
        Ok(response) => counted(&route.instruments, response),
        Err(infallible) => match infallible {},
    }
}

fn counted(instruments: &RouteInstruments, response: Response) -> Response {
    instruments.answered(response.status());
    response
}

/// `request` in the one form routes see: one `Host` (an absolute-form URI's authority replaces
/// the header), an origin-form URI, and a normalised path; or why it cannot be put so.
fn canonical(mut request: Request) -> Result<Request, ApiError> {
    if request.headers().get_all(HOST).iter().nth(1).is_some() {
        return Err(ApiError::Ambiguous("the Host header".to_owned()));
    }
    let uri = request.uri();
    let path = crate::path::normalize(uri.path()).map_err(ApiError::BadPath)?;
    let authority = uri.authority().cloned();
    let changed = matches!(path, std::borrow::Cow::Owned(_)) || authority.is_some();
    if changed {
        let path_and_query = match uri.query() {
            Some(query) => format!("{path}?{query}"),
            None => path.into_owned(),
        };
        let origin = Uri::try_from(path_and_query)
            .map_err(|_| ApiError::BadPath(crate::path::PathError::MalformedEscape))?;
        if let Some(authority) = authority
            && let Ok(host) = HeaderValue::from_str(authority.as_str())
        {
            request.headers_mut().insert(HOST, host);
        }
        *request.uri_mut() = origin;
    }
    Ok(request)
}

/// Refuses a request that gives a header or query parameter its route is keyed on more than
/// once: keying on one value while the upstream reads another would let a client choose whose
/// quota it spends.
fn unambiguous_key(key: &[KeyPart], request: &Request) -> Result<(), ApiError> {
    for part in key {
        match part {
            KeyPart::Header(name) if request.headers().get_all(name).iter().nth(1).is_some() => {
                return Err(ApiError::Ambiguous(format!("the {name} header")));
            }
            KeyPart::Query(name) => {
                let query = request.uri().query().unwrap_or_default().as_bytes();
                let given = form_urlencoded::parse(query)
                    .filter(|(parameter, _)| parameter == name)
                    .count();
                if given > 1 {
                    return Err(ApiError::Ambiguous(format!("the query parameter {name}")));
                }
            }
            _ => {}
        }
    }
    Ok(())
}
