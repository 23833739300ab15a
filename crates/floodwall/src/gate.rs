//! The gate every front end decides a request through: the HTTP layer, the check API, Envoy's
//! RLS and the Python package parse their request into a [`Check`], pass it here, and render
//! the [`Passage`] they get back. What a decision involves beyond the limiter's verdict is done
//! here once:
//!
//! - the caller is counted as abandoned if it leaves before its answer
//!   ([`Limiter::caller`]);
//! - the check is decided, or its in-flight units held until the response is done;
//! - it is answered by the caller's deadline when it has one, per `on_error`;
//! - the time the decision took is measured, and the front end's [`Observer`]s are told of the
//!   decision (its counters, histogram and decision log);
//! - a sampled decision runs in a span of its own ([`crate::trace`]);
//! - after the response, the refund rule says which pairs a refund may give back.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{CheckError, Error};
use crate::lease::{LeaseGuard, new_holder};
use crate::limiter::Limiter;
pub use crate::limiter::{Caller, Front};
use crate::store::Check;
use crate::trace::{self, DecisionSpan};
use crate::verdict::Verdict;

/// How one front end passes its checks through a limiter.
#[derive(Clone)]
pub struct Gate {
    limiter: Limiter,
    front: Front,
    observers: Arc<[Arc<dyn Observer>]>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("front", &self.front)
            .field("observers", &self.observers.len())
            .finish_non_exhaustive()
    }
}

/// What watches a gate's decisions without changing them: counters, histograms, decision logs.
/// It is told of every check the gate decides, once, after the store answered and before the
/// front end renders the answer; a check that could not be built is not a decision and is
/// not told.
pub trait Observer: Send + Sync + 'static {
    /// One decision.
    fn decided(&self, decision: &Observed<'_, '_>);
}

/// One decision of a gate, as its [`Observer`]s see it.
#[derive(Debug)]
#[non_exhaustive]
pub struct Observed<'a, 'c> {
    /// The pairs decided and the units each asked for.
    pub check: &'a Check<'c>,
    /// The verdict, or why there is none (the store failed and a policy fails closed).
    pub outcome: Result<&'a Verdict, &'a Error>,
    /// Whether the request was let through: allowed, and not only judged
    /// ([`Passing::judged_only`]).
    pub admitted: bool,
    /// How long the decision took: the limiter's call, nothing else.
    pub took: Duration,
}

/// What a check asks of the gate beyond its pairs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Passing {
    /// Hold the in-flight units of `concurrency` pairs until the [`Passage`]'s guard is dropped
    /// or released, rather than until they time out.
    pub hold: bool,
    /// Answer by then, per `on_error`, whatever the store does.
    pub deadline: Option<Instant>,
    /// The check only asks whether its pairs are within their limits (it consumes nothing,
    /// or its answer is overruled): an allowed verdict is not an admission.
    pub judged_only: bool,
}

/// What the gate decided for one check: owned, so a front end can keep it while it renders,
/// forwards, or waits for the response.
#[derive(Debug)]
#[must_use]
pub struct Passage {
    outcome: Result<Verdict, Error>,
    held: Option<LeaseGuard>,
    /// When the decision was asked for: a refund's clock starts here, the earliest it can.
    asked_at: Instant,
    took: Duration,
}

impl Gate {
    /// The gate of `front` onto `limiter`, observed by no one.
    pub fn new(limiter: Limiter, front: Front) -> Self {
        Gate {
            limiter,
            front,
            observers: Arc::new([]),
        }
    }

    /// This gate, with `observer` told of each decision after the observers it has.
    #[must_use]
    pub fn observed_by(self, observer: Arc<dyn Observer>) -> Self {
        let observers = self.observers.iter().cloned();
        Gate {
            observers: observers.chain([observer]).collect(),
            ..self
        }
    }

    /// The limiter behind the gate.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// Decides `check` as `passing` says. A check that could not be built (a cost no policy
    /// admits) passes as its error, as the limiter's own checks answer it. The caller counts
    /// from this call: a future dropped before it is first polled is a caller gone too.
    pub fn pass(
        &self,
        check: Result<Check<'_>, CheckError>,
        passing: Passing,
    ) -> impl Future<Output = Passage> + Send {
        let caller = self.limiter.caller(self.front);
        async move { self.decide(check, passing, caller).await }
    }

    async fn decide(
        &self,
        check: Result<Check<'_>, CheckError>,
        passing: Passing,
        caller: Caller,
    ) -> Passage {
        let started = Instant::now();
        let check = match check {
            Ok(check) => check,
            Err(error) => {
                caller.answered();
                return Passage {
                    outcome: Err(error.into()),
                    held: None,
                    asked_at: started,
                    took: started.elapsed(),
                };
            }
        };
        // A held check gets its holder here, so that it is decided and observed as one.
        let check = match passing.hold {
            true => check.held_by(new_holder()),
            false => check,
        };
        let span = DecisionSpan::start(&check, self.front.as_str(), self.limiter.store().kind());
        let decided = async {
            match (passing.hold, passing.deadline) {
                (true, _) => match self.limiter.hold_as(&check).await {
                    Ok(lease) => {
                        let (verdict, held) = lease.split();
                        (Ok(verdict), held)
                    }
                    Err(error) => (Err(error), None),
                },
                (false, Some(deadline)) => (self.limiter.decide_by(&check, deadline).await, None),
                (false, None) => (self.limiter.decide(&check).await, None),
            }
        };
        let (outcome, held) = trace::within(span.span(), decided).await;
        caller.answered();
        let took = started.elapsed();
        span.finish(outcome.as_ref(), took);
        let observed = Observed {
            check: &check,
            outcome: outcome.as_ref(),
            admitted: !passing.judged_only && outcome.as_ref().is_ok_and(Verdict::allowed),
            took,
        };
        for observer in self.observers.iter() {
            observer.decided(&observed);
        }
        Passage {
            outcome,
            held,
            asked_at: started,
            took,
        }
    }
}

impl Passage {
    /// The verdict, or why there is none.
    pub fn outcome(&self) -> Result<&Verdict, &Error> {
        self.outcome.as_ref()
    }

    /// How long the decision took.
    pub fn took(&self) -> Duration {
        self.took
    }

    /// The guard of the in-flight units held for the request, when it was admitted holding
    /// some: the units go back when it is dropped.
    pub fn take_held(&mut self) -> Option<LeaseGuard> {
        self.held.take()
    }

    /// The verdict, or why there is none; the held units go back with this passage.
    pub fn into_outcome(self) -> Result<Verdict, Error> {
        self.outcome
    }

    /// When the decision was asked for.
    pub(crate) fn asked_at(&self) -> Instant {
        self.asked_at
    }

    /// The positions of the pairs a refund may give back now that the response is done:
    /// [`Verdict::refundable`] for the time since the decision was asked for. None when there
    /// is no verdict.
    pub fn refundable(&self) -> impl Iterator<Item = usize> + '_ {
        let served_in = self.asked_at.elapsed();
        self.outcome
            .as_ref()
            .ok()
            .into_iter()
            .flat_map(move |verdict| verdict.refundable(served_in))
    }
}
