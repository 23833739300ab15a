//! Shares of a (policy, key)'s rate among proxies (Envoy's rate-limit-quota filter), kept in
//! Redis so that every instance on the same server or cluster grants from one set of shares.

use std::sync::atomic::Ordering;
use std::time::Duration;

use floodwall_core::key::{client_tag, quota_key_for_tag};
use floodwall_core::quota::{self, Capacity, MAX_REPORTERS, ReporterId, Share, Usage};
use floodwall_core::{Policy, ceil_micros};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{RedisStore, detached, reply, run_script, script, slot_of};
use crate::error::StoreError;

impl RedisStore {
    /// Takes `reporter`'s report of `usage` on the shares of `policy`'s rate for `key`, and
    /// grants it a share for `ttl`: one script call, atomic, on Redis's clock, deciding exactly
    /// as [`quota::Quota::report`] does. The shares of all reporters that have not expired never
    /// exceed the policy's limit or burst, whichever instance granted them.
    ///
    /// A caller that leaves before the answer does not stop the call (its breaker hears how it
    /// went, and it is counted in [`RedisStats::abandoned`](super::RedisStats)); it may leave a
    /// share granted that nobody received, which holds part of the rate until `ttl` passes: the
    /// strict side.
    ///
    /// # Errors
    ///
    /// [`StoreError::Config`] for a policy that cannot be shared (see [`Capacity::of`]); the
    /// store's failures as for a decision.
    pub async fn report_quota(
        &self,
        policy: &Policy,
        key: &[u8],
        reporter: ReporterId,
        usage: Usage,
        ttl: Duration,
    ) -> Result<Share, StoreError> {
        let capacity = Capacity::of(policy)?;
        let tag = client_tag(key);
        let state_key = quota_key_for_tag(&self.inner.prefix, policy, &tag);
        let demand = quota::demand(usage, capacity);
        let now_us = self.inner.clock.as_ref().map(|clock| clock.now_us());
        let ttl_us = ceil_micros(ttl);
        let slot = slot_of(&tag);
        let store = self.clone();
        let (deliver, delivered) = oneshot::channel();
        // On a task of its own, so that a report whose caller leaves mid-call still tells its
        // breaker how it went: a probe slot is never left taken.
        self.inner.detached.spawn(async move {
            let deadline = Instant::now() + store.inner.timeout;
            let call = async {
                let reply = run_script(&store.inner.connection, None, |with_source| {
                    script::quota_command(
                        with_source,
                        &state_key,
                        now_us,
                        (reporter, demand),
                        capacity,
                        ttl_us,
                        MAX_REPORTERS,
                    )
                })
                .await?;
                reply::decode_share(&reply)
            };
            let granted = store.guarded(slot, |_| store.until(deadline, call)).await;
            if deliver.send(granted).is_err() {
                store.inner.abandoned.fetch_add(1, Ordering::Relaxed);
            }
        });
        delivered.await.unwrap_or_else(|_| Err(detached::ended()))
    }
}
