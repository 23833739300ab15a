//! Shares of a (policy, key)'s rate among proxies, in process: the same rule as the Redis
//! script, for a service whose instances do not share a store.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use floodwall_core::key::client_tag;
use floodwall_core::quota::{Capacity, Quota, ReporterId, Share, Usage};
use floodwall_core::{Policy, ceil_micros};

use super::MemoryStore;
use crate::error::StoreError;

/// The shares of every (policy, key) proxies report on, at most `max` of them.
#[derive(Debug)]
pub(super) struct Quotas {
    /// By the policy's name hash and the client's tag (long or odd keys digested, as on Redis).
    table: Mutex<HashMap<(u64, String), Quota>>,
    max: usize,
}

impl Quotas {
    pub(super) fn new(max: usize) -> Self {
        Quotas {
            table: Mutex::default(),
            max: max.max(1),
        }
    }
}

impl MemoryStore {
    /// Takes `reporter`'s report of `usage` on the shares of `policy`'s rate for `key`, and
    /// grants it a share for `ttl` ([`Quota::report`], on the store's clock). At most a quarter
    /// of `max_keys` (policy, key) pairs are tracked: when that many have live shares, a new
    /// pair's reporter is granted nothing until some lapse.
    ///
    /// # Errors
    ///
    /// [`StoreError::Config`] for a policy that cannot be shared (see [`Capacity::of`]).
    pub async fn report_quota(
        &self,
        policy: &Policy,
        key: &[u8],
        reporter: ReporterId,
        usage: Usage,
        ttl: Duration,
    ) -> Result<Share, StoreError> {
        let capacity = Capacity::of(policy)?;
        let quotas = &self.inner.quotas;
        let id = (policy.name_hash(), client_tag(key).into_owned());
        let mut table = quotas.table.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.inner.clock.now_us();
        if !table.contains_key(&id) && table.len() >= quotas.max {
            table.retain(|_, quota| quota.expires_us() > now);
            if table.len() >= quotas.max {
                return Ok(Share::default());
            }
        }
        let quota = table.entry(id).or_default();
        Ok(quota.report(reporter, usage, now, capacity, ceil_micros(ttl)))
    }
}
