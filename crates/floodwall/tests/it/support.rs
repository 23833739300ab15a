//! Deciding through a store directly, as the limiter does, for the tests that exercise stores:
//! a check of (policies, key, cost) in, a verdict paired with those policies out.

use floodwall::{Check, MemoryStore, Policy, Store, StoreError, Verdict};

/// The store calls with a cost every policy can admit; a cost that cannot pass is the limiter's
/// concern, tested where `Check` is built.
pub(crate) trait StoreExt: Store {
    /// [`Store::acquire`] of `cost` units for `key` under `policies`.
    async fn check(
        &self,
        policies: &[Policy],
        key: &[u8],
        cost: u64,
    ) -> Result<Verdict, StoreError> {
        let check = Check::new(policies, key, cost).expect("a cost every policy admits");
        let answer = self.acquire(&check).await?;
        Ok(Verdict::from_answer(policies, answer))
    }

    /// A peek: [`StoreExt::check`] of cost 0.
    async fn look(&self, policies: &[Policy], key: &[u8]) -> Result<Verdict, StoreError> {
        self.check(policies, key, 0).await
    }

    /// [`Store::reset`] of `key` under `policies`.
    async fn forget(&self, policies: &[Policy], key: &[u8]) -> Result<(), StoreError> {
        let check = Check::new(policies, key, 0).expect("a peek is always a valid check");
        self.reset(&check).await
    }
}

impl<S: Store> StoreExt for S {}

/// [`MemoryStore::acquire_sync`] of `cost` units for `key` under `policies`.
pub(crate) fn check_sync(
    store: &MemoryStore,
    policies: &[Policy],
    key: &[u8],
    cost: u64,
) -> Verdict {
    let check = Check::new(policies, key, cost).expect("a cost every policy admits");
    Verdict::from_answer(policies, store.acquire_sync(&check))
}
