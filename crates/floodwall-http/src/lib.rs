//! Rate limiting for tower and axum services, on a [`floodwall::Limiter`]: the Rust form of a
//! `@rate_limit` decorator.
//!
//! - [`RateLimitLayer`] checks one or more policies per request, keyed by a
//!   [`KeyExtractor`](key::KeyExtractor) ([`ClientIp`](key::ClientIp) by default, or an API key
//!   header, a query parameter, an authenticated user, a composite, a closure).
//! - Allowed requests reach the inner service and carry the rate-limit headers
//!   ([`HeaderMode`]); denied ones get 429 with `Retry-After` and an RFC 9457 problem+json body of
//!   type `quota-exceeded`; a store outage under `on_error = "deny"` gets 503
//!   `temporary-reduced-capacity`, never a 429.
//!
//! Decisions are counted in `floodwall_decisions_total{policy, outcome}` through the `metrics`
//! facade (install a recorder before building layers); shadow policies show up there as
//! `shadow_denied` and in the headers, never as a denial.
//!
//! Several layers stack (per second *and* per day, each counted on its own), and one layer with
//! several policies checks them together, all-or-nothing, in one store call.

mod headers;
mod held;
pub mod key;
mod layer;
mod metrics;
pub mod problem;
mod reply;
mod service;

pub use headers::{
    HeaderMode, RATELIMIT, RATELIMIT_POLICY, RateLimitHeaders, X_RATELIMIT_LIMIT,
    X_RATELIMIT_REMAINING, X_RATELIMIT_RESET, retry_after_seconds,
};
pub use held::HeldBody;
pub use layer::{RateLimitLayer, RateLimitLayerBuilder, is_cors_preflight};
pub use metrics::{
    CountedAs, DECISIONS_TOTAL, DecisionCounters, PolicyCounters, SETTLES_TOTAL, SettleCounters,
};
pub use problem::{QUOTA_EXCEEDED, TEMPORARY_REDUCED_CAPACITY};
pub use reply::{EnvoyAnswer, Reply};
pub use service::{RateLimit, RateLimitBody, ResponseFuture};

/// The README's examples (the library's and this crate's), compiled and run as doc tests here,
/// where both crates are in reach.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
