//! Redis behind Sentinel: which node is the master is asked of the sentinels at start, when a
//! sentinel announces a failover, and after an error that suggests one; never on every call.
//!
//! Calls go to the master last found, on a reconnecting connection of its own. Three things wake
//! the one background task that asks the sentinels again: a `+switch-master` announcement for
//! this master (the store listens on every sentinel), an error a failover would cause (the
//! connection refused or dropped, `READONLY` from a demoted master, `MASTERDOWN`), and the
//! breaker opening on timeouts. The task asks until the sentinels name a master that confirms
//! its role; when that master is a new one, the connection is replaced, and the change is logged
//! and counted. Failing calls fail (the limiter answers them per `on_error`): a call that may
//! have run on the old master is never sent again. The new master has none of the scripts
//! cached, which the `NOSCRIPT` handling of every call already covers.
//!
//! The asking is written here rather than taken from redis-rs's `SentinelClient`, which takes
//! the first sentinel in the list that names a node claiming the master role. After a failover a
//! sentinel missed, that can be the old master, which keeps claiming the role (and accepting
//! writes that will be lost) until the sentinels convert it, seconds later. Sentinels that
//! disagree are ordered by their configuration epoch, which every failover increments: the
//! highest wins.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{
    AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, RedisError,
    Role, Value,
};
use ::redis::{ErrorKind, ServerErrorKind};
use floodwall_core::Clock;
use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use super::config::{RedisConfig, SentinelTarget};
use crate::error::StoreError;

/// How long one question to one sentinel, or the master's `ROLE`, may take.
const ASK_DEADLINE: Duration = Duration::from_secs(1);

/// The pause between rounds while no sentinel names a reachable master (and between attempts to
/// listen to a sentinel), doubling up to [`MAX_RETRY_PAUSE`].
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(50);
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// The channel on which sentinels announce a new master: `NAME OLD_IP OLD_PORT NEW_IP NEW_PORT`.
const SWITCH_MASTER: &str = "+switch-master";

/// The environment variables that name the sentinels' own credentials, when they differ from
/// the master's (an empty password: the sentinels ask for none).
pub(crate) const SENTINEL_USERNAME_ENV: &str = "FLOODWALL_SENTINEL_USERNAME";
pub(crate) const SENTINEL_PASSWORD_ENV: &str = "FLOODWALL_SENTINEL_PASSWORD";

/// The master a [`RedisStore`](super::RedisStore) behind Sentinel uses now.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SentinelMaster {
    /// The name the sentinels monitor it under.
    pub name: String,
    /// `host:port` of the master in use, or `None` before any sentinel has named one.
    pub address: Option<String>,
    /// When the store last changed master (the first one found counts), in milliseconds since
    /// the Unix epoch; 0 before any.
    pub changed_at_unix_ms: u64,
    /// Masters found since the store started, the first one included.
    pub changes: u64,
}

/// The master in use: its address, the reconnecting connection to it, and a client that opens
/// fresh connections (to tell a refusal the reconnecting one would only retry).
pub(crate) struct Master {
    pub(crate) address: String,
    pub(crate) connection: ConnectionManager,
    pub(crate) client: ::redis::Client,
}

/// Why a round of questions found no master to use.
#[derive(Debug)]
enum NoMaster {
    /// Every sentinel that answered monitors no master of that name.
    UnknownName,
    /// No sentinel answered, or the master they name is down or does not confirm its role.
    Unavailable(String),
}

/// The sentinels, the master they last named, and the tasks that ask and listen to them.
pub(crate) struct Sentinels {
    /// One client per sentinel, in the URL's order, with the sentinels' credentials.
    sentinels: Vec<::redis::Client>,
    name: String,
    /// How to reach a master the sentinels name: database, credentials, TLS.
    master_settings: RedisConnectionInfo,
    tls: bool,
    #[cfg(feature = "tls")]
    certificates: Option<::redis::TlsCertificates>,
    master: RwLock<Option<Arc<Master>>>,
    manager_config: ConnectionManagerConfig,
    /// Wakes the task that asks the sentinels; dropping the store wakes it to end.
    suspect: Arc<Notify>,
    /// The least time between two rounds of questions after suspected failovers.
    min_interval: Duration,
    changes: AtomicU64,
    changed_at_unix_ms: AtomicU64,
    wall_clock: floodwall_core::SystemClock,
    /// The tasks that listen for `+switch-master`, one per sentinel.
    listeners: Vec<AbortHandle>,
}

impl Sentinels {
    /// Sentinels for `target`, with a first master asked of them now. A master name no
    /// reachable sentinel knows is an error; sentinels or a master that cannot be reached yet
    /// are not (calls fail until they can, and the store keeps asking).
    pub(crate) async fn connect(
        target: &SentinelTarget,
        config: &RedisConfig,
        manager_config: ConnectionManagerConfig,
    ) -> Result<Arc<Self>, StoreError> {
        let sentinels = sentinel_clients(target, config)?;
        let master_settings =
            settings(target.username.as_deref(), target.password.as_deref()).set_db(target.db);
        let suspect = Arc::new(Notify::new());
        let listeners = sentinels
            .iter()
            .map(|client| {
                tokio::spawn(listen(
                    client.clone(),
                    target.master_name.clone(),
                    Arc::clone(&suspect),
                ))
                .abort_handle()
            })
            .collect();
        let store = Arc::new(Sentinels {
            sentinels,
            name: target.master_name.clone(),
            master_settings,
            tls: target.tls,
            #[cfg(feature = "tls")]
            certificates: config.tls.certificates(),
            master: RwLock::new(None),
            manager_config,
            suspect: Arc::clone(&suspect),
            min_interval: config.probe_interval.max(Duration::from_millis(50)),
            changes: AtomicU64::new(0),
            changed_at_unix_ms: AtomicU64::new(0),
            wall_clock: floodwall_core::SystemClock::new(),
            listeners,
        });
        match store.ask_once().await {
            Ok(()) => {}
            Err(NoMaster::UnknownName) => {
                return Err(StoreError::Config {
                    detail: format!(
                        "no sentinel monitors a master named {:?}: check the name in the URL's \
                         path (`SENTINEL MASTERS` on a sentinel lists the names it monitors)",
                        target.master_name
                    ),
                });
            }
            Err(NoMaster::Unavailable(why)) => {
                tracing::warn!(master = %target.master_name, %why,
                    "no master can be used yet; calls fail until the sentinels name one");
                suspect.notify_one();
            }
        }
        tokio::spawn(follow(Arc::downgrade(&store), suspect));
        Ok(store)
    }

    /// The master in use, if one has been found.
    pub(crate) fn master(&self) -> Option<Arc<Master>> {
        self.master.read().ok().and_then(|master| master.clone())
    }

    /// Runs `cmd` on the master, and has the sentinels asked again if the error it meets
    /// suggests a failover.
    pub(crate) async fn query(&self, cmd: &::redis::Cmd) -> Result<Value, RedisError> {
        self.on_master(|mut master| async move { cmd.query_async(&mut master).await })
            .await
    }

    /// As [`Sentinels::query`], for a pipeline.
    pub(crate) async fn pipeline(
        &self,
        pipeline: &::redis::Pipeline,
    ) -> Result<Vec<Value>, RedisError> {
        self.on_master(|mut master| async move { pipeline.query_async(&mut master).await })
            .await
    }

    /// Sends what `send` sends on the master's connection; an error that suggests a failover
    /// (or no master known) has the sentinels asked again.
    async fn on_master<T, F>(
        &self,
        send: impl FnOnce(ConnectionManager) -> F,
    ) -> Result<T, RedisError>
    where
        F: Future<Output = Result<T, RedisError>>,
    {
        let Some(master) = self.master() else {
            self.suspect_failover();
            return Err(self.no_master());
        };
        let result = send(master.connection.clone()).await;
        if let Err(error) = &result
            && suggests_failover(error)
        {
            self.suspect_failover();
        }
        result
    }

    fn no_master(&self) -> RedisError {
        RedisError::from((
            ErrorKind::Io,
            "no master known yet",
            format!(
                "no sentinel has named a reachable master for {:?}",
                self.name
            ),
        ))
    }

    /// Has the sentinels asked again soon (at most once per interval, however often it is
    /// called).
    pub(crate) fn suspect_failover(&self) {
        self.suspect.notify_one();
    }

    /// The master in use and when it changed.
    pub(crate) fn describe(&self) -> SentinelMaster {
        SentinelMaster {
            name: self.name.clone(),
            address: self.master().map(|master| master.address.clone()),
            changed_at_unix_ms: self.changed_at_unix_ms.load(Ordering::Relaxed),
            changes: self.changes.load(Ordering::Relaxed),
        }
    }

    /// One round: asks every sentinel which node is the master, takes the answer of the highest
    /// configuration epoch, checks that node's role, and connects to it when it is a new one.
    async fn ask_once(&self) -> Result<(), NoMaster> {
        let answers = futures_util::future::join_all(
            self.sentinels
                .iter()
                .map(|sentinel| ask_sentinel(sentinel, &self.name)),
        )
        .await;
        let mut answered = 0;
        let mut unknown = 0;
        let mut newest: Option<Named> = None;
        let mut last_error = None;
        for answer in answers {
            match answer {
                Ok(Some(named)) => {
                    answered += 1;
                    if !named.down && newest.as_ref().is_none_or(|n| named.epoch > n.epoch) {
                        newest = Some(named);
                    }
                }
                Ok(None) => {
                    answered += 1;
                    unknown += 1;
                }
                Err(error) => last_error = Some(error.to_string()),
            }
        }
        if answered > 0 && unknown == answered {
            return Err(NoMaster::UnknownName);
        }
        let Some(named) = newest else {
            return Err(NoMaster::Unavailable(match last_error {
                Some(error) if answered == 0 => format!("no sentinel answers: {error}"),
                _ => "the sentinels consider the master down".to_owned(),
            }));
        };
        let address = format!("{}:{}", named.host, named.port);
        let client = self
            .master_client(named.host, named.port)
            .map_err(|e| NoMaster::Unavailable(e.to_string()))?;
        confirm_master(&client)
            .await
            .map_err(|why| NoMaster::Unavailable(format!("{address}: {why}")))?;
        let previous = self.master().map(|master| master.address.clone());
        if previous.as_deref() == Some(address.as_str()) {
            return Ok(());
        }
        let connection =
            ConnectionManager::new_lazy_with_config(client.clone(), self.manager_config.clone())
                .map_err(|e| NoMaster::Unavailable(e.to_string()))?;
        let master = Arc::new(Master {
            address: address.clone(),
            connection,
            client,
        });
        if let Ok(mut slot) = self.master.write() {
            *slot = Some(master);
        }
        self.changes.fetch_add(1, Ordering::Relaxed);
        self.changed_at_unix_ms
            .store(self.wall_clock.now_us() / 1_000, Ordering::Relaxed);
        match previous {
            None => tracing::info!(master = %self.name, %address, epoch = named.epoch,
                "redis master found by the sentinels"),
            Some(previous) => tracing::warn!(master = %self.name, from = %previous, to = %address,
                epoch = named.epoch, "redis master changed: calls now go to the new master"),
        }
        Ok(())
    }

    /// A client for the master at `host:port`, with the URL's database, credentials and TLS.
    fn master_client(&self, host: String, port: u16) -> Result<::redis::Client, RedisError> {
        client_at(
            host,
            port,
            self.tls,
            self.master_settings.clone(),
            #[cfg(feature = "tls")]
            self.certificates.as_ref(),
        )
    }
}

impl Drop for Sentinels {
    fn drop(&mut self) {
        for listener in &self.listeners {
            listener.abort();
        }
        // The following task holds only a weak reference: wake it so that it sees the store gone.
        self.suspect.notify_one();
    }
}

/// What one sentinel says of the master.
struct Named {
    host: String,
    port: u16,
    epoch: u64,
    /// The sentinel considers it down (subjectively or objectively).
    down: bool,
}

/// Asks one sentinel for the master of `name`: `None` when it monitors no master of that name.
async fn ask_sentinel(sentinel: &::redis::Client, name: &str) -> Result<Option<Named>, RedisError> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(ASK_DEADLINE))
        .set_response_timeout(Some(ASK_DEADLINE));
    let mut connection = sentinel
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let fields: HashMap<String, String> = match ::redis::cmd("SENTINEL")
        .arg("MASTER")
        .arg(name)
        .query_async(&mut connection)
        .await
    {
        Ok(fields) => fields,
        Err(error) if error.to_string().contains("No such master") => return Ok(None),
        Err(error) => return Err(error),
    };
    let malformed = || {
        RedisError::from((
            ErrorKind::UnexpectedReturnType,
            "malformed SENTINEL MASTER reply",
        ))
    };
    let host = fields.get("ip").cloned().ok_or_else(malformed)?;
    let port = fields
        .get("port")
        .and_then(|port| port.parse().ok())
        .ok_or_else(malformed)?;
    let epoch = fields
        .get("config-epoch")
        .and_then(|epoch| epoch.parse().ok())
        .unwrap_or(0);
    let flags = fields.get("flags").map_or("", String::as_str);
    Ok(Some(Named {
        host,
        port,
        epoch,
        down: flags.contains("s_down") || flags.contains("o_down"),
    }))
}

/// Checks that the node `client` reaches says it is a master (a demoted one says replica).
async fn confirm_master(client: &::redis::Client) -> Result<(), String> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(ASK_DEADLINE))
        .set_response_timeout(Some(ASK_DEADLINE));
    let role = async {
        let mut connection = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        ::redis::cmd("ROLE")
            .query_async::<Role>(&mut connection)
            .await
    };
    match role.await {
        Ok(Role::Primary { .. }) => Ok(()),
        Ok(_) => Err("the node the sentinels name is not a master (yet)".to_owned()),
        Err(error) => Err(error.to_string()),
    }
}

/// The task that asks the sentinels whenever a failover is suspected: until they name a master
/// that confirms its role, then no sooner than `min_interval` again.
async fn follow(sentinels: Weak<Sentinels>, suspect: Arc<Notify>) {
    loop {
        suspect.notified().await;
        let mut pause = FIRST_RETRY_PAUSE;
        loop {
            let Some(store) = sentinels.upgrade() else {
                return;
            };
            let outcome = store.ask_once().await;
            let min_interval = store.min_interval;
            drop(store);
            match outcome {
                Ok(()) => {
                    tokio::time::sleep(min_interval).await;
                    break;
                }
                Err(why) => {
                    tracing::debug!(?why, "no master can be used yet");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_RETRY_PAUSE);
                }
            }
        }
    }
}

/// Listens to one sentinel's `+switch-master` announcements and wakes the asking task for each
/// one about `name`; after losing the sentinel, listens again (and has the sentinels asked, in
/// case an announcement was missed meanwhile).
async fn listen(sentinel: ::redis::Client, name: String, suspect: Arc<Notify>) {
    let mut pause = FIRST_RETRY_PAUSE;
    let mut first = true;
    loop {
        let subscribed = async {
            let mut pubsub = sentinel.get_async_pubsub().await?;
            pubsub.subscribe(SWITCH_MASTER).await?;
            Ok::<_, RedisError>(pubsub)
        };
        if let Ok(Ok(mut pubsub)) = tokio::time::timeout(ASK_DEADLINE, subscribed).await {
            if !first {
                suspect.notify_one();
            }
            first = false;
            pause = FIRST_RETRY_PAUSE;
            let mut announcements = pubsub.on_message();
            while let Some(announcement) = announcements.next().await {
                let about_ours = announcement
                    .get_payload::<String>()
                    .is_ok_and(|payload| payload.split(' ').next() == Some(name.as_str()));
                if about_ours {
                    suspect.notify_one();
                }
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_RETRY_PAUSE);
    }
}

/// Whether `error` is what calls meet while a master is replaced: the connection refused or
/// dropped, or a demoted master refusing writes.
fn suggests_failover(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_refusal()
        || error.is_connection_dropped()
        || matches!(
            error.kind(),
            ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
        )
}

/// The sentinels' own credentials: the environment's when it names them, else the URL's.
fn sentinel_credentials(target: &SentinelTarget) -> (Option<String>, Option<String>) {
    let username = std::env::var(SENTINEL_USERNAME_ENV).ok();
    match std::env::var(SENTINEL_PASSWORD_ENV) {
        Ok(password) if password.is_empty() => (None, None),
        Ok(password) => (username.or_else(|| target.username.clone()), Some(password)),
        Err(_) => (
            username.or_else(|| target.username.clone()),
            target.password.clone(),
        ),
    }
}

/// The address of a node or a sentinel, over TLS when the URL asks for it.
fn address(host: String, port: u16, tls: bool) -> ConnectionAddr {
    #[cfg(feature = "tls")]
    if tls {
        return ConnectionAddr::TcpTls {
            host,
            port,
            insecure: false,
            tls_params: None,
        };
    }
    let _ = tls;
    ConnectionAddr::Tcp(host, port)
}

/// Connection settings with these credentials.
fn settings(username: Option<&str>, password: Option<&str>) -> RedisConnectionInfo {
    let mut settings = RedisConnectionInfo::default();
    if let Some(username) = username {
        settings = settings.set_username(username);
    }
    if let Some(password) = password {
        settings = settings.set_password(password);
    }
    settings
}

/// A client for `host:port` with `settings`, over TLS (trusting `certificates` when given) when
/// `tls`.
fn client_at(
    host: String,
    port: u16,
    tls: bool,
    settings: RedisConnectionInfo,
    #[cfg(feature = "tls")] certificates: Option<&::redis::TlsCertificates>,
) -> Result<::redis::Client, RedisError> {
    let info = address(host, port, tls)
        .into_connection_info()?
        .set_redis_settings(settings);
    #[cfg(feature = "tls")]
    if let Some(certificates) = certificates
        && tls
    {
        return ::redis::Client::build_with_tls(info, certificates.clone());
    }
    ::redis::Client::open(info)
}

/// A client per sentinel, in the URL's order, with the sentinels' credentials and TLS.
fn sentinel_clients(
    target: &SentinelTarget,
    config: &RedisConfig,
) -> Result<Vec<::redis::Client>, StoreError> {
    let (username, password) = sentinel_credentials(target);
    let settings = settings(username.as_deref(), password.as_deref());
    #[cfg(feature = "tls")]
    let certificates = config.tls.certificates();
    #[cfg(not(feature = "tls"))]
    let _ = config;
    let mut clients = Vec::with_capacity(target.sentinels.len());
    for (host, port) in &target.sentinels {
        clients.push(client_at(
            host.clone(),
            *port,
            target.tls,
            settings.clone(),
            #[cfg(feature = "tls")]
            certificates.as_ref(),
        )?);
    }
    Ok(clients)
}
