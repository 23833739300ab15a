//! A store of the user's own behind `Storage::plugged`: the limiter decides through it as
//! through the built-in ones (blocks, offenders, `on_error`, leases released on drop and
//! waited for), and a store that keeps the controls record shares blocks between instances.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use floodwall::store::{Answer, Check, ControlField, ControlStore, Store, VERSION_FIELD};
use floodwall::{
    Algorithm, Error, Limiter, MemoryStore, OnError, Policy, Source, Storage, StoreError,
};

fn per_minute(limit: u64) -> Policy {
    Policy::new(
        "plugged",
        Algorithm::FixedWindow,
        limit,
        Duration::from_secs(60),
    )
    .unwrap()
}

/// A controls record: its version and its fields.
type Record = (u64, BTreeMap<Vec<u8>, Vec<u8>>);

/// A memory store that counts the decisions it is asked for, releases only when asked (never
/// in place, as a remote store would) and keeps a controls record shared by its clones.
#[derive(Debug, Clone, Default)]
struct Tally {
    inner: MemoryStore,
    decisions: Arc<AtomicUsize>,
    record: Arc<Mutex<Record>>,
}

impl Store for Tally {
    async fn decide(&self, check: &Check<'_>) -> Result<Answer, StoreError> {
        self.decisions.fetch_add(1, Ordering::Relaxed);
        self.inner.decide(check).await
    }

    async fn refund(&self, check: &Check<'_>) -> Result<Answer, StoreError> {
        self.inner.refund(check).await
    }

    async fn reset(&self, check: &Check<'_>) -> Result<(), StoreError> {
        self.inner.reset(check).await
    }

    async fn release(&self, check: &Check<'_>) -> Result<(), StoreError> {
        // As far away as a remote store: the release is still on its way when the guard goes.
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.inner.release(check).await
    }
}

impl ControlStore for Tally {
    async fn controls_version(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let record = self.record.lock().unwrap();
        Ok(Some(record.0.to_string().into_bytes()))
    }

    async fn read_controls(&self) -> Result<Vec<ControlField>, StoreError> {
        let record = self.record.lock().unwrap();
        let version = (VERSION_FIELD.to_vec(), record.0.to_string().into_bytes());
        Ok(record.1.clone().into_iter().chain([version]).collect())
    }

    async fn write_controls(
        &self,
        set: Option<ControlField>,
        remove: Option<Vec<u8>>,
    ) -> Result<(), StoreError> {
        let mut record = self.record.lock().unwrap();
        if let Some((field, value)) = set {
            record.1.insert(field, value);
        }
        if let Some(field) = remove {
            record.1.remove(&field);
        }
        record.0 += 1;
        Ok(())
    }
}

/// A store that is always down; it keeps no controls record.
#[derive(Debug)]
struct Down;

impl Store for Down {
    async fn decide(&self, _: &Check<'_>) -> Result<Answer, StoreError> {
        Err(StoreError::Timeout {
            after: Duration::from_millis(5),
        })
    }

    async fn refund(&self, check: &Check<'_>) -> Result<Answer, StoreError> {
        self.decide(check).await
    }

    async fn reset(&self, _: &Check<'_>) -> Result<(), StoreError> {
        Ok(())
    }

    async fn release(&self, _: &Check<'_>) -> Result<(), StoreError> {
        Ok(())
    }
}

impl ControlStore for Down {}

#[tokio::test]
async fn a_plugged_store_decides_every_check_the_limiter_does_not_answer_itself() {
    let store = Tally::default();
    let limiter = Limiter::new(Storage::plugged(store.clone()));
    let policy = per_minute(3);
    let mut admitted = 0;
    for _ in 0..5 {
        admitted += usize::from(limiter.check(&policy, "client", 1).await.unwrap().allowed());
    }
    assert_eq!(admitted, 3);
    assert_eq!(store.decisions.load(Ordering::Relaxed), 5);

    // A block is answered by the limiter, without asking the store.
    limiter
        .block(&policy, "other", Duration::from_secs(30), "test")
        .await
        .unwrap();
    let verdict = limiter.check(&policy, "other", 1).await.unwrap();
    assert!(!verdict.allowed());
    assert_eq!(verdict.source(), Source::Blocked);
    assert_eq!(store.decisions.load(Ordering::Relaxed), 5);
}

#[tokio::test]
async fn a_block_written_through_a_plugged_record_reaches_every_instance() {
    let store = Tally::default();
    let (first, second) = (
        Limiter::new(Storage::plugged(store.clone())),
        Limiter::new(Storage::plugged(store)),
    );
    let policy = per_minute(100);
    first
        .block(&policy, "abuser", Duration::from_secs(30), "test")
        .await
        .unwrap();
    assert!(second.check(&policy, "abuser", 1).await.unwrap().allowed());
    second.sync_controls().await.unwrap();
    let verdict = second.check(&policy, "abuser", 1).await.unwrap();
    assert_eq!(verdict.source(), Source::Blocked);
}

#[tokio::test]
async fn a_plugged_store_that_fails_is_answered_per_on_error() {
    let policy = per_minute(2);
    let open = Limiter::new(Storage::plugged(Down));
    let verdict = open.check(&policy, "k", 1).await.unwrap();
    assert!(verdict.allowed());
    assert_eq!(verdict.source(), Source::FailOpen);

    let closed = Limiter::builder(Storage::plugged(Down))
        .on_error(OnError::Deny)
        .build();
    let refused = closed.check(&policy, "k", 1).await;
    assert!(matches!(refused, Err(Error::StoreUnavailable { .. })));

    let local = Limiter::builder(Storage::plugged(Down))
        .on_error(OnError::Local)
        .build();
    let mut admitted = 0;
    for _ in 0..4 {
        let verdict = local.check(&policy, "k", 1).await.unwrap();
        assert_eq!(verdict.source(), Source::Local);
        admitted += usize::from(verdict.allowed());
    }
    assert_eq!(admitted, 2, "the local fallback enforces the limit exactly");
}

#[tokio::test]
async fn a_lease_dropped_on_a_plugged_store_is_released_before_quiesce_returns() {
    let limiter = Limiter::new(Storage::plugged(Tally::default()));
    let slots = Policy::new("slots", Algorithm::Concurrency, 1, Duration::from_secs(600)).unwrap();
    let lease = limiter.lease(&slots, "job").await.unwrap();
    assert!(lease.allowed());
    assert!(!limiter.check(&slots, "job", 1).await.unwrap().allowed());
    drop(lease);
    assert!(limiter.quiesce(Duration::from_secs(5)).await);
    let again = limiter.lease(&slots, "job").await.unwrap();
    assert!(again.allowed(), "the dropped lease's slot went back");
}
