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
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Uri};
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

use crate::config::{Config, KeyPart, PathMatch, RouteAction, RouteMatch};
use crate::error::ApiError;
use crate::pool::UpstreamPool;
use crate::proxy;

type RouteService = BoxCloneSyncService<Request, Response, Infallible>;

/// The routes, in match order.
#[derive(Clone)]
pub(crate) struct RouteTable {
    routes: Arc<Vec<(RouteMatch, RouteService)>>,
}

impl std::fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteTable")
            .field("routes", &self.routes.len())
            .finish()
    }
}

impl RouteMatch {
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
        let routes = config
            .routes
            .iter()
            .map(|route| {
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
                        let layer = policies
                            .fold(RateLimitLayer::builder(limiter.clone(), first), |b, p| {
                                b.policy(p)
                            })
                            .key(key_extractor(&route.key, config))
                            .headers(config.server.headers)
                            .build();
                        BoxCloneSyncService::new(
                            tower::Layer::layer(&layer, handler)
                                .map_response(IntoResponse::into_response),
                        )
                    }
                    None => BoxCloneSyncService::new(handler),
                };
                (route.matcher.clone(), service)
            })
            .collect();
        RouteTable {
            routes: Arc::new(routes),
        }
    }
}

/// Answers a request with the first matching route, or 404.
pub(crate) async fn dispatch(State(table): State<RouteTable>, request: Request) -> Response {
    let Some((_, service)) = table.routes.iter().find(|(m, _)| m.matches(&request)) else {
        return ApiError::NoRoute {
            method: request.method().clone(),
            path: request.uri().path().to_owned(),
        }
        .into_response();
    };
    match service.clone().oneshot(request).await {
        Ok(response) => response,
        Err(infallible) => match infallible {},
    }
}
