//! Calls that own their outcome: each store call that takes something, or that a breaker
//! waits to hear from, runs on a task of its own, which its caller awaits.
//!
//! A caller may stop waiting at any moment (a client resets, a deadline passes, a task is
//! cancelled); the call does not stop with it. It runs to its answer or its own deadline, so:
//! - its breaker always hears how it went (a probe slot is never left taken, and a hung Redis
//!   behind callers who give up early opens the breaker like any other outage);
//! - in-flight units it admitted for a caller that is gone are given back at once;
//! - in-flight units a failed call may have taken (it timed out, or the connection broke after
//!   sending, and Redis may run it later) are given back too, since no lease will ever name them;
//! - a caller that left is counted ([`RedisStats::abandoned`](super::RedisStats)).
//!
//! The answer travels in a [`Delivery`] that undoes what it carries unless its caller takes it,
//! so there is no moment, not even between the answer's arrival and its reading, in which a
//! caller can leave with units nobody will release.
//!
//! Every such task is tracked, so that a stopping service can wait for them
//! ([`RedisStore::quiesce`]); the health check's `PING` runs on one too.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::RedisStore;
use super::script::Operation;
use crate::error::StoreError;
use crate::store::Answer;
use crate::store::{Check, OwnedCheck};

/// What a detached call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Job {
    /// A decision or a refund, by script.
    Run(Operation),
    /// Gives back what the check's holder holds.
    Release,
    /// Forgets the check's state.
    Reset,
}

/// Whether a call that failed with `error` may still have run on Redis (or run later).
fn may_have_run(error: &StoreError) -> bool {
    matches!(
        error,
        StoreError::Timeout { .. }
            | StoreError::Redis { .. }
            | StoreError::Reply { .. }
            | StoreError::NotReplicated { .. }
    )
}

/// An answer on its way to a caller. Dropped unread, it counts the caller as gone and gives
/// back the in-flight units it carries.
struct Delivery {
    answer: Option<Result<Answer, StoreError>>,
    store: RedisStore,
    /// What to give back if nobody reads the answer: an admitted check that holds units.
    undo: Option<OwnedCheck>,
}

impl Delivery {
    fn read(mut self) -> Result<Answer, StoreError> {
        self.undo = None;
        self.answer.take().unwrap_or_else(|| Err(ended()))
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if self.answer.take().is_some() {
            self.store.inner.abandoned.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(check) = self.undo.take() {
            self.store.give_back_later(check);
        }
    }
}

/// Why a caller got no answer: the call's task ended without one (the runtime is stopping).
pub(super) fn ended() -> StoreError {
    StoreError::Reply {
        detail: "the store call's task ended without an answer".to_owned(),
    }
}

impl RedisStore {
    /// Waits until every call still running for a caller that may be gone has ended (give-backs
    /// of abandoned or failed calls, releases of dropped leases), or until `within` has passed;
    /// returns whether they all ended. For a service that stops: what its last requests took is
    /// given back before it exits.
    pub async fn quiesce(&self, within: Duration) -> bool {
        crate::store::quiesce_detached(&self.inner.detached, within).await
    }

    /// Asks Redis whether it answers, past the circuit breakers, within the store's deadline:
    /// for a health check while a breaker is open (Redis may be back before the next probe
    /// closes it). At most one is in flight; others meanwhile get [`StoreError::CircuitOpen`].
    /// The breakers are left as they are: only decisions close them.
    ///
    /// # Errors
    ///
    /// Why Redis did not answer, or `CircuitOpen` while another ping is in flight.
    pub async fn ping(&self) -> Result<(), StoreError> {
        if self.inner.pinging.swap(true, Ordering::AcqRel) {
            return Err(self.inner.breakers.circuit_open());
        }
        let store = self.clone();
        // On a task of its own, so that the one ping's slot is freed whoever waits.
        let pinged = self.inner.detached.spawn(async move {
            let deadline = Instant::now() + store.inner.timeout;
            let cmd = ::redis::cmd("PING");
            let answered = store
                .until(deadline, async {
                    store.inner.connection.query(&cmd).await?;
                    Ok(())
                })
                .await;
            store.inner.pinging.store(false, Ordering::Release);
            answered
        });
        pinged
            .await
            .unwrap_or_else(|_| Err(self.inner.breakers.circuit_open()))
    }

    /// Runs `work` on a task that [`RedisStore::quiesce`] waits for.
    pub(crate) fn spawn_tracked(&self, work: impl Future<Output = ()> + Send + 'static) {
        self.inner.detached.spawn(work);
    }

    /// Runs `job` for `check` on a task of its own and waits for its answer. The caller may
    /// stop waiting at any time: see the module's documentation for what the call still does.
    pub(super) async fn detached(&self, check: &Check<'_>, job: Job) -> Result<Answer, StoreError> {
        let (deliver, delivered) = oneshot::channel::<Delivery>();
        let store = self.clone();
        let owned = OwnedCheck::of(check);
        self.inner.detached.spawn(async move {
            let check = owned.check();
            let answer = store.job(&check, job).await;
            let takes = job == Job::Run(Operation::Decide) && check.takes_held_units();
            let (held, failed) = match &answer {
                Ok(answer) => (takes && answer.allowed, false),
                Err(error) => (false, takes && may_have_run(error)),
            };
            let delivery = Delivery {
                answer: Some(answer),
                store: store.clone(),
                undo: held.then(|| owned.clone()),
            };
            // Unread, its drop counts the caller as gone and gives back what it holds.
            let _ = deliver.send(delivery);
            if failed {
                // The caller was told the store failed, so no lease names these units; the
                // call may still have taken them (or take them when Redis resumes).
                store.give_back(&check).await;
            }
        });
        match delivered.await {
            Ok(delivery) => delivery.read(),
            Err(_) => Err(ended()),
        }
    }

    async fn job(&self, check: &Check<'_>, job: Job) -> Result<Answer, StoreError> {
        let done = || Answer::from_store(true, smallvec::SmallVec::new());
        match job {
            Job::Run(operation) => self.run_direct(check, operation).await,
            Job::Release => {
                let deadline = Instant::now() + self.inner.timeout;
                self.release_held(check, true, deadline)
                    .await
                    .map(|()| done())
            }
            Job::Reset => self.reset_now(check).await.map(|()| done()),
        }
    }

    /// Gives back what `check`'s holder holds, on a task of its own.
    fn give_back_later(&self, check: OwnedCheck) {
        if tokio::runtime::Handle::try_current().is_err() {
            // No runtime (it is shutting down): the units time out instead.
            return;
        }
        let store = self.clone();
        self.inner.detached.spawn(async move {
            store.give_back(&check.check()).await;
        });
    }

    /// Gives back what `check`'s holder holds without asking the breaker (a release must reach
    /// Redis after the call it undoes, however unhealthy Redis looks), waiting for Redis at
    /// most until the units would have timed out anyway.
    pub(super) async fn give_back(&self, check: &Check<'_>) {
        let expiry = check.hold_timeout().unwrap_or(Duration::ZERO);
        let deadline = Instant::now() + expiry.max(self.inner.timeout);
        if self.release_held(check, false, deadline).await.is_ok() {
            self.inner.given_back.fetch_add(1, Ordering::Relaxed);
        }
    }
}
