//! The Redis store: one script call per decision, on one node or a cluster.
//!
//! Every decision is one `EVALSHA` of one script (assembled from `lua/`), which reads, decides,
//! writes and sets expiries atomically for all the policies of one client key; those keys share a
//! hash tag, so a cluster runs them on one node. Redis's `TIME` is the clock of record.
//!
//! Failure handling:
//! - each call has a deadline ([`RedisConfig::timeout`]); past it the call fails with
//!   [`StoreError::Timeout`] and is **never retried**, since Redis may have counted it;
//! - `NOSCRIPT` (a restart, `SCRIPT FLUSH`, a failover, a new shard) is answered with `EVAL` of the
//!   full text on the same connection, which also caches the script on that node;
//! - cluster redirections and `TRYAGAIN`/`CLUSTERDOWN`/`LOADING`, which Redis sends *instead of*
//!   running the script, are retried with a short backoff within the deadline; an I/O error is not
//!   (the client library's own retries are switched off for that reason);
//! - the single-node connection reconnects by itself in the background with capped exponential
//!   backoff, and is created lazily, so a store can be built before Redis is up;
//! - a circuit breaker per group of hash slots opens after consecutive failures, so a dead or
//!   hanging Redis costs one deadline per probe interval rather than one per request;
//! - a local deny cache repeats a recent denial until Redis's `retry_after` passes (see
//!   `deny_cache.rs` for why it never admits more than Redis would);
//! - a caller may stop waiting at any time: calls that take something, or that a breaker waits
//!   to hear from, run on tasks of their own and finish their bookkeeping (see `detached.rs`).

mod access;
mod across;
mod batch;
mod breaker;
mod config;
mod controls;
mod deny_cache;
mod detached;
mod local_time;
mod prefetch;
mod quota;
mod release;
mod reply;
mod script;
mod sentinel;

use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClientBuilder;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{ErrorKind, RedisError, RetryMethod, ServerErrorKind, Value};
use floodwall_core::key::{client_tag, storage_key_for_tag};
use floodwall_core::{Clock, Holder, Policy};
use smallvec::SmallVec;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use self::batch::Batcher;
use self::breaker::{Admission, Breakers};
pub use self::config::{
    DEFAULT_BREAKER_THRESHOLD, DEFAULT_PREFIX, DEFAULT_PROBE_INTERVAL, DEFAULT_TIMEOUT, RedisConfig,
};
use self::config::{Target, parse_url};
use self::deny_cache::DenyCache;
use self::detached::Job;
use self::prefetch::{Prefetches, prefetched_pair};
use self::script::Call;
use self::script::{Costs, Operation};
pub use self::sentinel::SentinelMaster;
use self::sentinel::Sentinels;
use crate::error::StoreError;
use crate::store::Answer;
use crate::store::Store;
use crate::store::{Charge, Check};

/// How often a call answered by "not executed, try elsewhere or later" is sent again.
const MAX_NOT_EXECUTED_RETRIES: u32 = 5;

/// The state of a [`RedisStore`]'s circuit breakers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisStats {
    /// Breakers open now: their slots fail fast, with one probe per interval.
    pub open_breakers: usize,
    /// Breakers in all: 1 for a single node, one per group of 256 slots on a cluster.
    pub breakers: usize,
    /// Calls whose caller stopped waiting before Redis answered (the call itself ran to its end).
    pub abandoned: u64,
    /// Releases of in-flight units taken for callers that were gone, or by calls that failed
    /// after they may have run, that reached Redis.
    pub given_back: u64,
    /// Calls still running for callers that may be gone: what [`RedisStore::quiesce`] waits for.
    pub detached: usize,
    /// Behind Sentinel: the master in use and when it changed (`None` for a node or a cluster).
    pub sentinel: Option<SentinelMaster>,
}

/// A store on Redis: exact across every instance that shares the server or cluster.
///
/// Clones share one connection (multiplexed: concurrent calls are pipelined on it).
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    connection: Connection,
    prefix: String,
    timeout: Duration,
    /// Replicas that confirm each deciding call's write before its answer is given (0: none).
    wait_replicas: u32,
    clock: Option<Arc<dyn Clock>>,
    breakers: Arc<Breakers>,
    /// A single node's coalesced decisions; a cluster's keys rarely share a slot, so it has none.
    batcher: Option<Batcher>,
    deny_cache: Option<DenyCache>,
    prefetches: Prefetches,
    /// Random per store: with `sequence`, names each call uniquely (sliding-log members).
    instance: u64,
    sequence: AtomicU64,
    /// Calls running on tasks of their own, which finish whoever waits for them.
    detached: TaskTracker,
    /// Calls whose caller left before the answer, batched ones included.
    abandoned: Arc<AtomicU64>,
    given_back: AtomicU64,
    /// Whether a [`RedisStore::ping`] is in flight (at most one is).
    pinging: std::sync::atomic::AtomicBool,
    /// When [`RedisStore::diagnose`] last asked, and the refusal it found.
    diagnosis: std::sync::Mutex<access::Diagnosis>,
}

#[derive(Clone)]
enum Connection {
    /// The reconnecting connection, and the client that opens fresh ones (to see a refusal the
    /// reconnecting one would only retry).
    Node(ConnectionManager, Box<::redis::Client>),
    Cluster(ClusterConnection),
    /// The master the sentinels name, replaced when they name another.
    Sentinel(Arc<Sentinels>),
}

impl Connection {
    async fn query(&self, cmd: &::redis::Cmd) -> Result<Value, RedisError> {
        match self {
            Connection::Node(connection, _) => cmd.query_async(&mut connection.clone()).await,
            Connection::Cluster(connection) => cmd.query_async(&mut connection.clone()).await,
            Connection::Sentinel(sentinels) => sentinels.query(cmd).await,
        }
    }

    /// Sends `pipeline` as one write; the replies in order, or the first error among them.
    async fn pipeline(&self, pipeline: &::redis::Pipeline) -> Result<Vec<Value>, RedisError> {
        match self {
            Connection::Node(connection, _) => pipeline.query_async(&mut connection.clone()).await,
            // A pipeline goes to the node of its keyed commands; `WAIT` has none, so it follows.
            Connection::Cluster(connection) => pipeline.query_async(&mut connection.clone()).await,
            Connection::Sentinel(sentinels) => sentinels.pipeline(pipeline).await,
        }
    }
}

/// Replicas that must confirm a deciding call's write before its answer is given
/// ([`RedisConfig::wait_replicas`]), and by when.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Replicated {
    replicas: u32,
    deadline: Instant,
}

impl Replicated {
    /// `replicas` confirmations by `deadline`, or none when `replicas` is 0.
    fn by(replicas: u32, deadline: Instant) -> Option<Self> {
        (replicas > 0).then_some(Replicated { replicas, deadline })
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let topology = match self.inner.connection {
            Connection::Node(..) => "node",
            Connection::Cluster(_) => "cluster",
            Connection::Sentinel(_) => "sentinel",
        };
        f.debug_struct("RedisStore")
            .field("topology", &topology)
            .field("prefix", &self.inner.prefix)
            .field("timeout", &self.inner.timeout)
            .field("clock", &self.inner.clock)
            .finish_non_exhaustive()
    }
}

/// Redis answered without running the script: sending the call again cannot count it twice.
fn not_executed(error: &RedisError) -> bool {
    matches!(
        error.retry_method(),
        RetryMethod::MovedRedirect
            | RetryMethod::AskRedirect
            | RetryMethod::WaitAndRetry
            | RetryMethod::RefreshSlotsAndRetry
    )
}

/// A client for one node: with the configured certificates when the URL is TLS.
#[cfg_attr(not(feature = "tls"), allow(unused_variables))]
fn node_client(
    config: &RedisConfig,
    target: &Target,
    url: &str,
) -> Result<::redis::Client, RedisError> {
    #[cfg(feature = "tls")]
    if let Some(certificates) = config.tls.certificates()
        && target.is_tls()
    {
        return ::redis::Client::build_with_tls(url, certificates);
    }
    ::redis::Client::open(url)
}

/// The cluster hash slot of a client's storage keys: CRC16 of its hash tag, mod 16 384.
fn slot_of(tag: &str) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(tag.as_bytes()) % 16_384
}

impl RedisStore {
    /// Connects per `config`. A single node is connected lazily (the first call connects, and
    /// the store reconnects by itself); a cluster's topology is read now.
    ///
    /// # Errors
    ///
    /// [`StoreError::Config`] for an invalid URL or prefix; [`StoreError::Redis`] when a
    /// cluster's nodes cannot be reached.
    pub async fn connect(config: RedisConfig) -> Result<Self, StoreError> {
        config.validate()?;
        let target = parse_url(&config.url)?;
        let breakers = Arc::new(Breakers::new(
            matches!(target, Target::Cluster(_)),
            config.breaker_threshold,
            config.probe_interval,
        ));
        let abandoned = Arc::new(AtomicU64::new(0));
        #[cfg(feature = "tls")]
        if target.is_tls() {
            // rustls needs a process-wide provider; an application that installed its own keeps it.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout.max(Duration::from_millis(100))))
            // The store applies its own deadline to each call.
            .set_response_timeout(None)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_secs(1))
            .set_number_of_retries(usize::MAX);
        let connection = match &target {
            Target::Node(url) => {
                let client = node_client(&config, &target, url)?;
                let manager = ConnectionManager::new_lazy_with_config(client.clone(), manager)?;
                Connection::Node(manager, Box::new(client))
            }
            Target::Sentinel(sentinel) => {
                Connection::Sentinel(Sentinels::connect(sentinel, &config, manager).await?)
            }
            Target::Cluster(nodes) => {
                let builder = ClusterClientBuilder::new(nodes.clone())
                    // No library retries: an I/O error after sending may hide an executed call.
                    .retries(0)
                    .connection_timeout(config.timeout.max(Duration::from_millis(100)));
                #[cfg(feature = "tls")]
                let builder = match config.tls.certificates() {
                    Some(certificates) if target.is_tls() => builder.certs(certificates),
                    _ => builder,
                };
                let client = builder.build()?;
                Connection::Cluster(client.get_async_connection().await?)
            }
        };
        let instance = std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64);
        let batcher = match &connection {
            Connection::Node(..) | Connection::Sentinel(_) => Some(Batcher::spawn(
                connection.clone(),
                config.clock.clone(),
                (config.timeout, config.wait_replicas),
                instance,
                Arc::clone(&breakers),
                Arc::clone(&abandoned),
            )),
            Connection::Cluster(_) => None,
        };
        Ok(RedisStore {
            inner: Arc::new(Inner {
                connection,
                batcher,
                prefix: config.prefix,
                timeout: config.timeout,
                wait_replicas: config.wait_replicas,
                clock: config.clock.clone(),
                breakers,
                deny_cache: (config.deny_cache > 0)
                    .then(|| DenyCache::new(config.deny_cache, config.clock.clone())),
                prefetches: Prefetches::new(prefetch::DEFAULT_CAPACITY, config.clock.clone()),
                instance,
                sequence: AtomicU64::new(0),
                detached: TaskTracker::new(),
                abandoned,
                given_back: AtomicU64::new(0),
                pinging: std::sync::atomic::AtomicBool::new(false),
                diagnosis: std::sync::Mutex::default(),
            }),
        })
    }

    /// The clock injected into the store, if any (tests); Redis otherwise keeps its own time.
    pub(crate) fn clock(&self) -> Option<Arc<dyn Clock>> {
        self.inner.clock.clone()
    }

    /// The circuit breakers' state now.
    pub fn stats(&self) -> RedisStats {
        let (open_breakers, breakers) = self.inner.breakers.open_groups();
        RedisStats {
            open_breakers,
            breakers,
            abandoned: self.inner.abandoned.load(Ordering::Relaxed),
            given_back: self.inner.given_back.load(Ordering::Relaxed),
            detached: self.inner.detached.len(),
            sentinel: match &self.inner.connection {
                Connection::Sentinel(sentinels) => Some(sentinels.describe()),
                _ => None,
            },
        }
    }

    /// Runs `operation` for `check`: one call when every pair shares a client key (one hash
    /// tag, one slot) or the store is one node, otherwise one call per slot.
    async fn run(&self, check: &Check<'_>, operation: Operation) -> Result<Answer, StoreError> {
        if check.is_empty() {
            return Ok(Answer::from_store(true, SmallVec::new()));
        }
        match check.shared_key() {
            Some(key) => self.run_for_client(check, key, operation).await,
            None => self.detached(check, Job::Run(operation)).await,
        }
    }

    /// [`RedisStore::run`] on the detached call's own task: the script calls themselves.
    async fn run_direct(
        &self,
        check: &Check<'_>,
        operation: Operation,
    ) -> Result<Answer, StoreError> {
        let Some(key) = check.shared_key() else {
            return self.run_across_clients(check, operation).await;
        };
        let tag = client_tag(key);
        let keys: SmallVec<[String; 2]> = check
            .policies()
            .map(|p| storage_key_for_tag(&self.inner.prefix, p, &tag))
            .collect();
        let policies: SmallVec<[&Policy; 2]> = check.policies().collect();
        let deadline = Instant::now() + self.inner.timeout;
        let costs = Costs::of(check);
        let call = Call::of(check, operation);
        self.call(slot_of(&tag), &keys, &policies, &costs, call, deadline)
            .await
    }

    /// One call for pairs of one client key, answered from the deny cache when it can be.
    async fn run_for_client(
        &self,
        check: &Check<'_>,
        key: &[u8],
        operation: Operation,
    ) -> Result<Answer, StoreError> {
        let policies: SmallVec<[&Policy; 2]> = check.policies().collect();
        let need = check.cost().max(1);
        let cached = self
            .inner
            .deny_cache
            .as_ref()
            // A denial is cached per cost: a weighted check has several. An in-flight limit's
            // denial ends with any release, which this instance may not see.
            .filter(|_| operation == Operation::Decide && check.costs().is_none() && !check.holds())
            .map(|cache| (cache, cache.key_id(key), cache.policies_id(&policies)));
        if let Some((cache, key_id, policies_id)) = cached
            && let Some(answer) = cache.get(key_id, policies_id, need)
        {
            return Ok(answer);
        }
        let answer = match (&self.inner.batcher, operation, &policies[..], check.costs()) {
            // Held units are named by their holder, which a batch's members are not. A batch
            // joins only while the breaker is closed: a probe goes alone, so that what it finds
            // is its own.
            (Some(batcher), Operation::Decide, [policy], None)
                if !check.takes_held_units() && self.inner.breakers.is_closed(0) =>
            {
                let key = storage_key_for_tag(&self.inner.prefix, policy, &client_tag(key));
                let deadline = Instant::now() + self.inner.timeout;
                self.until(
                    deadline,
                    batcher.decide(key, policy, check.cost(), deadline),
                )
                .await?
            }
            _ => self.detached(check, Job::Run(operation)).await?,
        };
        if let Some((cache, key_id, policies_id)) = cached
            && !answer.allowed
        {
            cache.put(key_id, policies_id, need, &answer, &policies);
        }
        Ok(answer)
    }

    /// Runs `call` if `slot`'s breaker lets it through (an error when it is open), telling the
    /// call whether it is the breaker's probe, then tells the breaker how it went.
    async fn guarded<T, F>(
        &self,
        slot: u16,
        call: impl FnOnce(Admission) -> F,
    ) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, StoreError>>,
    {
        let group = self.inner.breakers.group(slot);
        let admission = self.inner.breakers.enter(group)?;
        let result = call(admission).await;
        self.inner
            .breakers
            .record_outcome(group, admission, &result);
        // Calls that time out on a master that is gone but not yet refusing connections open the
        // breaker: behind Sentinel, that suggests a failover as a refused connection does.
        if let (Connection::Sentinel(sentinels), Err(StoreError::Timeout { .. })) =
            (&self.inner.connection, &result)
            && !self.inner.breakers.is_closed(group)
        {
            sentinels.suspect_failover();
        }
        result
    }

    /// One script call for pairs on one slot (or on the one node), with the store's failure
    /// handling: the slot's breaker, script reload on NOSCRIPT, retried redirections, and the
    /// `deadline`.
    async fn call(
        &self,
        slot: u16,
        keys: &[String],
        policies: &[&Policy],
        costs: &Costs,
        call: Call,
        deadline: Instant,
    ) -> Result<Answer, StoreError> {
        self.guarded(slot, |_| {
            self.call_admitted(keys, policies, costs, call, deadline)
        })
        .await
    }

    /// [`RedisStore::call`] once the breaker has let it through.
    async fn call_admitted(
        &self,
        keys: &[String],
        policies: &[&Policy],
        costs: &Costs,
        call: Call,
        deadline: Instant,
    ) -> Result<Answer, StoreError> {
        let Call { operation, holder } = call;
        let token = if holder == Holder::ANONYMOUS {
            let sequence = self.inner.sequence.fetch_add(1, Ordering::Relaxed);
            format!("{:x}.{sequence:x}", self.inner.instance)
        } else {
            release::holder_token(holder)
        };
        let now_us = self.inner.clock.as_ref().map(|clock| clock.now_us());
        let call = async {
            // A refund only gives back, and a look (cost 0) takes nothing.
            let replicated = match operation {
                Operation::Decide if costs.consumes() => {
                    Replicated::by(self.inner.wait_replicas, deadline)
                }
                Operation::Debit => Replicated::by(self.inner.wait_replicas, deadline),
                _ => None,
            };
            let reply = run_script(&self.inner.connection, replicated, |with_source| {
                script::command(
                    operation,
                    with_source,
                    keys,
                    now_us,
                    costs,
                    &token,
                    policies,
                )
            })
            .await?;
            reply::decode(&reply, policies)
        };
        self.until(deadline, call).await
    }

    /// Drops this instance's cached denials of `check`'s client keys.
    fn forget_denials(&self, check: &Check<'_>) {
        if let Some(cache) = &self.inner.deny_cache {
            for (_, key) in check.pairs() {
                cache.forget(cache.key_id(key));
            }
        }
    }

    async fn until<T>(
        &self,
        deadline: Instant,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout_at(deadline, call)
            .await
            .unwrap_or(Err(StoreError::Timeout {
                after: self.inner.timeout,
            }))
    }
}

/// Runs the script call `command` builds: `EVALSHA`, then `EVAL` once if Redis has not cached
/// the script. A call refused before it ran (a redirection, a replica still loading) is retried
/// a few times; one that may have run is never retried, since it may have counted. With
/// `replicated`, a `WAIT` follows the script in the same write, and the reply is given only once
/// enough replicas have confirmed it.
async fn run_script(
    connection: &Connection,
    replicated: Option<Replicated>,
    command: impl Fn(bool) -> ::redis::Cmd,
) -> Result<Value, StoreError> {
    let mut with_source = false;
    let mut retries = 0;
    loop {
        let outcome = match replicated {
            None => connection.query(&command(with_source)).await.map(Ok),
            Some(replicated) => run_and_wait(connection, replicated, command(with_source)).await,
        };
        match outcome {
            Ok(answered) => return answered,
            Err(e) if !with_source && e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                with_source = true;
            }
            Err(e) if not_executed(&e) && retries < MAX_NOT_EXECUTED_RETRIES => {
                retries += 1;
                tokio::time::sleep(Duration::from_millis(1 << retries)).await;
            }
            Err(e) => return Err(StoreError::from(e)),
        }
    }
}

/// Sends `script` and a `WAIT` for `replicated`'s replicas as one write: the script's reply
/// when enough replicas confirm by the deadline, [`StoreError::NotReplicated`] when they do not
/// (the script ran all the same), and Redis's error when the script failed.
async fn run_and_wait(
    connection: &Connection,
    replicated: Replicated,
    script: ::redis::Cmd,
) -> Result<Result<Value, StoreError>, RedisError> {
    // WAIT gets half of what is left, so that its shortfall comes back as an answer before the
    // deadline rather than as a timeout (Redis may end a WAIT up to one tick of its clock late);
    // and never 0, which waits forever. Replicas that confirm answer it at once.
    let left = replicated
        .deadline
        .saturating_duration_since(Instant::now());
    let wait_ms = (left / 2).as_millis().max(1);
    let mut pipeline = ::redis::pipe();
    pipeline
        .add_command(script)
        .cmd("WAIT")
        .arg(replicated.replicas)
        .arg(u64::try_from(wait_ms).unwrap_or(u64::MAX));
    let mut replies = connection.pipeline(&pipeline).await?.into_iter();
    let (Some(reply), Some(Value::Int(acknowledged))) = (replies.next(), replies.next()) else {
        return Ok(Err(StoreError::Reply {
            detail: "a script and WAIT did not answer a reply and a count".to_owned(),
        }));
    };
    let acknowledged = u64::try_from(acknowledged).unwrap_or(0);
    if acknowledged < u64::from(replicated.replicas) {
        return Ok(Err(StoreError::NotReplicated {
            acknowledged,
            wanted: replicated.replicas,
        }));
    }
    Ok(Ok(reply))
}

impl Store for RedisStore {
    async fn decide(&self, check: &Check<'_>) -> Result<Answer, StoreError> {
        if let Some((policy, key)) = prefetched_pair(check) {
            return self
                .decide_prefetched(check, &self.inner.prefetches, policy, key)
                .await;
        }
        self.run(check, Operation::Decide).await
    }

    async fn refund(&self, check: &Check<'_>) -> Result<Answer, StoreError> {
        // A refund changes what a cached denial assumed.
        self.forget_denials(check);
        self.run(check, Operation::Refund).await
    }

    /// One script call per slot (on one node, one call). On a cluster, pairs in different
    /// slots are charged one slot after another, and a failure may leave the earlier ones
    /// charged.
    async fn debit(&self, charge: &Charge<'_>) -> Result<Answer, StoreError> {
        let check = charge.as_check();
        // A charge changes what a cached denial assumed.
        self.forget_denials(check);
        self.run(check, Operation::Debit).await
    }

    async fn release(&self, check: &Check<'_>) -> Result<(), StoreError> {
        if !check.takes_held_units() {
            return Ok(());
        }
        self.detached(check, Job::Release).await.map(|_| ())
    }

    async fn reset(&self, check: &Check<'_>) -> Result<(), StoreError> {
        self.detached(check, Job::Reset).await.map(|_| ())
    }

    fn clock(&self) -> Arc<dyn Clock> {
        RedisStore::clock(self).unwrap_or_else(|| Arc::new(floodwall_core::SystemClock::new()))
    }
}

impl RedisStore {
    /// [`Store::reset`] on the detached call's own task.
    async fn reset_now(&self, check: &Check<'_>) -> Result<(), StoreError> {
        self.forget_denials(check);
        // Units reserved before the reset were counted in the state it drops.
        for (policy, key) in check.pairs() {
            self.inner.prefetches.forget(policy, key);
        }
        // Keys of one client share a slot; several clients may not, so one DEL each.
        let deadline = Instant::now() + self.inner.timeout;
        for (policy, key) in check.pairs() {
            let key = storage_key_for_tag(&self.inner.prefix, policy, &client_tag(key));
            let cmd = ::redis::cmd("DEL").arg(key).to_owned();
            self.until(deadline, async {
                self.inner.connection.query(&cmd).await?;
                Ok(())
            })
            .await?;
        }
        Ok(())
    }
}
