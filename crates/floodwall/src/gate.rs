//! The gate every front end decides a request through: the HTTP layer, the check API, Envoy's
//! RLS and the Python package parse their request into a [`Check`], pass it here, and render
//! the [`Passage`] they get back. What a decision involves beyond the limiter's verdict is done
//! here once:
//!
//! - the caller is counted as abandoned if it leaves before its answer
//!   ([`Limiter::caller`]);
//! - the check is decided, or its in-flight units held until the response is done;
//! - it is answered by the caller's deadline when it has one, per `on_error`;
//! - the time the decision took is measured for the front end's histogram;
//! - after the response, the refund rule says which pairs a refund may give back.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{CheckError, Error};
use crate::lease::LeaseGuard;
use crate::limiter::{Caller, Front, Limiter};
use crate::store::Check;
use crate::verdict::Verdict;

/// How one front end passes its checks through a limiter.
#[derive(Debug, Clone)]
pub struct Gate {
    limiter: Limiter,
    front: Front,
}

/// What a check asks of the gate beyond its pairs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Passing {
    /// Hold the in-flight units of `concurrency` pairs until the [`Passage`]'s guard is dropped
    /// or released, rather than until they time out.
    pub hold: bool,
    /// Answer by then, per `on_error`, whatever the store does.
    pub deadline: Option<Instant>,
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
    /// The gate of `front` onto `limiter`.
    pub fn new(limiter: Limiter, front: Front) -> Self {
        Gate { limiter, front }
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
        let (outcome, held) = match (check, passing.hold, passing.deadline) {
            (Err(error), _, _) => (Err(error.into()), None),
            (Ok(check), true, _) => match self.limiter.hold(check).await {
                Ok(lease) => {
                    let (verdict, held) = lease.split();
                    (Ok(verdict), held)
                }
                Err(error) => (Err(error), None),
            },
            (Ok(check), false, Some(deadline)) => {
                (self.limiter.decide_by(&check, deadline).await, None)
            }
            (Ok(check), false, None) => (self.limiter.decide(&check).await, None),
        };
        caller.answered();
        Passage {
            outcome,
            held,
            asked_at: started,
            took: started.elapsed(),
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
