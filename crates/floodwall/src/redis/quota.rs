//! Shares of a (policy, key)'s rate among proxies (Envoy's rate-limit-quota filter), kept in
//! Redis so that every instance on the same server or cluster grants from one set of shares.

use std::time::Duration;

use floodwall_core::key::{client_tag, quota_key_for_tag};
use floodwall_core::quota::{self, Capacity, MAX_REPORTERS, ReporterId, Share, Usage};
use floodwall_core::{Policy, ceil_micros};
use tokio::time::Instant;

use super::{RedisStore, reply, run_script, script, slot_of};
use crate::error::StoreError;

impl RedisStore {
    /// Takes `reporter`'s report of `usage` on the shares of `policy`'s rate for `key`, and
    /// grants it a share for `ttl`: one script call, atomic, on Redis's clock, deciding exactly
    /// as [`quota::Quota::report`] does. The shares of all reporters that have not expired never
    /// exceed the policy's limit or burst, whichever instance granted them.
    ///
    /// A caller that leaves before the answer may leave a share granted that nobody received:
    /// it holds part of the rate until `ttl` passes, which errs on the strict side.
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
        let deadline = Instant::now() + self.inner.timeout;
        let call = async {
            let reply = run_script(&self.inner.connection, None, |with_source| {
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
        self.guarded(slot_of(&tag), |_| self.until(deadline, call))
            .await
    }
}
