//! The operator controls in Redis: one hash beside the limit state, read by every instance.

use redis::Value;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;

use super::RedisStore;
use crate::error::StoreError;
use crate::store::{ControlStore, VERSION_FIELD};

impl RedisStore {
    /// `<prefix>:controls`: no state key has this form (each ends with its `{tag}`).
    fn controls_key(&self) -> String {
        format!("{}:controls", self.inner.prefix)
    }

    /// `<prefix>:record:<name>`: no state key has this form either.
    fn record_key(&self, name: &str) -> String {
        format!("{}:record:{name}", self.inner.prefix)
    }

    async fn controls_query(&self, cmd: &::redis::Cmd) -> Result<Value, StoreError> {
        let deadline = Instant::now() + self.inner.timeout;
        self.until(deadline, async {
            Ok(self.inner.connection.query(cmd).await?)
        })
        .await
    }
}

/// One hash, `<prefix>:controls`, beside the limit state.
impl ControlStore for RedisStore {
    async fn controls_version(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let cmd = ::redis::cmd("HGET")
            .arg(self.controls_key())
            .arg(VERSION_FIELD)
            .to_owned();
        match self.controls_query(&cmd).await? {
            Value::BulkString(version) => Ok(Some(version)),
            // Nothing was ever stored: an empty version, so that the first sync loads nothing.
            Value::Nil => Ok(Some(Vec::new())),
            other => Err(StoreError::Reply {
                detail: format!("HGET of the controls' version answered {other:?}"),
            }),
        }
    }

    async fn read_controls(&self) -> Result<Vec<crate::store::ControlField>, StoreError> {
        let cmd = ::redis::cmd("HGETALL").arg(self.controls_key()).to_owned();
        let reply = self.controls_query(&cmd).await?;
        let malformed = || StoreError::Reply {
            detail: "HGETALL of the controls answered something other than fields and values"
                .to_owned(),
        };
        let items = match reply {
            Value::Array(items) => items
                .chunks_exact(2)
                .map(|pair| match pair {
                    [Value::BulkString(field), Value::BulkString(value)] => {
                        Some((field.clone(), value.clone()))
                    }
                    _ => None,
                })
                .collect::<Option<Vec<_>>>(),
            Value::Map(pairs) => pairs
                .into_iter()
                .map(|pair| match pair {
                    (Value::BulkString(field), Value::BulkString(value)) => Some((field, value)),
                    _ => None,
                })
                .collect(),
            _ => None,
        };
        items.ok_or_else(malformed)
    }

    /// Writes a change of the controls, and a new version token that tells every instance to
    /// reload, on a task of its own: a caller that leaves mid-write cannot leave the change
    /// without its token (other instances would not see it until the next write).
    async fn write_controls(
        &self,
        set: Option<crate::store::ControlField>,
        remove: Option<Vec<u8>>,
    ) -> Result<(), StoreError> {
        let store = self.clone();
        let written = self.inner.detached.spawn(async move {
            let key = store.controls_key();
            if let Some(field) = remove {
                let cmd = ::redis::cmd("HDEL").arg(&key).arg(field).to_owned();
                store.controls_query(&cmd).await?;
            }
            // A fresh token per write: readers compare it, so it needs no order, only to change.
            let version = format!(
                "{:x}-{:x}",
                store.inner.instance,
                store.inner.sequence.fetch_add(1, Ordering::Relaxed)
            );
            let mut cmd = ::redis::cmd("HSET");
            cmd.arg(&key).arg(VERSION_FIELD).arg(version);
            if let Some((field, value)) = set {
                cmd.arg(field).arg(value);
            }
            store.controls_query(&cmd).await?;
            Ok(())
        });
        written.await.unwrap_or_else(|_| {
            Err(StoreError::Reply {
                detail: "the controls write's task ended".to_owned(),
            })
        })
    }

    /// `SET … PX`: the record expires with its time to live, wherever it was kept.
    async fn put_record(&self, name: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let cmd = ::redis::cmd("SET")
            .arg(self.record_key(name))
            .arg(value)
            .arg("PX")
            .arg(ttl_ms)
            .to_owned();
        match self.controls_query(&cmd).await? {
            Value::Okay => Ok(()),
            Value::SimpleString(ok) if ok == "OK" => Ok(()),
            other => Err(StoreError::Reply {
                detail: format!("SET of a record answered {other:?}"),
            }),
        }
    }

    /// `GETDEL`: one atomic command, so of any number of takers one gets the record.
    async fn take_record(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let cmd = ::redis::cmd("GETDEL").arg(self.record_key(name)).to_owned();
        match self.controls_query(&cmd).await? {
            Value::BulkString(value) => Ok(Some(value)),
            Value::Nil => Ok(None),
            other => Err(StoreError::Reply {
                detail: format!("GETDEL of a record answered {other:?}"),
            }),
        }
    }
}
