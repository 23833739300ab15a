//! [`DecisionRecord`]: what a layer tells an observer about each decision it makes, for latency
//! histograms, decision logs and anything else that watches decisions without changing them.

use std::time::Duration;

use floodwall::{Error, Verdict};
use http::request::Parts;

/// One decision of a [`RateLimitLayer`](crate::RateLimitLayer), as an observer set with
/// [`observe`](crate::RateLimitLayerBuilder::observe) sees it: after the store answered and
/// before the request goes on.
#[derive(Debug)]
#[non_exhaustive]
pub struct DecisionRecord<'a> {
    /// The request's head.
    pub request: &'a Parts,
    /// The client key the request was counted against.
    pub key: &'a [u8],
    /// The units the request asked for.
    pub cost: u64,
    /// The verdict, or why there was none (the store failed and a policy fails closed, or the
    /// cost exceeds a policy's capacity).
    pub outcome: Result<&'a Verdict, &'a Error>,
    /// How long the decision took: the store call, nothing else.
    pub elapsed: Duration,
}

/// An observer of decisions.
pub(crate) type ObserveFn = dyn Fn(&DecisionRecord<'_>) + Send + Sync;
