//! Whether Redis accepts the store: its credentials and the commands and keys its ACL allows,
//! asked on a connection of the store's own, since the reconnecting connection sees a password
//! changed under it only as reconnections that fail.

use std::time::Duration;

use ::redis::Value;
use tokio::time::Instant;

use super::{Connection, RedisStore};
use crate::error::{StoreError, StoreErrorKind};

/// How often [`RedisStore::diagnose`] opens a connection to ask, at most.
const DIAGNOSE_EVERY: Duration = Duration::from_secs(1);

/// What [`RedisStore::diagnose`] found, and when it asked.
#[derive(Debug, Default)]
pub(super) struct Diagnosis {
    asked: Option<Instant>,
    refusal: Option<StoreError>,
}

impl RedisStore {
    /// Checks, within `within`, that Redis accepts the store's credentials and lets it run
    /// scripts on its keys, on a connection of its own (a refusal would only be retried by the
    /// store's reconnecting one).
    ///
    /// # Errors
    ///
    /// The refusal (see [`StoreError::is_access_denied`]), or why Redis could not be asked:
    /// [`StoreError::Timeout`], or the connection's error.
    pub async fn verify_access(&self, within: Duration) -> Result<(), StoreError> {
        let mut probe = ::redis::cmd("EVAL");
        probe
            .arg("return 1")
            .arg(1)
            .arg(format!("{}:probe", self.inner.prefix));
        let asked = async {
            match &self.inner.connection {
                Connection::Node(_, client) => {
                    let mut connection = client.get_multiplexed_async_connection().await?;
                    probe.query_async::<Value>(&mut connection).await
                }
                Connection::Cluster(connection) => {
                    probe.query_async::<Value>(&mut connection.clone()).await
                }
                Connection::Sentinel(sentinels) => {
                    // The master in use, asked on a connection of its own; with none found yet,
                    // the sentinels' question answers.
                    match sentinels.master() {
                        Some(master) => {
                            let mut connection =
                                master.client.get_multiplexed_async_connection().await?;
                            probe.query_async::<Value>(&mut connection).await
                        }
                        None => sentinels.query(&probe).await,
                    }
                }
            }
        };
        match tokio::time::timeout(within, asked).await {
            Ok(answer) => answer.map(|_| ()).map_err(StoreError::from),
            Err(_) => Err(StoreError::Timeout { after: within }),
        }
    }

    /// Why Redis refuses this store, if it does (`WRONGPASS`, `NOAUTH`, `NOPERM`): asked on a
    /// connection of its own, since the store's reconnecting one sees a password changed under
    /// it only as reconnections that fail (broken pipes, protocol errors, timeouts). Asks at most
    /// once per second and answers from the last asking in between; `None` when Redis accepts
    /// the store, or cannot be asked at all.
    pub async fn diagnose(&self) -> Option<StoreError> {
        {
            let diagnosis = self.diagnosis();
            if diagnosis
                .asked
                .is_some_and(|asked| asked.elapsed() < DIAGNOSE_EVERY)
            {
                return diagnosis.refusal.clone();
            }
        }
        let within = self.inner.timeout.max(Duration::from_millis(100));
        let found = self
            .verify_access(within)
            .await
            .err()
            .filter(StoreError::is_access_denied);
        *self.diagnosis() = Diagnosis {
            asked: Some(Instant::now()),
            refusal: found.clone(),
        };
        found
    }

    /// The kind of the refusal [`RedisStore::diagnose`] found, if it found one in the last
    /// few seconds (a diagnosis older than that may be stale: it is asked again while an outage
    /// lasts).
    pub fn refusal_kind(&self) -> Option<StoreErrorKind> {
        let diagnosis = self.diagnosis();
        let recent = diagnosis
            .asked
            .is_some_and(|asked| asked.elapsed() < 5 * DIAGNOSE_EVERY);
        diagnosis
            .refusal
            .as_ref()
            .filter(|_| recent)
            .map(StoreError::kind)
    }

    fn diagnosis(&self) -> std::sync::MutexGuard<'_, Diagnosis> {
        self.inner
            .diagnosis
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
