//! The shared-controls part of the store protocol: a store that several instances share keeps
//! the operator's blocks and lists as fields of one record with a version token, which every
//! instance polls and reloads when it changes. A store that shares nothing keeps none (the
//! trait's defaults): its controls live in the process. Stores also keep one-time records (a
//! reservation kept for any instance to settle), each taken at most once.

use std::future::Future;
use std::time::Duration;

use crate::error::StoreError;

/// One field of the controls record and its value.
pub type ControlField = (Vec<u8>, Vec<u8>);

/// The field that holds the record's version token, changed with every write.
pub const VERSION_FIELD: &[u8] = b"v";

/// Where the operator's controls are kept for every instance sharing the store to read. The
/// defaults are those of a store that shares nothing: no record, so the controls live in the
/// process.
pub trait ControlStore: Send + Sync {
    /// The version token of the stored controls; `None` when the store shares none.
    ///
    /// # Errors
    ///
    /// When the store could not be reached.
    fn controls_version(&self) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send {
        async { Ok(None) }
    }

    /// Every stored `(field, value)` of the controls, the version's ([`VERSION_FIELD`])
    /// included.
    ///
    /// # Errors
    ///
    /// When the store could not be reached.
    fn read_controls(&self) -> impl Future<Output = Result<Vec<ControlField>, StoreError>> + Send {
        async { Ok(Vec::new()) }
    }

    /// Sets one field, or removes one, and changes the version token, as one change: a caller
    /// that leaves mid-write cannot leave the change without its new token.
    ///
    /// # Errors
    ///
    /// When the store could not be reached; the change may or may not have been made.
    fn write_controls(
        &self,
        set: Option<ControlField>,
        remove: Option<Vec<u8>>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let _ = (set, remove);
        async { Ok(()) }
    }

    /// Keeps `value` under `name` for `ttl`, for one caller of [`take_record`] on any instance
    /// sharing the store to take. A record of the same name is replaced. The default refuses:
    /// a store of one's own keeps records only once it implements this.
    ///
    /// [`take_record`]: ControlStore::take_record
    ///
    /// # Errors
    ///
    /// When the store could not be reached or cannot keep another record.
    fn put_record(
        &self,
        name: &str,
        value: &[u8],
        ttl: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let _ = (name, value, ttl);
        async {
            Err(StoreError::Config {
                detail: "this store keeps no records: implement ControlStore::put_record and take_record"
                    .to_owned(),
            })
        }
    }

    /// Takes the record under `name` and forgets it, atomically: of any number of takers on any
    /// instance, one gets it. `None` when there is none (never kept, taken, or expired).
    ///
    /// # Errors
    ///
    /// When the store could not be reached; the record may or may not have been taken.
    fn take_record(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send {
        let _ = name;
        async { Ok(None) }
    }
}
