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
//!   `deny_cache.rs` for why it never admits more than Redis would).

mod breaker;
mod config;
mod deny_cache;
mod reply;
mod script;

use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClientBuilder;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{ErrorKind, RedisError, RetryMethod, ServerErrorKind, Value};
use floodwall_core::algorithm::check_cost;
use floodwall_core::key::{client_tag, storage_key_for_tag, validate_prefix};
use floodwall_core::{Clock, Policy};
use smallvec::SmallVec;

use self::breaker::{Admission, Breakers};
pub use self::config::{
    DEFAULT_BREAKER_THRESHOLD, DEFAULT_PREFIX, DEFAULT_PROBE_INTERVAL, DEFAULT_TIMEOUT, RedisConfig,
};
use self::config::{Target, parse_url};
use self::deny_cache::DenyCache;
use crate::error::StoreError;
use crate::store::Store;
use crate::verdict::{Verdict, verdict};

/// How often a call answered by "not executed, try elsewhere or later" is sent again.
const MAX_NOT_EXECUTED_RETRIES: u32 = 5;

/// The state of a [`RedisStore`]'s circuit breakers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisStats {
    /// Breakers open now: their slots fail fast, with one probe per interval.
    pub open_breakers: usize,
    /// Breakers in all: 1 for a single node, one per group of 256 slots on a cluster.
    pub breakers: usize,
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
    clock: Option<Arc<dyn Clock>>,
    breakers: Breakers,
    deny_cache: Option<DenyCache>,
    /// Random per store: with `sequence`, names each call uniquely (sliding-log members).
    instance: u64,
    sequence: AtomicU64,
}

#[derive(Clone)]
enum Connection {
    Node(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Connection {
    async fn query(&self, cmd: &::redis::Cmd) -> Result<Value, RedisError> {
        match self {
            Connection::Node(connection) => cmd.query_async(&mut connection.clone()).await,
            Connection::Cluster(connection) => cmd.query_async(&mut connection.clone()).await,
        }
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let topology = match self.inner.connection {
            Connection::Node(_) => "node",
            Connection::Cluster(_) => "cluster",
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
        validate_prefix(&config.prefix).map_err(|e| StoreError::Config {
            detail: e.to_string(),
        })?;
        let target = parse_url(&config.url)?;
        let breakers = Breakers::new(
            matches!(target, Target::Cluster(_)),
            config.breaker_threshold,
            config.probe_interval,
        );
        #[cfg(feature = "tls")]
        if target.is_tls() {
            // rustls needs a process-wide provider; an application that installed its own keeps it.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let connection = match &target {
            Target::Node(url) => {
                let client = node_client(&config, &target, url)?;
                let manager = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(config.timeout.max(Duration::from_millis(100))))
                    // The store applies its own deadline to each call.
                    .set_response_timeout(None)
                    .set_min_delay(Duration::from_millis(10))
                    .set_max_delay(Duration::from_secs(1))
                    .set_number_of_retries(usize::MAX);
                Connection::Node(ConnectionManager::new_lazy_with_config(client, manager)?)
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
        Ok(RedisStore {
            inner: Arc::new(Inner {
                connection,
                prefix: config.prefix,
                timeout: config.timeout,
                clock: config.clock.clone(),
                breakers,
                deny_cache: (config.deny_cache > 0)
                    .then(|| DenyCache::new(config.deny_cache, config.clock.clone())),
                instance,
                sequence: AtomicU64::new(0),
            }),
        })
    }

    /// The circuit breakers' state now.
    pub fn stats(&self) -> RedisStats {
        let (open_breakers, breakers) = self.inner.breakers.open_groups();
        RedisStats {
            open_breakers,
            breakers,
        }
    }

    async fn decide(
        &self,
        policies: &[Policy],
        key: &[u8],
        cost: u64,
    ) -> Result<Verdict, StoreError> {
        for policy in policies {
            check_cost(policy, cost)?;
        }
        if policies.is_empty() {
            return Ok(verdict(policies, SmallVec::new(), true));
        }
        let need = cost.max(1);
        let cached = self
            .inner
            .deny_cache
            .as_ref()
            .map(|cache| (cache, cache.key_id(key), cache.policies_id(policies)));
        if let Some((cache, key_id, policies_id)) = cached
            && let Some(verdict) = cache.get(key_id, policies_id, need)
        {
            return Ok(verdict);
        }
        // The tag is computed once: it names every key and picks the breaker.
        let tag = client_tag(key);
        let group = self.inner.breakers.group(slot_of(&tag));
        let admission = self.inner.breakers.admit(group);
        if admission == Admission::Open {
            return Err(StoreError::CircuitOpen {
                probe_interval: self.inner.breakers.probe_interval(),
            });
        }
        let keys: Vec<String> = policies
            .iter()
            .map(|p| storage_key_for_tag(&self.inner.prefix, p, &tag))
            .collect();
        let sequence = self.inner.sequence.fetch_add(1, Ordering::Relaxed);
        let token = format!("{:x}.{sequence:x}", self.inner.instance);
        let now_us = self.inner.clock.as_ref().map(|clock| clock.now_us());
        let call = async {
            let mut with_source = false;
            let mut retries = 0;
            loop {
                let cmd = script::command(with_source, &keys, now_us, cost, &token, policies);
                match self.inner.connection.query(&cmd).await {
                    Ok(reply) => return reply::decode(&reply, policies),
                    Err(e)
                        if !with_source
                            && e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) =>
                    {
                        with_source = true;
                    }
                    Err(e) if not_executed(&e) && retries < MAX_NOT_EXECUTED_RETRIES => {
                        retries += 1;
                        tokio::time::sleep(Duration::from_millis(1 << retries)).await;
                    }
                    Err(e) => return Err(StoreError::from(e)),
                }
            }
        };
        let result = self.within_deadline(call).await;
        // A malformed reply still proves the store reachable; anything else failing counts.
        let healthy = !matches!(
            result,
            Err(StoreError::Timeout { .. } | StoreError::Redis { .. })
        );
        self.inner.breakers.record(group, admission, healthy);
        if let (Some((cache, key_id, policies_id)), Ok(verdict)) = (cached, &result)
            && !verdict.allowed
        {
            cache.put(key_id, policies_id, need, verdict);
        }
        result
    }

    async fn within_deadline<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.inner.timeout, call)
            .await
            .unwrap_or(Err(StoreError::Timeout {
                after: self.inner.timeout,
            }))
    }
}

impl Store for RedisStore {
    async fn acquire(
        &self,
        policies: &[Policy],
        key: &[u8],
        cost: u64,
    ) -> Result<Verdict, StoreError> {
        self.decide(policies, key, cost).await
    }

    async fn peek(&self, policies: &[Policy], key: &[u8]) -> Result<Verdict, StoreError> {
        self.decide(policies, key, 0).await
    }

    async fn reset(&self, policies: &[Policy], key: &[u8]) -> Result<(), StoreError> {
        if policies.is_empty() {
            return Ok(());
        }
        if let Some(cache) = &self.inner.deny_cache {
            cache.forget(cache.key_id(key));
        }
        let tag = client_tag(key);
        let mut cmd = ::redis::cmd("DEL");
        for policy in policies {
            cmd.arg(storage_key_for_tag(&self.inner.prefix, policy, &tag));
        }
        // One slot (one hash tag), so one DEL even on a cluster.
        self.within_deadline(async {
            self.inner.connection.query(&cmd).await?;
            Ok(())
        })
        .await
    }
}
