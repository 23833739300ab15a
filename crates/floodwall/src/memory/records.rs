//! One-time records in process (a reservation kept for a later settle): each kept until taken
//! or expired, at most `max` at once, so no flood of reservations can grow memory.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::MemoryStore;
use crate::error::StoreError;
use crate::store::ControlStore;

/// The records, by name, with the time (µs on the store's clock) each expires.
#[derive(Debug)]
pub(super) struct Records {
    held: Mutex<HashMap<String, (Vec<u8>, u64)>>,
    max: usize,
}

impl Records {
    pub(super) fn new(max: usize) -> Self {
        Records {
            held: Mutex::new(HashMap::new()),
            max,
        }
    }
}

/// The memory store shares nothing with other processes: the controls live in the process,
/// and so do the records.
impl ControlStore for MemoryStore {
    async fn put_record(&self, name: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let now = self.inner.clock.now_us();
        let expires = now.saturating_add(u64::try_from(ttl.as_micros()).unwrap_or(u64::MAX));
        let records = &self.inner.records;
        let mut held = records.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.len() >= records.max && !held.contains_key(name) {
            held.retain(|_, (_, expiry)| *expiry > now);
            if held.len() >= records.max {
                return Err(StoreError::Config {
                    detail: format!(
                        "the memory store keeps at most {} records (max_keys) at once, and all are in use",
                        records.max
                    ),
                });
            }
        }
        held.insert(name.to_owned(), (value.to_vec(), expires));
        Ok(())
    }

    async fn take_record(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let now = self.inner.clock.now_us();
        let mut held = self
            .inner
            .records
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        Ok(held
            .remove(name)
            .filter(|(_, expiry)| *expiry > now)
            .map(|(value, _)| value))
    }
}
