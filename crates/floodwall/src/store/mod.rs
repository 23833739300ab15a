//! The store protocol: the one interface every store implements ([`Store`]), the question it
//! is asked ([`Check`]) and what it answers ([`Answer`]). Stores depend on this module, never
//! on the limiter above them.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use floodwall_core::{Clock, SystemClock};

mod answer;
mod check;
mod controls;

/// A store of the user's own, as [`Storage::plugged`](crate::Storage::plugged) holds it.
pub use crate::storage::PluggedStore;
pub use answer::{Answer, Source};
pub(crate) use check::OwnedCheck;
pub use check::{Charge, Check};
pub use controls::{ControlField, ControlStore, VERSION_FIELD};

use crate::error::StoreError;

/// Shared rate-limit state: decides checks atomically.
///
/// A [`Check`] is decided as one unit: it is admitted only if every enforced
/// ([`Mode::Enforce`](floodwall_core::Mode)) policy admits it for its key, and then each pair
/// whose policy admitted consumes; otherwise none consumes. Shadow policies are decided and
/// reported but never deny. Implementations must be exact under concurrency: no interleaving of
/// calls, from any number of tasks or instances, admits more than the policies allow.
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Decides `check` and consumes if admitted. A cost of 0 peeks: reports whether one more
    /// unit would be admitted, consuming nothing.
    ///
    /// # Errors
    ///
    /// When the store could not decide (unreachable, too slow, full).
    fn decide(&self, check: &Check<'_>) -> impl Future<Output = Result<Answer, StoreError>> + Send;

    /// Gives back `check`'s cost under each pair, as if an admission of it had not happened,
    /// never past a full quota. Answers the state after the refund (allowed, no retry).
    ///
    /// # Errors
    ///
    /// When the store could not be reached; the refund may or may not have happened.
    fn refund(&self, check: &Check<'_>) -> impl Future<Output = Result<Answer, StoreError>> + Send;

    /// Charges each pair of `charge` its cost whatever is left (a cost known only after the
    /// answer): past zero a key owes the rest, up to its policy's `max_debt`, and is denied
    /// until refill or the next window has paid it. Never denied; answers the state after the
    /// charge, with each key's debt. The default refuses: a store of one's own charges only
    /// once it implements this.
    ///
    /// # Errors
    ///
    /// When the store could not be reached (the charge may or may not have happened), or
    /// cannot charge at all.
    fn debit(
        &self,
        charge: &Charge<'_>,
    ) -> impl Future<Output = Result<Answer, StoreError>> + Send {
        let _ = charge;
        async {
            Err(StoreError::Config {
                detail: "this store cannot charge a cost after the answer: implement Store::debit"
                    .to_owned(),
            })
        }
    }

    /// Forgets the state of each pair: its next request starts with a full quota.
    ///
    /// # Errors
    ///
    /// When the store could not be reached.
    fn reset(&self, check: &Check<'_>) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Gives back what [`Check::holder`] holds under each `concurrency` pair of `check` (rate
    /// pairs spent their units and are left alone). Releasing what is no longer held (released
    /// before, or timed out) does nothing.
    ///
    /// # Errors
    ///
    /// When the store could not be reached; the units then go back when they time out.
    fn release(&self, check: &Check<'_>) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Does what [`Store::release`] does at once, when the store can without waiting (a store
    /// in process), and says so; `false` (the default) when it must be asked. A caller that
    /// cannot wait (a value being dropped) releases in place when it can, else on a task.
    fn release_in_place(&self, check: &Check<'_>) -> bool {
        let _ = check;
        false
    }

    /// The wall clock the store decides by. The limiter reads the same one for what it keeps
    /// beside the store (blocks, offenders, the local fallback), so that one injected clock
    /// drives all of it. The system's by default.
    fn clock(&self) -> Arc<dyn Clock> {
        Arc::new(SystemClock::new())
    }
}

/// Waits until the tasks `detached` tracks have ended, or until `within` has passed; whether
/// they all ended. A store runs there what must finish after its caller left (a give-back, a
/// release of a dropped lease); a stopping service waits for them.
pub(crate) async fn quiesce_detached(
    detached: &tokio_util::task::TaskTracker,
    within: std::time::Duration,
) -> bool {
    // Closed only while waiting, so that work keeps being tracked afterwards.
    detached.close();
    let quiet = tokio::time::timeout(within, detached.wait()).await.is_ok();
    detached.reopen();
    quiet
}
