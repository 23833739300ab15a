//! The shared-controls part of the store protocol: a store that several instances share keeps
//! the operator's blocks and lists as fields of one record with a version token, which every
//! instance polls and reloads when it changes. A store that shares nothing keeps none (the
//! trait's defaults): its controls live in the process.

use std::future::Future;

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
}
