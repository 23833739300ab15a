//! Holders in Redis: what a held check's members are called, and the call that gives them back.

use floodwall_core::key::{client_tag, storage_key_for_tag};
use floodwall_core::{Algorithm, Holder};
use smallvec::SmallVec;
use tokio::time::Instant;

use super::breaker::Admission;
use super::script;
use super::{Connection, RedisStore, run_script, slot_of};
use crate::error::StoreError;
use crate::store::Check;

/// The call token of a held check: its units are the members `<token>:<i>:<unit>`, so its
/// release removes exactly them (and a second release nothing).
pub(super) fn holder_token(holder: Holder) -> String {
    format!("h{:x}", holder.0)
}

/// One `concurrency` pair to give back: its slot, state key, member prefix and cost.
struct Held {
    slot: u16,
    key: String,
    prefix: String,
    cost: u64,
}

impl RedisStore {
    /// [`Store::release`](crate::store::Store::release): one call per slot holding the check's
    /// `concurrency` pairs, by `deadline`; through each slot's breaker when `guarded`, otherwise
    /// sent whatever the breakers say (a give-back that must follow the call it undoes).
    pub(super) async fn release_held(
        &self,
        check: &Check<'_>,
        guarded: bool,
        deadline: Instant,
    ) -> Result<(), StoreError> {
        if !check.takes_held_units() {
            return Ok(());
        }
        let holder = check.holder();
        let token = holder_token(holder);
        let pairs = check.pairs();
        let tags: SmallVec<[_; 2]> = pairs.iter().map(|(_, key)| client_tag(key)).collect();
        // A pair's members carry its position in the call that decided it: every pair is in
        // one call, except on a cluster with several clients, where each slot had its own (in
        // slot order, pairs in check order within one).
        let per_slot =
            matches!(self.inner.connection, Connection::Cluster(_)) && check.shared_key().is_none();
        let mut calls: SmallVec<[(u16, usize); 2]> = tags
            .iter()
            .enumerate()
            .map(|(i, tag)| (if per_slot { slot_of(tag) } else { 0 }, i))
            .collect();
        calls.sort_unstable();
        let mut held: SmallVec<[Held; 2]> = SmallVec::new();
        for call in calls.chunk_by(|a, b| a.0 == b.0) {
            for (position, &(_, i)) in call.iter().enumerate() {
                let (policy, _) = pairs[i];
                if policy.algorithm() != Algorithm::Concurrency {
                    continue;
                }
                held.push(Held {
                    slot: slot_of(&tags[i]),
                    key: storage_key_for_tag(&self.inner.prefix, policy, &tags[i]),
                    prefix: format!("{token}:{}:", position + 1),
                    cost: check.cost_of(i),
                });
            }
        }
        held.sort_by_key(|h| h.slot);
        let now_us = self.inner.clock.as_ref().map(|clock| clock.now_us());
        for group in held.chunk_by(|a, b| a.slot == b.slot || !per_slot) {
            let pairs = group
                .iter()
                .map(|h| (h.key.as_str(), h.prefix.as_str(), h.cost));
            let call = |_| {
                self.until(deadline, async {
                    // Units given back: a failover that loses this errs on the strict side.
                    run_script(&self.inner.connection, None, |with_source| {
                        script::release_command(with_source, now_us, pairs.clone())
                    })
                    .await?;
                    Ok(())
                })
            };
            match guarded {
                true => self.guarded(group[0].slot, call).await?,
                false => call(Admission::Closed).await?,
            }
        }
        Ok(())
    }
}
