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

/// The shares of every (policy, key) proxies report on: at most `max` reporters' shares in all,
/// whatever the number of pairs and of proxies.
#[derive(Debug)]
pub(super) struct Quotas {
    table: Mutex<Table>,
    max: usize,
}

#[derive(Debug, Default)]
struct Table {
    /// By the policy's name hash and the client's tag (long or odd keys digested, as on Redis).
    pairs: HashMap<(u64, String), Quota>,
    /// Reporters' shares held in all the pairs.
    reporters: usize,
}

impl Table {
    /// Forgets every share that has expired at `now`, and the pairs left without one.
    fn sweep(&mut self, now: u64) {
        self.pairs.retain(|_, quota| {
            quota.expire(now);
            !quota.reporters().is_empty()
        });
        self.reporters = self.pairs.values().map(|q| q.reporters().len()).sum();
    }
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
    /// of `max_keys` reporters' shares are held in all: past that, a reporter not yet known is
    /// granted nothing until some lapse.
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
        let known = table
            .pairs
            .get(&id)
            .is_some_and(|quota| quota.reporters().iter().any(|r| r.id == reporter));
        if !known && table.reporters >= quotas.max {
            table.sweep(now);
            if table.reporters >= quotas.max {
                return Ok(Share::default());
            }
        }
        let table = &mut *table;
        let quota = table.pairs.entry(id).or_default();
        let before = quota.reporters().len();
        let share = quota.report(reporter, usage, now, capacity, ceil_micros(ttl));
        let after = quota.reporters().len();
        table.reporters = (table.reporters + after).saturating_sub(before);
        Ok(share)
    }
}
