//! Checks across client keys: one atomic call on one node; on a cluster, one call per slot,
//! with every slot that consumed refunded when another denies or fails.

use floodwall_core::key::{client_tag, storage_key_for_tag};
use floodwall_core::{Decision, Policy};
use smallvec::SmallVec;
use tokio::time::Instant;

use super::script::Call;
use super::script::{Costs, Operation};
use super::{Connection, RedisStore, slot_of};
use crate::error::StoreError;
use crate::store::Answer;
use crate::store::Check;

/// The pairs of a check across keys that live in one cluster slot, and their one call's keys
/// and policies.
struct SlotGroup<'p> {
    slot: u16,
    /// The pairs' positions in the check.
    positions: SmallVec<[usize; 2]>,
    keys: SmallVec<[String; 2]>,
    policies: SmallVec<[&'p Policy; 2]>,
    costs: Costs,
}

impl RedisStore {
    /// Pairs of several client keys. One node decides them in one atomic call. A cluster
    /// decides each slot's pairs atomically, slot after slot; if any slot denies (or fails),
    /// every slot that consumed is refunded, so the request counts everywhere or nowhere.
    pub(super) async fn run_across_clients(
        &self,
        check: &Check<'_>,
        operation: Operation,
    ) -> Result<Answer, StoreError> {
        let pairs = check.pairs();
        let tags: SmallVec<[_; 2]> = pairs.iter().map(|(_, key)| client_tag(key)).collect();
        let keys: SmallVec<[String; 2]> = pairs
            .iter()
            .zip(&tags)
            .map(|((policy, _), tag)| storage_key_for_tag(&self.inner.prefix, policy, tag))
            .collect();
        let policies: SmallVec<[&Policy; 2]> = check.policies().collect();
        let deadline = Instant::now() + self.inner.timeout;
        let costs = Costs::of(check);
        let call = Call::of(check, operation);
        let Connection::Cluster(_) = self.inner.connection else {
            let slot = slot_of(&tags[0]);
            return self
                .call(slot, &keys, &policies, &costs, call, deadline)
                .await;
        };

        // Slots in ascending order, each with the positions of its pairs.
        let mut slots: SmallVec<[(u16, usize); 2]> = tags
            .iter()
            .enumerate()
            .map(|(i, tag)| (slot_of(tag), i))
            .collect();
        slots.sort_unstable();
        // Each slot's pairs, with the keys and policies of their call (its refund reuses them).
        let groups: SmallVec<[SlotGroup<'_>; 2]> = slots
            .chunk_by(|a, b| a.0 == b.0)
            .map(|group| SlotGroup {
                slot: group[0].0,
                positions: group.iter().map(|&(_, i)| i).collect(),
                keys: group.iter().map(|&(_, i)| keys[i].clone()).collect(),
                policies: group.iter().map(|&(_, i)| policies[i]).collect(),
                costs: costs.at(&group
                    .iter()
                    .map(|&(_, i)| i)
                    .collect::<SmallVec<[usize; 2]>>()),
            })
            .collect();
        let mut decisions: SmallVec<[Option<Decision>; 2]> = SmallVec::from_elem(None, pairs.len());
        let mut allowed = true;
        let mut consumed: SmallVec<[&SlotGroup<'_>; 2]> = SmallVec::new();
        let mut failure = None;
        for group in &groups {
            let (keys, policies) = (&group.keys, &group.policies);
            match self
                .call(group.slot, keys, policies, &group.costs, call, deadline)
                .await
            {
                Ok(answer) => {
                    allowed &= answer.allowed;
                    if answer.allowed && group.costs.consumes() && operation == Operation::Decide {
                        consumed.push(group);
                    }
                    for (&i, decision) in group.positions.iter().zip(answer.decisions) {
                        decisions[i] = Some(decision);
                    }
                }
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        if !allowed || failure.is_some() {
            // Undo every slot that consumed; what the refund reports is the state as if this
            // request had never come. A refund that fails leaves that slot over-counted, never
            // under.
            for group in consumed {
                let (keys, policies) = (&group.keys, &group.policies);
                let refund_deadline = Instant::now() + self.inner.timeout;
                let refunded = self
                    .call(
                        group.slot,
                        keys,
                        policies,
                        &group.costs,
                        Call {
                            operation: Operation::Refund,
                            ..call
                        },
                        refund_deadline,
                    )
                    .await;
                if let Ok(answer) = refunded {
                    for (&i, after) in group.positions.iter().zip(answer.decisions) {
                        if let Some(decision) = &mut decisions[i] {
                            decision.remaining = after.remaining;
                            decision.reset_after = after.reset_after;
                        }
                    }
                }
            }
        }
        if let Some(error) = failure {
            return Err(error);
        }
        let decisions = decisions.into_iter().flatten().collect();
        Ok(Answer::from_store(allowed, decisions))
    }
}
