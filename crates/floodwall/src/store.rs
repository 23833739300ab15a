//! The one interface every store implements.

use std::fmt;
use std::future::Future;

use floodwall_core::Policy;

use crate::error::StoreError;
use crate::verdict::Verdict;

/// Shared rate-limit state: decides requests atomically per client key.
///
/// Every method takes several policies for one client key and treats them as one unit: a request
/// is admitted only if every enforced ([`Mode::Enforce`](floodwall_core::Mode)) policy admits it,
/// and then each policy that admitted consumes; otherwise none consumes. Shadow policies are
/// decided and reported but never deny. Implementations must be exact under concurrency: no
/// interleaving of calls, from any number of tasks or instances, admits more than the policies
/// allow.
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Decides a request of `cost` units for `key` and consumes if admitted. `cost == 0` peeks.
    ///
    /// # Errors
    ///
    /// [`StoreError::Cost`] when a policy can never admit `cost`; other variants when the store
    /// could not decide.
    fn acquire(
        &self,
        policies: &[Policy],
        key: &[u8],
        cost: u64,
    ) -> impl Future<Output = Result<Verdict, StoreError>> + Send;

    /// Reports whether one more unit would be admitted for `key`, consuming nothing.
    ///
    /// # Errors
    ///
    /// As [`acquire`](Store::acquire).
    fn peek(
        &self,
        policies: &[Policy],
        key: &[u8],
    ) -> impl Future<Output = Result<Verdict, StoreError>> + Send;

    /// Forgets the state of `key` under each policy: its next request starts with a full quota.
    ///
    /// # Errors
    ///
    /// When the store could not be reached.
    fn reset(
        &self,
        policies: &[Policy],
        key: &[u8],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}
