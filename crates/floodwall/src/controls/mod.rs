//! Operator controls kept beside a limiter: blocks, and allow and deny lists. Each instance
//! screens its checks against its own copy; the copy is kept in the store (on Redis, one hash)
//! so that every instance sharing the store agrees within one [`Limiter::sync_controls`]
//! interval, and the instance that made a change applies it at once.
//!
//! [`Limiter::sync_controls`]: crate::Limiter::sync_controls

mod networks;
mod set;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::Duration;

use std::sync::Arc;

use floodwall_core::Clock;

pub use set::{
    Block, EntryError, List, ListEntry, Listed, MAX_CONTROL_BYTES, MAX_CONTROL_KEY_BYTES,
    MAX_CONTROLS, Provenance,
};
pub(crate) use set::{ControlSet, Screen};

use crate::error::StoreError;
use crate::storage::Storage;
use crate::store::{ControlStore, VERSION_FIELD};

/// Why an operator control could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The key or entry is longer than [`MAX_CONTROL_KEY_BYTES`].
    #[error("the key is {len} bytes; blocks and list entries name keys of at most {max} bytes")]
    KeyTooLong {
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// [`MAX_CONTROLS`] blocks and entries are in force already.
    #[error(
        "{max} blocks and list entries are in force already: remove some (or let blocks end) first"
    )]
    Full {
        /// The bound.
        max: usize,
    },
    /// The blocks and entries in force hold [`MAX_CONTROL_BYTES`] of keys already.
    #[error(
        "the blocks and list entries in force hold {max_bytes} bytes of keys already: remove some (or let blocks end) first"
    )]
    FullOfBytes {
        /// The bound.
        max_bytes: usize,
    },
    /// A block must last a while.
    #[error("a block must last at least 1 ms")]
    ZeroDuration,
    /// The entry is in the configuration file; only editing the file (and reloading) removes it.
    #[error("{entry} is on the {list} list in the configuration file: remove it there and reload")]
    FromConfig {
        /// The entry.
        entry: String,
        /// Its list.
        list: &'static str,
    },
    /// The store could not record the change; nothing changed.
    #[error("the store could not record the change: {0}")]
    Store(#[from] StoreError),
}

// The field layout of the controls record in a shared store: `b<policy>\0<key>` for a block
// (value `<until_ms> <at_ms> <by>`), `a<entry>` and `d<entry>` for list entries (value
// `<at_ms> <by>`), and the store's version field, a token changed with every write.

fn block_field(policy: &str, key: &[u8]) -> Vec<u8> {
    let mut field = Vec::with_capacity(policy.len() + key.len() + 2);
    field.push(b'b');
    field.extend_from_slice(policy.as_bytes());
    field.push(0);
    field.extend_from_slice(key);
    field
}

fn list_field(list: List, entry: &ListEntry) -> Vec<u8> {
    let mut field = vec![match list {
        List::Allow => b'a',
        List::Deny => b'd',
    }];
    field.extend(entry.to_bytes());
    field
}

/// Parses `<n> <n> … <by>`: `N` numbers, then the rest as the name.
fn numbers_and_name<const N: usize>(value: &[u8]) -> Option<([u64; N], String)> {
    let text = std::str::from_utf8(value).ok()?;
    let mut parts = text.splitn(N + 1, ' ');
    let mut numbers = [0; N];
    for number in &mut numbers {
        *number = parts.next()?.parse().ok()?;
    }
    Some((numbers, parts.next().unwrap_or_default().to_owned()))
}

/// Rebuilds the store's part of `set` from the hash's `(field, value)` pairs; pairs it cannot
/// read (written by something else) are skipped. Returns the fields of blocks that have ended.
fn load(set: &mut ControlSet, fields: Vec<(Vec<u8>, Vec<u8>)>, now_ms: u64) -> Vec<Vec<u8>> {
    set.retain(false, |listed| listed.from_config);
    let mut ended = Vec::new();
    for (field, value) in fields {
        match field.split_first() {
            Some((b'b', rest)) => {
                let Some(at) = rest.iter().position(|b| *b == 0) else {
                    continue;
                };
                let Ok(policy) = std::str::from_utf8(&rest[..at]) else {
                    continue;
                };
                let Some(([until_ms, at_ms], by)) = numbers_and_name::<2>(&value) else {
                    continue;
                };
                if until_ms <= now_ms {
                    ended.push(field.clone());
                    continue;
                }
                set.block(Block {
                    policy: policy.to_owned(),
                    key: rest[at + 1..].to_vec(),
                    until_ms,
                    made: Provenance { by, at_ms },
                });
            }
            Some((kind @ (b'a' | b'd'), entry)) => {
                let Some(([at_ms], by)) = numbers_and_name::<1>(&value) else {
                    continue;
                };
                let list = if *kind == b'a' {
                    List::Allow
                } else {
                    List::Deny
                };
                let entry = ListEntry::from_bytes(entry);
                // A configured entry stays as configured.
                if set.listed(list, &entry).is_none() {
                    set.list(Listed {
                        list,
                        entry,
                        made: Provenance { by, at_ms },
                        from_config: false,
                    });
                }
            }
            _ => {}
        }
    }
    ended
}

/// A limiter's blocks and lists.
#[derive(Debug)]
pub(crate) struct Controls {
    set: RwLock<ControlSet>,
    /// Whether anything is blocked or listed; read on every check, so that a limiter without
    /// controls pays one relaxed load for them.
    active: AtomicBool,
    /// The shared store's version token last loaded.
    version: Mutex<Option<Vec<u8>>>,
    /// Changes this instance made, counted: a load read before one of them landed would undo
    /// it here until the next load, so such a load is dropped.
    local_changes: AtomicU64,
    /// The limiter's wall clock: when blocks are made and end.
    clock: Arc<dyn Clock>,
}

impl Controls {
    pub(crate) fn new(clock: Arc<dyn Clock>) -> Self {
        Controls {
            set: RwLock::default(),
            active: AtomicBool::new(false),
            version: Mutex::new(None),
            local_changes: AtomicU64::new(0),
            clock,
        }
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.clock.now_us() / 1_000
    }

    #[inline]
    pub(crate) fn active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, ControlSet> {
        self.set.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn edit<T>(&self, change: impl FnOnce(&mut ControlSet) -> T) -> T {
        let mut set = self.set.write().unwrap_or_else(PoisonError::into_inner);
        let changed = change(&mut set);
        self.active.store(!set.is_empty(), Ordering::Relaxed);
        changed
    }

    /// [`Controls::edit`] for a change this instance made and the store recorded.
    fn edit_locally<T>(&self, change: impl FnOnce(&mut ControlSet) -> T) -> T {
        let changed = self.edit(change);
        self.local_changes.fetch_add(1, Ordering::SeqCst);
        changed
    }

    /// How to answer a check of `pairs`, now.
    pub(crate) fn screen<'k>(
        &self,
        pairs: impl ExactSizeIterator<Item = (&'k str, &'k [u8])> + Clone,
    ) -> Screen {
        self.read().screen(pairs, || self.now_ms())
    }

    pub(crate) fn screen_address(&self, address: IpAddr) -> Option<List> {
        if !self.active() {
            return None;
        }
        self.read().screen_address(address)
    }

    /// Replaces the configured list entries with `entries`, keeping what was made at run time.
    pub(crate) fn configure(&self, entries: Vec<(List, ListEntry)>) {
        let at_ms = self.now_ms();
        self.edit(|set| {
            set.retain(true, |listed| !listed.from_config);
            for (list, entry) in entries {
                set.list(Listed {
                    list,
                    entry,
                    made: Provenance {
                        by: "config".to_owned(),
                        at_ms,
                    },
                    from_config: true,
                });
            }
        });
    }

    pub(crate) fn blocks(&self) -> Vec<Block> {
        self.read().blocks(self.now_ms())
    }

    pub(crate) fn entries(&self) -> Vec<Listed> {
        self.read().entries()
    }

    fn room_for_one(&self, key_len: usize) -> Result<(), ControlError> {
        if key_len > MAX_CONTROL_KEY_BYTES {
            return Err(ControlError::KeyTooLong {
                len: key_len,
                max: MAX_CONTROL_KEY_BYTES,
            });
        }
        let now_ms = self.now_ms();
        let (count, bytes) = self.edit(|set| {
            set.prune(now_ms);
            (set.len(), set.key_bytes())
        });
        if count >= MAX_CONTROLS {
            return Err(ControlError::Full { max: MAX_CONTROLS });
        }
        if bytes + key_len > MAX_CONTROL_BYTES {
            return Err(ControlError::FullOfBytes {
                max_bytes: MAX_CONTROL_BYTES,
            });
        }
        Ok(())
    }

    pub(crate) async fn block(
        &self,
        store: &Storage,
        policy: &str,
        key: &[u8],
        duration: Duration,
        by: &str,
    ) -> Result<Block, ControlError> {
        if duration.is_zero() {
            return Err(ControlError::ZeroDuration);
        }
        self.room_for_one(key.len())?;
        let at_ms = self.now_ms();
        let millis = u64::try_from(duration.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let block = Block {
            policy: policy.to_owned(),
            key: key.to_vec(),
            until_ms: at_ms.saturating_add(millis),
            made: Provenance {
                by: by.to_owned(),
                at_ms,
            },
        };
        let value = format!("{} {at_ms} {by}", block.until_ms);
        store
            .write_controls(Some((block_field(policy, key), value.into_bytes())), None)
            .await?;
        self.edit_locally(|set| set.block(block.clone()));
        Ok(block)
    }

    pub(crate) async fn unblock(
        &self,
        store: &Storage,
        policy: &str,
        key: &[u8],
    ) -> Result<bool, ControlError> {
        store
            .write_controls(None, Some(block_field(policy, key)))
            .await?;
        let now_ms = self.now_ms();
        Ok(self.edit_locally(|set| {
            set.unblock(policy, key)
                .is_some_and(|b| b.until_ms > now_ms)
        }))
    }

    pub(crate) async fn list(
        &self,
        store: &Storage,
        list: List,
        entry: ListEntry,
        by: &str,
    ) -> Result<Listed, ControlError> {
        if let Some(listed) = self.read().listed(list, &entry)
            && listed.from_config
        {
            return Ok(listed.clone());
        }
        self.room_for_one(entry.to_bytes().len())?;
        let at_ms = self.now_ms();
        let listed = Listed {
            list,
            entry,
            made: Provenance {
                by: by.to_owned(),
                at_ms,
            },
            from_config: false,
        };
        let value = format!("{at_ms} {by}");
        store
            .write_controls(
                Some((list_field(list, &listed.entry), value.into_bytes())),
                None,
            )
            .await?;
        self.edit_locally(|set| set.list(listed.clone()));
        Ok(listed)
    }

    pub(crate) async fn unlist(
        &self,
        store: &Storage,
        list: List,
        entry: &ListEntry,
    ) -> Result<bool, ControlError> {
        if self
            .read()
            .listed(list, entry)
            .is_some_and(|listed| listed.from_config)
        {
            return Err(ControlError::FromConfig {
                entry: entry.to_string(),
                list: list.as_str(),
            });
        }
        store
            .write_controls(None, Some(list_field(list, entry)))
            .await?;
        Ok(self.edit_locally(|set| set.unlist(list, entry).is_some()))
    }

    /// Loads what other instances changed in the store since the last sync.
    pub(crate) async fn sync(&self, store: &Storage) -> Result<(), StoreError> {
        let Some(version) = store.controls_version().await? else {
            return Ok(());
        };
        let known = self
            .version
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if known.as_ref() == Some(&version) {
            return Ok(());
        }
        let changes = self.local_changes.load(Ordering::SeqCst);
        let fields = store.read_controls().await?;
        let loaded = fields
            .iter()
            .find(|(field, _)| field == VERSION_FIELD)
            .map(|(_, value)| value.clone());
        let now_ms = self.now_ms();
        let ended = self.edit(|set| {
            // A change made here meanwhile may be missing from what was read: load next time.
            (self.local_changes.load(Ordering::SeqCst) == changes)
                .then(|| load(set, fields, now_ms))
        });
        let Some(ended) = ended else {
            return Ok(());
        };
        *self.version.lock().unwrap_or_else(PoisonError::into_inner) = loaded;
        // Ended blocks are dropped from the store by whichever instance sees them first.
        for field in ended {
            store.write_controls(None, Some(field)).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_layout_reads_back_what_was_written_and_skips_the_rest() {
        let mut set = ControlSet::default();
        let fields = vec![
            (
                block_field("per-ip", b"k\0ey"),
                b"9000 10 ops team".to_vec(),
            ),
            (block_field("per-ip", b"old"), b"500 10 ops".to_vec()),
            (
                list_field(List::Deny, &ListEntry::parse("203.0.113.0/24").unwrap()),
                b"10 ops".to_vec(),
            ),
            (
                list_field(List::Allow, &ListEntry::parse("monitor").unwrap()),
                b"10 ".to_vec(),
            ),
            (b"bbroken".to_vec(), b"x".to_vec()),
            (b"a".to_vec(), b"not a number".to_vec()),
            (VERSION_FIELD.to_vec(), b"123".to_vec()),
        ];
        let ended = load(&mut set, fields, 1_000);
        assert_eq!(ended, vec![block_field("per-ip", b"old")]);
        let blocks = set.blocks(1_000);
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].key, b"k\0ey");
        assert_eq!(blocks[0].made.by, "ops team");
        assert_eq!(set.entries().len(), 2);
    }
}
