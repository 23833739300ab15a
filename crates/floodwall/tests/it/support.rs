//! Deciding through a store directly, as the limiter does, for the tests that exercise stores:
//! a check of (policies, key, cost) in, a verdict paired with those policies out.

use floodwall::{Check, Error, Lease, Limiter, MemoryStore, Policy, StoreError, Verdict};

use floodwall::store::Store;

/// The store calls with a cost every policy can admit; a cost that cannot pass is the limiter's
/// concern, tested where `Check` is built.
pub(crate) trait StoreExt: Store {
    /// [`Store::decide`] of `cost` units for `key` under `policies`.
    async fn check(
        &self,
        policies: &[Policy],
        key: &[u8],
        cost: u64,
    ) -> Result<Verdict, StoreError> {
        let check = Check::new(policies, key, cost).expect("a cost every policy admits");
        let answer = self.decide(&check).await?;
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

/// [`MemoryStore::decide_sync`] of `cost` units for `key` under `policies`.
pub(crate) fn check_sync(
    store: &MemoryStore,
    policies: &[Policy],
    key: &[u8],
    cost: u64,
) -> Verdict {
    let check = Check::new(policies, key, cost).expect("a cost every policy admits");
    Verdict::from_answer(policies, store.decide_sync(&check))
}

/// The shapes of checks the tests ask the limiter for, each built as a [`Check`] and passed to
/// the limiter's check verbs: what a front end does.
pub(crate) trait LimiterExt {
    /// [`Limiter::decide`] of several policies on one key.
    async fn check_all(
        &self,
        policies: &[Policy],
        key: impl AsRef<[u8]>,
        cost: u64,
    ) -> Result<Verdict, Error>;

    /// [`Limiter::decide`] of a key per policy.
    async fn check_each<K: AsRef<[u8]>>(
        &self,
        pairs: &[(&Policy, K)],
        cost: u64,
    ) -> Result<Verdict, Error>;

    /// [`Limiter::decide_by`] with a cost per pair.
    async fn check_weighted_by<K: AsRef<[u8]>>(
        &self,
        pairs: &[(&Policy, K, u64)],
        deadline: tokio::time::Instant,
    ) -> Result<Verdict, Error>;

    /// [`Limiter::hold`] of several policies on one key.
    async fn lease_all(
        &self,
        policies: &[Policy],
        key: impl AsRef<[u8]>,
        cost: u64,
    ) -> Result<Lease, Error>;

    /// [`Limiter::hold`] of a key per policy.
    async fn lease_each<K: AsRef<[u8]>>(
        &self,
        pairs: &[(&Policy, K)],
        cost: u64,
    ) -> Result<Lease, Error>;
}

impl LimiterExt for Limiter {
    async fn check_all(
        &self,
        policies: &[Policy],
        key: impl AsRef<[u8]>,
        cost: u64,
    ) -> Result<Verdict, Error> {
        self.decide(&Check::new(policies, key.as_ref(), cost)?)
            .await
    }

    async fn check_each<K: AsRef<[u8]>>(
        &self,
        pairs: &[(&Policy, K)],
        cost: u64,
    ) -> Result<Verdict, Error> {
        let check = Check::each(pairs.iter().map(|(p, k)| (*p, k.as_ref())), cost)?;
        self.decide(&check).await
    }

    async fn check_weighted_by<K: AsRef<[u8]>>(
        &self,
        pairs: &[(&Policy, K, u64)],
        deadline: tokio::time::Instant,
    ) -> Result<Verdict, Error> {
        let check = Check::weighted(pairs.iter().map(|(p, k, c)| (*p, k.as_ref(), *c)))?;
        self.decide_by(&check, deadline).await
    }

    async fn lease_all(
        &self,
        policies: &[Policy],
        key: impl AsRef<[u8]>,
        cost: u64,
    ) -> Result<Lease, Error> {
        self.hold(Check::new(policies, key.as_ref(), cost)?).await
    }

    async fn lease_each<K: AsRef<[u8]>>(
        &self,
        pairs: &[(&Policy, K)],
        cost: u64,
    ) -> Result<Lease, Error> {
        self.hold(Check::each(
            pairs.iter().map(|(p, k)| (*p, k.as_ref())),
            cost,
        )?)
        .await
    }
}
