//! A store of the user's own, as [`Storage::plugged`](super::Storage::plugged) holds it: any
//! [`Store`] that also implements [`ControlStore`], its calls boxed so that `Storage`, and the
//! `Limiter` that holds it, stay one type whatever the store (the built-in stores are not
//! boxed).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use floodwall_core::Clock;
use tokio_util::task::TaskTracker;

use crate::error::StoreError;
use crate::store::{Answer, Charge, Check, ControlField, ControlStore, Store};

type Boxed<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The store protocol with its futures boxed, for any store that implements it.
trait Erased: Send + Sync + fmt::Debug {
    fn decide<'a>(&'a self, check: &'a Check<'_>) -> Boxed<'a, Answer>;
    fn refund<'a>(&'a self, check: &'a Check<'_>) -> Boxed<'a, Answer>;
    fn debit<'a>(&'a self, charge: &'a Charge<'_>) -> Boxed<'a, Answer>;
    fn reset<'a>(&'a self, check: &'a Check<'_>) -> Boxed<'a, ()>;
    fn release<'a>(&'a self, check: &'a Check<'_>) -> Boxed<'a, ()>;
    fn release_in_place(&self, check: &Check<'_>) -> bool;
    fn clock(&self) -> Arc<dyn Clock>;
    fn controls_version(&self) -> Boxed<'_, Option<Vec<u8>>>;
    fn read_controls(&self) -> Boxed<'_, Vec<ControlField>>;
    fn write_controls(&self, set: Option<ControlField>, remove: Option<Vec<u8>>) -> Boxed<'_, ()>;
    fn put_record<'a>(&'a self, name: &'a str, value: &'a [u8], ttl: Duration) -> Boxed<'a, ()>;
    fn take_record<'a>(&'a self, name: &'a str) -> Boxed<'a, Option<Vec<u8>>>;
}

impl<S: Store + ControlStore> Erased for S {
    fn decide<'a>(&'a self, check: &'a Check<'_>) -> Boxed<'a, Answer> {
        Box::pin(Store::decide(self, check))
    }

    fn refund<'a>(&'a self, check: &'a Check<'_>) -> Boxed<'a, Answer> {
        Box::pin(Store::refund(self, check))
    }

    fn debit<'a>(&'a self, charge: &'a Charge<'_>) -> Boxed<'a, Answer> {
        Box::pin(Store::debit(self, charge))
    }

    fn reset<'a>(&'a self, check: &'a Check<'_>) -> Boxed<'a, ()> {
        Box::pin(Store::reset(self, check))
    }

    fn release<'a>(&'a self, check: &'a Check<'_>) -> Boxed<'a, ()> {
        Box::pin(Store::release(self, check))
    }

    fn release_in_place(&self, check: &Check<'_>) -> bool {
        Store::release_in_place(self, check)
    }

    fn clock(&self) -> Arc<dyn Clock> {
        Store::clock(self)
    }

    fn controls_version(&self) -> Boxed<'_, Option<Vec<u8>>> {
        Box::pin(ControlStore::controls_version(self))
    }

    fn read_controls(&self) -> Boxed<'_, Vec<ControlField>> {
        Box::pin(ControlStore::read_controls(self))
    }

    fn write_controls(&self, set: Option<ControlField>, remove: Option<Vec<u8>>) -> Boxed<'_, ()> {
        Box::pin(ControlStore::write_controls(self, set, remove))
    }

    fn put_record<'a>(&'a self, name: &'a str, value: &'a [u8], ttl: Duration) -> Boxed<'a, ()> {
        Box::pin(ControlStore::put_record(self, name, value, ttl))
    }

    fn take_record<'a>(&'a self, name: &'a str) -> Boxed<'a, Option<Vec<u8>>> {
        Box::pin(ControlStore::take_record(self, name))
    }
}

/// A store of the user's own, plugged into a [`Storage`](super::Storage).
#[derive(Clone)]
pub struct PluggedStore {
    store: Arc<dyn Erased>,
    /// Releases of leases dropped without a release, which [`PluggedStore::quiesce`] waits for.
    detached: TaskTracker,
}

impl fmt::Debug for PluggedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PluggedStore").field(&self.store).finish()
    }
}

impl PluggedStore {
    pub(super) fn new(store: impl Store + ControlStore) -> Self {
        PluggedStore {
            store: Arc::new(store),
            detached: TaskTracker::new(),
        }
    }

    /// Runs `work` on a task whose end [`PluggedStore::quiesce`] waits for.
    pub(crate) fn spawn_tracked(&self, work: impl Future<Output = ()> + Send + 'static) {
        self.detached.spawn(work);
    }

    /// Waits until the tracked tasks have ended or `within` has passed; whether they ended.
    pub(crate) async fn quiesce(&self, within: Duration) -> bool {
        crate::store::quiesce_detached(&self.detached, within).await
    }
}

impl Store for PluggedStore {
    async fn decide(&self, check: &Check<'_>) -> Result<Answer, StoreError> {
        self.store.decide(check).await
    }

    async fn refund(&self, check: &Check<'_>) -> Result<Answer, StoreError> {
        self.store.refund(check).await
    }

    async fn debit(&self, charge: &Charge<'_>) -> Result<Answer, StoreError> {
        self.store.debit(charge).await
    }

    async fn reset(&self, check: &Check<'_>) -> Result<(), StoreError> {
        self.store.reset(check).await
    }

    async fn release(&self, check: &Check<'_>) -> Result<(), StoreError> {
        self.store.release(check).await
    }

    fn release_in_place(&self, check: &Check<'_>) -> bool {
        self.store.release_in_place(check)
    }

    fn clock(&self) -> Arc<dyn Clock> {
        self.store.clock()
    }
}

impl ControlStore for PluggedStore {
    async fn controls_version(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.store.controls_version().await
    }

    async fn read_controls(&self) -> Result<Vec<ControlField>, StoreError> {
        self.store.read_controls().await
    }

    async fn write_controls(
        &self,
        set: Option<ControlField>,
        remove: Option<Vec<u8>>,
    ) -> Result<(), StoreError> {
        self.store.write_controls(set, remove).await
    }

    async fn put_record(&self, name: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        self.store.put_record(name, value, ttl).await
    }

    async fn take_record(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.store.take_record(name).await
    }
}
