//! Coalescing: single-policy decisions in flight to one node go out together, as one script
//! call that decides each of them in turn.
//!
//! What Redis spends per call (command dispatch, script entry, the reply) is then paid once per
//! batch rather than once per decision. Each decision is still atomic and exact: the batch runs
//! as one script, deciding its entries one after another exactly as separate calls in that
//! order would.
//!
//! No decision waits to be batched: with a call slot free, a decision goes out at once, alone if
//! it is alone. Batches form only while every slot is busy, from the decisions that queued
//! meanwhile, so the added wait is at most one call's round trip, and a caller's own deadline
//! bounds it whatever happens. A batch never outlives the earliest deadline among its
//! decisions, and only decisions admitted by a closed breaker join one.
//!
//! A caller may leave at any time. A decision whose caller left before its batch went out is
//! not sent; one whose caller left after is counted as abandoned. The breaker hears of each
//! batch call from the task that sent it, whoever still waits for its answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ::redis::Value;
use floodwall_core::{Clock, Policy};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use super::breaker::{Admission, Breakers};
use super::{Connection, Replicated, reply, run_script, script};
use crate::error::StoreError;
use crate::store::Answer;

/// The most decisions in one call: enough to amortise the call, few enough that one batch
/// keeps Redis busy for well under a millisecond.
const MAX_BATCH: usize = 64;

/// Calls in flight at once. While all are out, decisions queue and leave as the next batch.
const MAX_IN_FLIGHT: usize = 2;

/// Decisions waiting for a call slot; beyond this, a caller waits to queue (within its deadline).
const QUEUE: usize = 4 * MAX_BATCH;

/// One decision waiting to go out.
struct Pending {
    key: String,
    policy: Policy,
    cost: u64,
    deadline: Instant,
    answer: oneshot::Sender<Result<Answer, StoreError>>,
}

/// The queue into a node's batches. Dropping the last handle ends the task that sends them.
#[derive(Debug, Clone)]
pub(super) struct Batcher {
    queue: mpsc::Sender<Pending>,
}

/// What a batch call needs from the store.
#[derive(Clone)]
struct Sender {
    connection: Connection,
    clock: Option<Arc<dyn Clock>>,
    timeout: Duration,
    /// Replicas that confirm each batch's writes before its answers are given (0: none).
    wait_replicas: u32,
    instance: u64,
    sequence: Arc<AtomicU64>,
    breakers: Arc<Breakers>,
    /// Decisions whose caller left before their answer.
    abandoned: Arc<AtomicU64>,
}

impl Batcher {
    /// Starts the task that sends batches on `connection` (a single node's), each within the
    /// store's `timeout`, answered once `wait_replicas` replicas confirm it. `instance` names
    /// the store's calls, as its other calls' tokens do, with a sequence of the batches' own.
    /// Each call's outcome goes to the node's `breakers`; decisions whose caller left before
    /// their answer are counted in `abandoned`.
    pub(super) fn spawn(
        connection: Connection,
        clock: Option<Arc<dyn Clock>>,
        (timeout, wait_replicas): (Duration, u32),
        instance: u64,
        breakers: Arc<Breakers>,
        abandoned: Arc<AtomicU64>,
    ) -> Batcher {
        let (queue, decisions) = mpsc::channel(QUEUE);
        let sender = Sender {
            connection,
            clock,
            timeout,
            wait_replicas,
            instance,
            sequence: Arc::new(AtomicU64::new(0)),
            breakers,
            abandoned,
        };
        tokio::spawn(send_batches(decisions, sender));
        Batcher { queue }
    }

    /// Decides one request of `cost` on the state `key` of `policy`, in the next batch. The
    /// caller bounds the wait by `deadline`, which the batch honours too.
    pub(super) async fn decide(
        &self,
        key: String,
        policy: &Policy,
        cost: u64,
        deadline: Instant,
    ) -> Result<Answer, StoreError> {
        let (answer, answered) = oneshot::channel();
        let pending = Pending {
            key,
            policy: policy.clone(),
            cost,
            deadline,
            answer,
        };
        let ended = || StoreError::Reply {
            detail: "the batch task ended".to_owned(),
        };
        self.queue.send(pending).await.map_err(|_| ended())?;
        answered.await.unwrap_or_else(|_| Err(ended()))
    }
}

async fn send_batches(mut decisions: mpsc::Receiver<Pending>, sender: Sender) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        // A slot first: decisions that arrive while none is free queue, and leave together.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        if decisions.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        // A caller that gave up (its deadline passed) is not decided for.
        batch.retain(|pending| !pending.answer.is_closed());
        if batch.is_empty() {
            continue;
        }
        let taken = std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH));
        tokio::spawn(sender.clone().send(taken, slot));
    }
}

impl Sender {
    /// Sends `batch`, one call per algorithm in it, and answers each decision.
    async fn send(self, mut batch: Vec<Pending>, _slot: OwnedSemaphorePermit) {
        batch.sort_by_key(|pending| pending.policy.algorithm().index());
        while let Some(first) = batch.first() {
            let algorithm = first.policy.algorithm();
            let same = batch
                .iter()
                .take_while(|pending| pending.policy.algorithm() == algorithm)
                .count();
            let group: Vec<Pending> = batch.drain(..same).collect();
            let outcome = self.call(algorithm, &group).await;
            self.breakers.record_outcome(0, Admission::Closed, &outcome);
            let abandoned = answer(group, outcome);
            if abandoned > 0 {
                self.abandoned.fetch_add(abandoned, Ordering::Relaxed);
            }
        }
    }

    async fn call(
        &self,
        algorithm: floodwall_core::Algorithm,
        group: &[Pending],
    ) -> Result<Value, StoreError> {
        let deadline = group
            .iter()
            .map(|pending| pending.deadline)
            .min()
            .unwrap_or_else(Instant::now);
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        let token = format!("{:x}.b{sequence:x}", self.instance);
        let now_us = self.clock.as_ref().map(|clock| clock.now_us());
        let decisions = group
            .iter()
            .map(|pending| (pending.key.as_str(), &pending.policy, pending.cost));
        // A batch of looks (cost 0) takes nothing a failover could lose.
        let replicated = Replicated::by(self.wait_replicas, deadline)
            .filter(|_| group.iter().any(|pending| pending.cost > 0));
        let call = run_script(&self.connection, replicated, |with_source| {
            script::batch_command(algorithm, with_source, now_us, &token, decisions.clone())
        });
        tokio::time::timeout_at(deadline, call)
            .await
            .unwrap_or(Err(StoreError::Timeout {
                after: self.timeout,
            }))
    }
}

/// Gives each decision of `group` its part of the batch's reply, or the batch's failure; returns
/// how many callers had left.
fn answer(group: Vec<Pending>, outcome: Result<Value, StoreError>) -> u64 {
    // Each decision: whether it is allowed, then the fields of a policy's decision.
    let each = 1 + reply::PER_POLICY;
    let expected = 1 + each * group.len();
    let items = match outcome {
        Ok(Value::Array(items)) if items.len() == expected => Ok(items),
        Ok(other) => Err(StoreError::Reply {
            detail: format!(
                "expected a batch of {} decisions, got {other:?}",
                group.len()
            ),
        }),
        Err(error) => Err(error),
    };
    let mut abandoned = 0;
    for (i, pending) in group.into_iter().enumerate() {
        let result = match &items {
            Ok(items) => {
                reply::decode_fields(&items[1 + each * i..1 + each * (i + 1)], &[&pending.policy])
            }
            Err(error) => Err(error.clone()),
        };
        // A caller that stopped waiting has its own answer (a timeout, its deadline's).
        if pending.answer.send(result).is_err() {
            abandoned += 1;
        }
    }
    abandoned
}
